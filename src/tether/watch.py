"""inotify watcher and the coalescing window for the continuous mirror.

Linux only, stdlib only: inotify through ctypes, events parsed with struct. The watcher keeps
per-directory state (watch descriptor <-> relative path) and never per-file state, so a tree of
100,000 files costs a few MB, and it blocks in poll() when idle. What inotify cannot give
exactly (a lost queue, the root itself moving) becomes Change("rescan", "").
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import math
import os
import select
import stat
import struct
import time
from dataclasses import dataclass
from typing import Self

from tether.coalesce import DELETE, MOVE, RESCAN, WRITE, Change, coalesce
from tether.errors import UsageError
from tether.filters import Filter
from tether.leafdirs import dirs_below, subdirs
from tether.watchlimit import binding_sysctl, max_user_watches

__all__ = ["MAX_DELAY", "BaseWatcher", "Change", "Coalescer", "Watcher", "coalesce"]

IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = (
    IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
) | (IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

# On the folder holding the root: its name taken, freed or given to another entry. MASK_ADD: it
# never narrows a watch the tree itself holds on that folder (a root symlink pointing up).
PARENT_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR | IN_MASK_ADD

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_BUFSIZE = 256 * 1024
_MAX_READS = 64  # per drain: hand control back during an endless burst
MAX_DELAY = 1.0  # the longest a window gathers after its first change, however busy the tree
POLL_MAX_MS = 3_600_000  # the longest one poll() waits (a job whose interval is days would overflow it)
MOVE_GRACE = 0.02  # how long a MOVED_FROM waits for its MOVED_TO before it counts as a delete
# A window this short only pairs a save's events; the first change after a quiet moment then goes
# at once when nothing in it is half done (see goes_at_once). A longer one is a user's wish to batch.
QUICK_MAX_DELAY = 0.05


@dataclass(frozen=True)
class _Event:
    wd: int
    mask: int
    cookie: int
    name: bytes


class _Inotify:
    """The three libc calls, with errno turned into OSError."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._init1 = libc.inotify_init1
        self._init1.argtypes = [ctypes.c_int]
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]

    @staticmethod
    def _check(ret: int, what: str) -> int:
        if ret < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")
        return ret

    def init(self) -> int:
        return self._check(self._init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, fd: int, path: bytes, mask: int) -> int:
        return self._check(self._add(fd, path, mask), "inotify_add_watch")

    def rm_watch(self, fd: int, wd: int) -> None:
        self._rm(fd, wd)  # EINVAL when the kernel already dropped it: nothing to do


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False  # gone already: its delete follows


def root_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the directory a path names now (symlinks followed, as rsync does), or
    None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class TooManyWatches(UsageError):
    """The tree needs more inotify watches than the kernel gives: another backend may do."""


def too_many_watches(root: str, needed: int, limit: int | None) -> TooManyWatches:
    want = max(65536, math.ceil(2 * needed / 65536) * 65536)
    sysctl = binding_sysctl(limit)
    have = f"{sysctl} is {limit}" if limit is not None else "the kernel refused more"
    if sysctl == "user.max_inotify_watches":  # a container's own: only its host can raise it
        fix = f"raise it from the user namespace's owner (the container's host): sysctl -w {sysctl}={want}"
    else:
        fix = (f"raise it: sysctl {sysctl}={want}; to keep it after a reboot, put the line {sysctl}={want} in "
               "/etc/sysctl.d/90-tether.conf")  # fmt: skip
    return TooManyWatches(f"watching {root} needs {needed} inotify watches (one per directory) but {have}", fix)


class SourceMissing(UsageError):
    """The source path names no directory: at start an error; while running, a tree swapped
    out and not yet back (`mv src src.old && mv src.new src`), to be waited for."""


class BaseWatcher:
    """What every watcher backend shares, so the Coalescer and the live loop take any of them:
    the wake pipe in the poll set, signal wake-ups, the root's identity, the files still being
    written, the context manager. A backend opens `_fd`, registers it in `_poll`, and reads."""

    kind = ""  # what `tether status` names it by

    def __init__(self, root: str, flt: Filter) -> None:
        self.path = os.path.abspath(root)  # as configured; may be a symlink (current -> releases/7)
        self.root = self.path  # what is watched: where the path leads, from start() on
        self.flt = flt
        self._fd = -1
        self._poll = select.poll()
        self._unclosed: set[str] = set()  # files created and not yet closed after writing
        # wake(): a pipe in the same poll set, so a stop request ends a wait with no timer
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._wake_r, select.POLLIN)
        self._woken = False
        self._signals = False  # the process's signal wakeup fd is this pipe (see wake_on_signals)
        self._root_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the root when watched
        self._root_lost = False  # the watched root itself moved, was deleted or unmounted
        # (monotonic) when the tree last showed activity: a new directory walked to watch it (no
        # event is read meanwhile, and a tar extracting into the tree keeps the walk going for
        # as long as it makes folders), or a batch of changes handed on. A worker holding a bulk
        # transfer until the burst is over reads it (activity()), so that one rsync run carries
        # the burst, not its first part (and a second run the rest)
        self.last_seen = 0.0
        self._decoding = False  # events read from the kernel are being turned into changes
        self.gathering = False  # a Coalescer holds changes it has read and not yet handed on

    def activity(self) -> float:
        """last_seen, or now while changes are on their way: a read's events being decoded, or a
        window gathering (it hands its changes on up to MAX_DELAY after the first, and merging
        a burst's takes longer than a worker's quiet). An excluded path decodes to no change, so
        a log written all day is no activity."""
        return time.monotonic() if self._decoding or self.gathering else self.last_seen

    def start(self) -> None:
        raise NotImplementedError

    def read(self, timeout: float | None) -> list[Change]:
        raise NotImplementedError

    def needed_watches(self) -> int:
        raise NotImplementedError

    @property
    def watch_count(self) -> int:
        raise NotImplementedError

    @property
    def inotify_watches(self) -> int:
        """The inotify watches held: what counts against the kernel's limit (`tether status`)."""
        return 0

    def fileno(self) -> int:
        return self._fd

    def wake(self) -> None:
        """End a read() that is waiting, from another thread or a signal handler."""
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake is pending already
            os.write(self._wake_w, b"!")

    def root_changed(self) -> bool:
        """Whether the root path no longer names the directory being watched: moved away, deleted,
        unmounted, or another one swapped in (`mv site.new site`). The watches follow inodes, so
        they would go on reporting the old tree under the new tree's name."""
        return self._root_lost or (self._root_id is not None and root_identity(self.path) != self._root_id)

    def take_woken(self) -> bool:
        """Whether the last read() ended because of wake(); clears the flag."""
        woken, self._woken = self._woken, False
        return woken

    def wake_on_signals(self) -> None:
        """Let any signal end a read() in progress, from the main thread (the only one allowed).

        A signal sent to the process may be taken by another of its threads; then the main
        thread's poll() goes on sleeping and the Python handler (a stop, `tether wait`) waits
        for the next event, an hour at worst. The interpreter also writes each signal's number
        to its wakeup fd, whichever thread took it: made this pipe, that ends the poll."""
        import signal
        import threading

        if threading.current_thread() is threading.main_thread() and self._wake_w >= 0:
            signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            self._signals = True

    def _take_wake(self) -> bool:
        try:
            return bool(os.read(self._wake_r, 64))
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._signals:  # never leave the interpreter writing into a closed (and reused) fd
            import signal

            try:
                signal.set_wakeup_fd(-1)
            except ValueError:  # not the main thread: the pipe stays open rather than be reused
                return
            self._signals = False
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1  # wake() never sees a closed fd
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def holding(self) -> bool:
        """Whether part of a change is still awaited (read() settles it within MOVE_GRACE)."""
        return False

    @property
    def settled(self) -> bool:
        """Whether what was read is whole: no move half seen, no file created and still being
        written (its CLOSE_WRITE not seen: a hard link never sends one, see forget_unclosed)."""
        return not self.holding and not self._unclosed

    def forget_unclosed(self) -> None:
        """After a window: a file still open is sent as it is now, and its close says it again."""
        self._unclosed.clear()

    def _stop_waiting(self, end: float | None) -> bool:
        """Whether read() ends empty now: woken (take_woken() then says so), or past `end`."""
        if self._take_wake():
            self._woken = True
            return True
        return end is not None and time.monotonic() >= end

    def _sleep_until(self, end: float | None) -> None:
        """One wait in poll() for an event or a wake, up to `end`; at most an hour (the caller
        looks again): poll() takes no more than 2^31 ms."""
        now = time.monotonic()
        self._poll.poll(POLL_MAX_MS if end is None else min(POLL_MAX_MS, max(0, math.ceil((end - now) * 1000))))

    # -- moves, as every backend reports them (the hooks keep a backend's own bookkeeping) --
    def _moved_in(self, rel: str, is_dir: bool, out: list[Change]) -> None:
        if self.flt.path_excluded(rel, is_dir):
            return
        if is_dir:
            self._dir_came(rel)
        out.append(Change(WRITE, rel, is_dir))

    def _moved_out(self, rel: str, is_dir: bool, out: list[Change]) -> None:
        self._unclosed.discard(rel)
        if is_dir:
            self._dir_went(rel)
        if not self.flt.path_excluded(rel, is_dir):
            out.append(Change(DELETE, rel, is_dir))

    def _moved(self, old: str, new: str, is_dir: bool, out: list[Change]) -> None:
        if self.flt.path_excluded(old, is_dir):
            self._moved_in(new, is_dir, out)
        elif self.flt.path_excluded(new, is_dir):
            self._moved_out(old, is_dir, out)
        else:
            if old in self._unclosed:  # moved while still being written: its close names new
                self._unclosed.discard(old)
                self._unclosed.add(new)
            out.append(Change(MOVE, new, is_dir, old=old))
            if is_dir:
                self._dir_renamed(old, new, out)

    def _dir_came(self, rel: str) -> None:
        """A directory appeared in the tree (made or moved in)."""

    def _dir_went(self, rel: str) -> None:
        """A directory left the tree (moved out)."""

    def _dir_renamed(self, old: str, new: str, out: list[Change]) -> None:
        """A directory was renamed inside the tree (its MOVE is in `out` already)."""


class Watcher(BaseWatcher):
    """Reports changes below `root` as Change records, excluded paths left out."""

    kind = "inotify"

    @property
    def inotify_watches(self) -> int:
        return self.watch_count

    def __init__(self, root: str, flt: Filter, max_watches: int | None = None) -> None:
        super().__init__(root, flt)
        self._max_watches = max_watches
        self._ino = _Inotify()
        self._paths: dict[int, str] = {}  # wd -> relative dir path
        self._wds: dict[str, int] = {}  # relative dir path -> wd
        self._held: list[_Event] = []  # from an unpaired MOVED_FROM on, waiting for its MOVED_TO
        self._held_since = 0.0
        self._rescan_on_dir_move = any(r.anchored and not r.pattern.startswith("**/") for r in flt.rules)
        self._parent_wd = -1  # the folder holding the root path, for events naming the root
        self._root_name = os.fsencode(os.path.basename(self.path))

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Watch every included directory; refuse before the first watch if the limit is short."""
        if self._fd >= 0:
            return
        self._root_id = root_identity(self.path)
        if self._root_id is None or not os.path.isdir(self.path):
            raise SourceMissing(f"cannot watch {self.path}: not a directory")
        self.root = os.path.realpath(self.path)  # inotify never follows a symlink: watch where it leads
        needed = self.needed_watches()
        limit = self._max_watches if self._max_watches is not None else max_user_watches()
        if limit is not None and needed > limit:
            raise too_many_watches(self.root, needed, limit)
        try:
            self._fd = self._ino.init()
        except OSError as e:
            raise UsageError(
                f"cannot start inotify: {e.strerror}",
                "too many inotify instances? sysctl fs.inotify.max_user_instances=1024",
            ) from None
        self._poll.register(self._fd, select.POLLIN)
        # an unreadable parent: no such watch, the identity check at every batch still sees a swap
        with contextlib.suppress(OSError):
            if self._root_name:
                self._parent_wd = self._ino.add_watch(self._fd, os.fsencode(os.path.dirname(self.path)), PARENT_MASK)
        self._watch_tree("")

    def close(self) -> None:
        super().close()
        self._paths.clear()
        self._wds.clear()
        self._held.clear()

    def needed_watches(self) -> int:
        """One watch per included directory below the root: what start() asks the kernel for,
        and what `tether doctor` holds against the limit."""
        return sum(1 for _ in self._dirs(""))

    @property
    def watch_count(self) -> int:
        return len(self._paths)

    @property
    def holding(self) -> bool:
        """Whether a MOVED_FROM still waits for its pair (read() settles it within MOVE_GRACE)."""
        return bool(self._held)

    # -- watches -------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return _join(self.root, rel) if rel else self.root

    def _dirs(self, top: str) -> list[str]:
        """Included directories at and below `top` (symlinks not followed)."""
        return dirs_below(self.root, top, self._dir_excluded)

    def _subdirs(self, d: str) -> list[str]:
        """The included directories right below `d` (none below a leaf, or an unreadable or
        vanished `d`)."""
        return subdirs(self.root, d, self._dir_excluded)

    def _dir_excluded(self, rel: str) -> bool:
        return self.flt.path_excluded(rel, True)

    def _watch_tree(self, top: str) -> None:
        """Watch `top` and every included directory below it: watch first, then list, so a
        directory made meanwhile is either listed or reported."""
        stack = [top]
        while stack:
            d = stack.pop()
            self.last_seen = time.monotonic()
            if self._add_watch(d):
                stack += self._subdirs(d)

    def _add_watch(self, rel: str) -> bool:
        try:
            wd = self._ino.add_watch(self._fd, os.fsencode(self._abs(rel)), MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise too_many_watches(self.root, len(self._paths) + 1, max_user_watches()) from None
            return False  # gone, not a directory any more, or unreadable
        old = self._paths.get(wd)
        if old is not None and old != rel and self._wds.get(old) == wd:
            del self._wds[old]
        self._paths[wd] = rel
        self._wds[rel] = wd
        return True

    def _unwatch_tree(self, top: str) -> None:
        for rel in [p for p in self._wds if _under(p, top)]:
            wd = self._wds.pop(rel)
            self._paths.pop(wd, None)
            self._ino.rm_watch(self._fd, wd)

    def _rename_tree(self, old: str, new: str) -> None:
        """A moved directory keeps its watches (they follow the inode): rename their paths."""
        for rel in [p for p in self._wds if _under(p, old)]:
            wd = self._wds.pop(rel)
            moved = new + rel[len(old) :]
            self._paths[wd] = moved
            self._wds[moved] = wd

    def _rebuild(self) -> None:
        """After a lost queue: re-walk, re-add (same inode, same wd) and drop stale watches."""
        before = set(self._paths)
        self._paths.clear()
        self._wds.clear()
        self._watch_tree("")
        for wd in before - set(self._paths):
            self._ino.rm_watch(self._fd, wd)

    # -- events --------------------------------------------------------------------------
    def _drain(self) -> list[_Event]:
        out: list[_Event] = []
        for _ in range(_MAX_READS):
            try:
                buf = os.read(self._fd, _BUFSIZE)
            except BlockingIOError:
                break
            i, n = 0, len(buf)
            while i + _HEADER.size <= n:
                wd, mask, cookie, length = _HEADER.unpack_from(buf, i)
                start = i + _HEADER.size
                out.append(_Event(wd, mask, cookie, buf[start : start + length].rstrip(b"\0")))
                i = start + length
        return out

    def read(self, timeout: float | None) -> list[Change]:
        """Changes from everything readable now; waits up to `timeout` for the first event."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            events = self._drain()
            now = time.monotonic()
            expired = bool(self._held) and now >= self._held_since + MOVE_GRACE
            if events or expired:
                first = self._held[0] if self._held else None
                settle = len(self._held) if expired else 0
                self._decoding = True
                try:
                    changes, rest = self._decode(self._held + events, settle)
                finally:
                    self._decoding = False
                self._held = rest
                if rest and rest[0] is not first:
                    self._held_since = now
                if changes:
                    return changes
            if self._stop_waiting(end):
                return []
            now = time.monotonic()
            wake = end
            if self._held:
                due = self._held_since + MOVE_GRACE
                wake = due if wake is None else min(wake, due)
            self._sleep_until(wake)

    def _decode(self, events: list[_Event], settle: int) -> tuple[list[Change], list[_Event]]:
        """Events to changes, in order. A MOVED_FROM pairs with the MOVED_TO of the same cookie;
        an unpaired one holds back the rest, unless it is among the first `settle` events,
        whose grace is over: then it was a move out of the tree."""
        out: list[Change] = []
        to_at = {ev.cookie: i for i, ev in enumerate(events) if ev.mask & IN_MOVED_TO}
        paired: set[int] = set()
        for i, ev in enumerate(events):
            if i in paired:
                continue
            if ev.mask & IN_Q_OVERFLOW:
                self._rebuild()
                return [Change(RESCAN, "")], []
            if ev.mask & IN_IGNORED:
                rel = self._paths.pop(ev.wd, None)
                if rel is not None and self._wds.get(rel) == ev.wd:
                    del self._wds[rel]
                if rel == "":  # the kernel dropped the root's watch: nothing below it reports any more
                    self._root_lost = True
                    out.append(Change(RESCAN, ""))
                continue
            if ev.wd == self._parent_wd and ev.name == self._root_name:
                self._root_lost = True  # the root's name went away or names another entry now
                out.append(Change(RESCAN, ""))
            parent = self._paths.get(ev.wd)
            if parent is None:
                continue  # a watch we dropped (its last events are stale), or the root's parent
            if not ev.name:
                if parent == "":  # events on the root itself; other dirs report via their parent
                    if ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
                        self._root_lost = True
                        out.append(Change(RESCAN, ""))
                    elif ev.mask & IN_ATTRIB:
                        out.append(Change(WRITE, ""))
                continue
            rel = _join(parent, os.fsdecode(ev.name))
            is_dir = bool(ev.mask & IN_ISDIR)
            if ev.mask & IN_MOVED_FROM:
                j = to_at.get(ev.cookie, -1)
                if j > i:
                    paired.add(j)
                    to = events[j]
                    to_parent = self._paths.get(to.wd)
                    if to_parent is None:
                        self._moved_out(rel, is_dir, out)
                    else:
                        self._moved(rel, _join(to_parent, os.fsdecode(to.name)), is_dir, out)
                elif i < settle:
                    self._moved_out(rel, is_dir, out)
                else:
                    return out, [e for k, e in enumerate(events[i:], i) if k not in paired]
            elif ev.mask & IN_MOVED_TO:
                self._moved_in(rel, is_dir, out)
            elif self.flt.path_excluded(rel, is_dir):
                continue
            elif ev.mask & IN_CREATE:
                if is_dir:
                    self._watch_tree(rel)
                elif _regular(self._abs(rel)):  # a symlink or a device node is whole when made
                    self._unclosed.add(rel)
                out.append(Change(WRITE, rel, is_dir, created=True))
            elif ev.mask & (IN_CLOSE_WRITE | IN_ATTRIB):
                if ev.mask & IN_CLOSE_WRITE:
                    self._unclosed.discard(rel)
                out.append(Change(WRITE, rel))
            elif ev.mask & IN_DELETE:
                self._unclosed.discard(rel)
                out.append(Change(DELETE, rel, is_dir))
        return out, []

    def _dir_came(self, rel: str) -> None:
        self._watch_tree(rel)

    def _dir_went(self, rel: str) -> None:
        self._unwatch_tree(rel)  # its watches would follow it out of the tree

    def _dir_renamed(self, old: str, new: str, out: list[Change]) -> None:
        self._rename_tree(old, new)
        if self._rescan_on_dir_move:
            # Anchored rules may judge the subtree differently under its new name.
            self._unwatch_tree(new)
            self._watch_tree(new)
            out.append(Change(RESCAN, ""))


def goes_at_once(delay: float, quiet_for: float, settled: bool) -> bool:
    """Whether a first change is handed on without a window: the window only pairs events, so
    it costs nothing when nothing is pending. It goes at once after a quiet moment (no change
    for `delay`: changes still streaming in are gathered) when nothing read is half done (a move
    seen from one side, a new file still being written); never when the user set a longer
    window to batch changes."""
    return delay <= QUICK_MAX_DELAY and quiet_for >= delay and settled


class Coalescer:
    """Gathers changes for `delay` seconds after the first one (window), then hands a merged
    batch; the first change after a quiet moment goes at once (goes_at_once)."""

    def __init__(self, watcher: BaseWatcher, delay: float = 0.05, max_delay: float = MAX_DELAY) -> None:
        self.watcher = watcher
        self.delay = delay
        self.max_delay = max_delay
        self.last_change = -math.inf  # when the last batch's last change was read
        self.at_once = 0  # batches handed without a window (for tests and the log)

    def next_batch(self, timeout: float | None) -> list[Change]:
        """Wait up to `timeout` for a first change, then (unless it goes at once) read until
        `delay` passes quietly or `max_delay` since the first; [] on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        changes: list[Change] = []
        woken = False
        while not changes:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return []
            changes = self.watcher.read(left)
            if self.watcher.take_woken():  # a stop or a `tether wait`: what was read goes now
                if not changes:
                    return []
                woken = True
        # changes read and not yet handed on: the tree is busy for a worker holding a bulk
        # transfer (BaseWatcher.activity), until the batch is merged and handed on
        self.watcher.gathering = True
        try:
            return coalesce(changes, transient=True) if woken else self._gather(changes)
        finally:
            self.watcher.gathering = False
            self.watcher.last_seen = time.monotonic()

    def _gather(self, changes: list[Change]) -> list[Change]:
        first = last = time.monotonic()
        quiet_for, self.last_change = first - self.last_change, first
        if goes_at_once(self.delay, quiet_for, self.watcher.settled):
            self.at_once += 1
            return coalesce(changes, transient=True)
        while True:
            now = time.monotonic()
            stop = min(last + self.delay, first + self.max_delay)
            if now >= stop:
                break
            got = self.watcher.read(stop - now)
            if got:
                changes += got
                last = time.monotonic()
        while self.watcher.holding:  # settle a half-seen move rather than split it across batches
            changes += self.watcher.read(MOVE_GRACE)
        self.last_change = last
        self.watcher.forget_unclosed()
        return coalesce(changes, transient=True)
