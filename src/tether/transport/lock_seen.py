"""When a lock file held from another host counts as abandoned, judged by this host's clock only.

A lock on an rclone remote names its holder; a holder on another host rewrites it every couple of
minutes while it lives.  Comparing the file's time with this host's clock would trust two clocks
to agree: a holder whose clock runs 10 minutes behind would look abandoned the moment it wrote,
and its live lock would be taken.  So the file's time is only ever compared with itself: this host
notes the lock as it first saw it (its time, size and text) against its own boot clock, which no
one sets and which runs on across processes, and counts it abandoned once it has seen the very same
file for `stale_s`.  Any rewrite starts the count again.  The notes live in one small JSON file
(a cron job's runs are separate processes); a note lost to a race only makes the wait longer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

Clock = Callable[[], int]  # ns on this host's boot clock


def boot_clock() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # no boot id: the clock is trusted across boots, as no kernel here lacks one


class LocksSeen:
    def __init__(self, path: Path, stale_s: float, clock: Clock = boot_clock, boot: str | None = None) -> None:
        self.path, self.stale_ns, self.clock = path, int(stale_s * 1e9), clock
        self.boot = boot_id() if boot is None else boot

    def unchanged_for(self, key: str, version: list[object]) -> float:
        """Seconds this host has seen the lock at `key` exactly as `version` (its time, size, text),
        noting it now if it is new, changed, or was noted before the last boot."""
        notes = self._read()
        now = self.clock()
        seen = notes.get(key)
        if not (isinstance(seen, dict) and seen.get("version") == version and seen.get("boot") == self.boot):
            notes[key] = {"version": version, "boot": self.boot, "since": now}
            self._write(notes)
            return 0.0
        return max(0, now - int(seen["since"])) / 1e9

    def abandoned(self, key: str, version: list[object]) -> bool:
        return self.unchanged_for(key, version) * 1e9 >= self.stale_ns

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # none yet, or torn: every lock is looked at afresh (the safe side)
        return data if isinstance(data, dict) else {}

    def _write(self, notes: dict[str, object]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(notes))
            os.replace(tmp, self.path)
        except OSError:
            pass  # unwritable: each run starts the count again, so a foreign lock is never taken (safe)
