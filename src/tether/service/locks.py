"""A pid lock per job: an flock held for the life of the process that runs the job.

The kernel drops an flock when its holder dies, even by kill -9, so a stale pid file can
never block a new start; the pid written inside is only for messages and signals.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class PidLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock for this process; False when another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def last_pid(self) -> int | None:
        """The pid written by the last holder, alive or not."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def holder(self) -> int | None:
        """The pid of the live process holding the lock, or None when nobody does."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)
