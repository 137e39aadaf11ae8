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

    def has(self, key: str, source: str) -> bool:
        """Whether tether mirrored `source` to this target before. A target it kept for another
        source (a job edited to push another folder there) counts as a stranger's: what is there
        is not known to be tether's to delete or overwrite."""
        known = self.source_of(key)  # a mirror's source is a local folder: however it was written
        return known is not None and os.path.realpath(known) == os.path.realpath(source)

    def source_of(self, key: str) -> str | None:
        """The source tether last mirrored to this target; None when none (or unreadable: then the
        guard looks, which is the safe side)."""
        try:
            doc = json.loads(self._file(key).read_text())
        except (OSError, ValueError):
            return None
        return str(doc["source"]) if isinstance(doc, dict) and isinstance(doc.get("source"), str) else None

    def stranger(self, key: str) -> str:
        """Whose the target is, for a refusal: nobody's known, or another source's."""
        other = self.source_of(key)
        return (
            "tether never wrote this target"
            if other is None
            else f"tether kept this target for another source, {other},"
        )

    def add(self, key: str, source: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = self._file(key)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"target": key, "source": source, "since": time.time()}, ensure_ascii=True))
        os.replace(tmp, f)
