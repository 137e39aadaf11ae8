"""Which watcher a continuous mirror runs. inotify while the tree fits the kernel's watch limit
(one watch per directory, the cheapest); past it, fanotify where the process may use it (one
mark for the whole filesystem, no per-directory cost); where neither can, no watcher at all and
the job's periodic full passes carry every change, said in the log with their interval.
"""

from __future__ import annotations

import os
import time

from tether.errors import UsageError
from tether.fanwatch import FanWatcher, fanotify_available
from tether.filters import Filter
from tether.watch import BaseWatcher, Change, SourceMissing, TooManyWatches, Watcher, root_identity

WATCHERS = ("auto", "inotify", "fanotify")


class PassWatcher(BaseWatcher):
    """Reports nothing: a tree no watcher can follow is kept by the periodic full passes. It
    still wakes on a stop and sees the root swapped, as the others do."""

    kind = "none"

    def start(self) -> None:
        self._root_id = root_identity(self.path)
        if self._root_id is None or not os.path.isdir(self.path):
            raise SourceMissing(f"cannot watch {self.path}: not a directory")
        self.root = os.path.realpath(self.path)

    def read(self, timeout: float | None) -> list[Change]:
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while not self._stop_waiting(end):
            self._sleep_until(end)
        return []

    def needed_watches(self) -> int:
        return 0

    @property
    def watch_count(self) -> int:
        return 0


def fallback(over: TooManyWatches, fan_reason: str | None, interval: float) -> str:
    """Past the inotify limit in `auto`: "fanotify", or "passes" (periodic full passes), or a
    refusal naming every way out when the job has no period either."""
    if fan_reason is None:
        return "fanotify"
    if interval > 0:
        return "passes"
    raise UsageError(
        f"{over.message}, and fanotify cannot watch it here ({fan_reason})",
        f"{over.hint}; or run tether as root (fanotify needs no watch per directory); or set "
        "interval = 300 in the job to keep the tree by a full pass every 5 minutes, without a watcher",
    )


def open_watcher(root: str, flt: Filter, choice: str, interval: float) -> tuple[BaseWatcher, str]:
    """A started watcher for the job's `watcher` choice, and a line saying which, for the log."""
    if choice == "fanotify":
        fan = FanWatcher(root, flt)
        _start(fan)
        return fan, "fanotify (one mark for the filesystem)"
    ino = Watcher(root, flt)
    try:
        _start(ino)
        return ino, f"inotify ({ino.watch_count} directories)"
    except TooManyWatches as e:
        if choice == "inotify":
            raise
        over = e
    why_not = fanotify_available(root)
    how = fallback(over, why_not, interval)
    if how == "fanotify":
        fan = FanWatcher(root, flt)
        _start(fan)
        return fan, f"fanotify, one mark for the filesystem: {over.message}"
    still = PassWatcher(root, flt)
    still.start()
    return still, (
        f"no watcher, a full pass every {interval:g} s: {over.message}, and fanotify cannot watch it here "
        f"({why_not}); {over.hint}"
    )


def _start(w: BaseWatcher) -> None:
    """Started, or closed (what it opened given back, its watches first) before the error goes on."""
    try:
        w.start()
    except BaseException:
        w.close()
        raise
