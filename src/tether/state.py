"""What tether remembers between runs. For now: which targets it has written before.

A target tether has never written and that already holds files is a target it must not
wipe silently; remembering earlier successful runs lets later runs skip that check
(and its extra round trip) without writing any marker into the target itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path


class KnownTargets:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "targets"

    def _file(self, key: str) -> Path:
        return self.dir / hashlib.sha256(os.fsencode(key)).hexdigest()[:32]

    def has(self, key: str) -> bool:
        return self._file(key).exists()

    def add(self, key: str, source: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = self._file(key)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"target": key, "source": source, "since": time.time()}, ensure_ascii=True))
        os.replace(tmp, f)
