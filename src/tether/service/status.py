"""The status a running job publishes: one small JSON file, replaced atomically.

A file rather than a socket: `tether status` works even while the job is busy, needs no
protocol, and a crashed job leaves its last words for the user to read.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IDLE, SYNCING, RETRYING, DOWN = "idle", "syncing", "retrying", "down"
WAITING = "waiting"  # the job's source is gone or being watched anew: nothing to send for now


@dataclass
class TargetStatus:
    target: str
    state: str = IDLE
    last_success: float | None = None
    pending: int = 0
    bytes_sent: int = 0
    files_sent: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    full_passes: int = 0
    passes: int = 0  # every pass, narrow ones (continuous bisync, started by events) included
    paths_looked: int = 0  # paths the narrow passes looked at (what the watches reported)
    behind_since: float | None = None  # since when the target has had work pending (set by the board): its lag
    caught_up: int | None = None  # the time (ns) of the last `tether wait` this target has answered


@dataclass
class JobStatus:
    job: str
    pid: int
    source: str
    started: float
    state: str = "starting"  # starting, running, waiting (for the source), stopping, stopped, failed
    watches: int = 0  # inotify watches held
    watcher: str = "inotify"  # or "fanotify" (one filesystem mark), "none" (the periodic passes only)
    targets: list[TargetStatus] = field(default_factory=list)
    message: str | None = None


class StatusBoard:
    """Shared by the job's threads. Writes are coalesced: at most one every `min_gap` seconds,
    and a background flusher makes sure the last change is always written (never stale)."""

    def __init__(self, path: Path, status: JobStatus, min_gap: float = 0.2) -> None:
        self.path = path
        self.status = status
        self.min_gap = min_gap
        self.lock = threading.RLock()
        self._dirty = threading.Condition(self.lock)
        self._is_dirty = False
        self._soon = False  # a change that should be on disk at once, not after min_gap
        threading.Thread(target=self._flusher, name="status", daemon=True).start()

    def update(
        self, target: TargetStatus | None = None, force: bool = False, soon: bool = False, **changes: Any
    ) -> None:
        """`force`: written before this returns (a state someone is waiting on). `soon`: written at
        once by the flusher, not min_gap later, together with every other change made meanwhile: 32
        targets finishing one change each make a write or two, not 32 (each of the whole status)."""
        with self.lock:
            obj: Any = target if target is not None else self.status
            for k, v in changes.items():
                setattr(obj, k, v)
            if isinstance(obj, TargetStatus):  # kept here, so every job kind's targets have it
                behind = obj.pending > 0 or obj.state in (SYNCING, RETRYING, DOWN)
                if not behind:
                    obj.behind_since = None
                elif obj.behind_since is None:
                    obj.behind_since = time.time()
            self._is_dirty = True
            if force:
                self.flush()
            else:
                self._soon = self._soon or soon
                self._dirty.notify()

    def _flusher(self) -> None:
        while True:
            with self.lock:
                self._dirty.wait_for(lambda: self._is_dirty)
                # gather the changes of this moment into one write; one made `soon` ends the wait
                self._dirty.wait_for(lambda: self._soon, timeout=self.min_gap)
                self._soon = False
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self._is_dirty:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(self.status), indent=1))
            os.replace(tmp, self.path)
            self._is_dirty = False


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None
