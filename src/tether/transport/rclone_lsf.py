"""A target's listing by `rclone lsf`, started before anything else is loaded.

Why: a one-shot mirror that finds nothing to do should cost about what `rclone sync` does.
Through rcd the listing waits for rcd's start (60-90 ms) and then parses 20,000 JSON objects
after the walk; `rclone lsf -R --csv` starts as soon as the arguments are read, streams one short
line per entry that a thread here parses while the walk goes on, and needs no rcd at all when
the pass then has nothing to send.  rcd is started only for a pass with work.

`--time-format max` makes rclone print mtimes to the backend's own precision, so the width of
the times says the precision the files are compared at (9 fraction digits: 1 ns; none: 1 s).
A listing whose times are coarser than a second, or that is not in the expected shape, or a
command that fails (an rclone without these flags, a root not made yet, an error while
listing) is no listing: the caller lists through rcd as before, which explains any error.
"""

from __future__ import annotations

import csv
import datetime
import io
import subprocess
import threading
from collections.abc import Iterable

from tether.transport import rcd

Entry = tuple[str, int, int]  # (type "f" or "d", size, mtime_ns), as the mirror's planner takes them
_SECOND = 10**9
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()
# "HH:MM" -> seconds into the day: one lookup instead of two int() calls a row (20,000 rows:
# the parse is what a one-shot no-change pass waits for after rclone has finished printing)
_HM = {f"{h:02d}:{m:02d}": (h * 60 + m) * 60 for h in range(24) for m in range(60)}


class Listing:
    """Every entry under the root but .tether, and the precision its mtimes were printed at."""

    __slots__ = ("entries", "precision_ns")

    def __init__(self, entries: dict[str, Entry], precision_ns: int) -> None:
        self.entries = entries
        self.precision_ns = precision_ns

    def same(self, size: int, mtime_ns: int, item_size: int, item_mtime_ns: int) -> bool:
        """A target file is the source's version: equal size, mtimes within the printed precision
        (the target's time is the source's cut to that precision, never more than one step off)."""
        return size == item_size and abs(mtime_ns - item_mtime_ns) < self.precision_ns


def parse(rows: Iterable[list[str]]) -> Listing | None:
    """The listing from `lsf --csv --format pst --time-format max` rows (printed in UTC), or None
    when they are not in that shape or their times are coarser than a second."""
    entries: dict[str, Entry] = {}
    width = 0  # every time is printed with the same layout: its width is fixed by the first
    pad = ""  # zeros that make the seconds and the fraction together a count of ns
    days: dict[str, int] = {}  # "YYYY-MM-DD" -> its first second: times share their days widely
    try:
        for path, size, when in rows:
            if len(when) != width:
                if width:
                    return None  # not all of one layout
                width = len(when)
                if width != 19 and not 21 <= width <= 29:
                    return None  # coarser than a second
                pad = "0" * (29 - width if width > 19 else 9)
            day = days.get(when[:10])
            if day is None:
                day = days[when[:10]] = (datetime.date.fromisoformat(when[:10]).toordinal() - _EPOCH_DAY) * 86400
            # "SS" and the fraction's digits, padded to 9, are one number of ns
            ns = (day + _HM[when[11:16]]) * _SECOND + int(when[17:19] + when[20:] + pad)
            if path[-1:] == "/":
                if path != ".tether/":
                    entries[path[:-1]] = ("d", 0, 0)
            elif path[:8] != ".tether/":
                entries[path] = ("f", int(size), ns)
    except (ValueError, KeyError):  # a row of another shape, a time that is not one
        return None
    return Listing(entries, 10 ** (29 - width) if width > 19 else _SECOND)


class QuickList:
    """One `rclone lsf -R` of fs, read by a thread as it prints."""

    def __init__(self, rclone: str, fs: str) -> None:
        self.rclone, self.fs = rclone, fs
        self._done = threading.Event()
        self._cancelled = False
        self._result: Listing | None = None
        env = rcd.child_env()
        env["TZ"] = "UTC"  # the layout of "max" has no zone: rclone prints local time
        argv = [rclone, "lsf", "-R", "--csv", "--format", "pst", "--time-format", "max",
                "--exclude", "/.tether/**", "--", fs]  # fmt: skip
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
            )
        except OSError:  # the connect that follows says why rclone cannot run
            self._proc = None
            self._done.set()
            return
        threading.Thread(target=self._read, name=f"rclone-lsf-{fs}", daemon=True).start()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            text = io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="surrogateescape", newline="")
            listing = parse(csv.reader(text))
            text.close()
            self._result = listing if proc.wait() == 0 else None
        except (OSError, csv.Error):
            self._result = None
        finally:
            if self._result is None and not self._cancelled:  # the pass needs rcd: start it now
                rcd.prestart(self.rclone)
            self._done.set()

    def result(self) -> Listing | None:
        self._done.wait()
        return self._result

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        self._done.wait()


_STARTED: dict[str, QuickList] = {}
_LOCK = threading.Lock()


def prelist(rclone: str, fs: str) -> None:
    """Start listing fs now, for the pass to take (see `take`)."""
    with _LOCK:
        if fs not in _STARTED:
            _STARTED[fs] = QuickList(rclone, fs)


def take(rclone: str, fs: str) -> QuickList:
    """The listing of fs started earlier, or one started now."""
    with _LOCK:
        got = _STARTED.pop(fs, None)
    return got if got is not None and got.rclone == rclone else QuickList(rclone, fs)


def drop() -> None:
    """End the listings nobody took."""
    with _LOCK:
        left = list(_STARTED.values())
        _STARTED.clear()
    for quick in left:
        quick.cancel()
