"""fanotify watcher: one mark on the filesystem holding the root, however many directories.

inotify needs a watch per directory, so a tree with more directories than
fs.inotify.max_user_watches cannot be watched. A FAN_MARK_FILESYSTEM mark needs none: the
kernel reports every change on that filesystem as (directory file handle, name), and the
watcher turns the handle into a path and keeps what lies below the root. Needs root
(CAP_SYS_ADMIN), Linux 5.17+ (FAN_RENAME: both names of a move in one event) and a filesystem
that reports file ids (ext4, xfs, btrfs, tmpfs; not most FUSE or network filesystems).

What fanotify gives less exactly than inotify, and how it is made whole:
- a handle is resolved when read, to the directory's path *now*: an event older than a
  directory rename in the same batch is moved back to the old name (as_of_event_time);
- the kernel merges an event into an earlier queued one for the same name and process, so
  the order of the bits of one mask is lost: what a path became is then asked of the tree
  (see FanWatcher._decode);
- a directory gone before its events are read cannot be resolved: those events are dropped,
  its own delete covers them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tether.coalesce import DELETE, RESCAN, WRITE, Change
from tether.errors import UsageError
from tether.filters import Filter
from tether.watch import BaseWatcher, SourceMissing, _regular, _under, root_identity

__all__ = ["FanWatcher", "Named", "RawEvent", "as_of_event_time", "fanotify_available", "parse_events"]

# linux/fanotify.h: event bits (mask of fanotify_mark and of each event)
FAN_ATTRIB = 0x00000004
FAN_CLOSE_WRITE = 0x00000008
FAN_CREATE = 0x00000100
FAN_DELETE = 0x00000200
FAN_DELETE_SELF = 0x00000400
FAN_MOVE_SELF = 0x00000800
FAN_Q_OVERFLOW = 0x00004000
FAN_RENAME = 0x10000000  # 5.17: one event with the old and the new directory and name
FAN_ONDIR = 0x40000000  # events on directories too; set in an event's mask when it is one
# fanotify_init() flags
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_REPORT_DIR_FID = 0x00000400  # report the directory's file handle...
FAN_REPORT_NAME = 0x00000800  # ...and the entry's name
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
# fanotify_mark() flags
FAN_MARK_ADD = 0x00000001
FAN_MARK_FILESYSTEM = 0x00000100
# info record types
FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = 12
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MAX_HANDLE_SZ = 128

INIT_FLAGS = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME
MARK_MASK = (
    FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_CLOSE_WRITE | FAN_ATTRIB | FAN_DELETE_SELF | FAN_MOVE_SELF | FAN_ONDIR
)
_DIRENT = FAN_CREATE | FAN_DELETE

_META = struct.Struct("=IBBHQii")  # fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO = struct.Struct("=BBH")  # fanotify_event_info_header: info_type, pad, len
_FSID = struct.Struct("=ii")  # __kernel_fsid_t
_FH = struct.Struct("=Ii")  # struct file_handle: handle_bytes, handle_type; then f_handle[handle_bytes]
_BUFSIZE = 256 * 1024
_MAX_READS = 64  # per drain: hand control back during an endless burst
CACHE_SIZE = 100_000  # directory handles remembered; past it the cache starts again


@dataclass(frozen=True)
class RawEvent:
    """One event as the kernel wrote it. A handle is the raw `struct file_handle` (header and
    bytes): the key of the path cache, and what open_by_handle_at() takes back."""

    mask: int
    dir_fh: bytes | None = None  # the directory (DFID_NAME, or OLD_DFID_NAME of a rename)
    name: bytes | None = None  # "." for an event on the directory itself
    new_dir_fh: bytes | None = None  # NEW_DFID_NAME of a rename
    new_name: bytes | None = None
    fd: int = -1  # FAN_NOFD in every fid mode; closed by the reader if ever set


def parse_events(buf: bytes) -> list[RawEvent]:
    """The events in one read() of a fanotify fd. Unknown info records are skipped; a wrong
    metadata version or a torn event is a ValueError (the kernel writes whole events)."""
    out: list[RawEvent] = []
    i, n = 0, len(buf)
    while i < n:
        if i + _META.size > n:
            raise ValueError(f"fanotify: torn event header at {i}")
        event_len, vers, _, meta_len, mask, fd, _pid = _META.unpack_from(buf, i)
        if vers != FANOTIFY_METADATA_VERSION:
            raise ValueError(f"fanotify: metadata version {vers}, expected {FANOTIFY_METADATA_VERSION}")
        if event_len < meta_len or meta_len < _META.size or i + event_len > n:
            raise ValueError(f"fanotify: bad event length {event_len} at {i}")
        found: dict[int, tuple[bytes, bytes | None]] = {}
        j, end = i + meta_len, i + event_len
        while j + _INFO.size <= end:
            info_type, _, length = _INFO.unpack_from(buf, j)
            if length < _INFO.size or j + length > end:
                raise ValueError(f"fanotify: bad info record length {length} at {j}")
            if info_type in (
                FAN_EVENT_INFO_TYPE_DFID_NAME,
                FAN_EVENT_INFO_TYPE_DFID,
                FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
                FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
            ):
                h = j + _INFO.size + _FSID.size
                size, _ = _FH.unpack_from(buf, h)
                fh_end = h + _FH.size + size
                if fh_end > j + length:
                    raise ValueError(f"fanotify: file handle overruns its record at {j}")
                name = None
                if info_type != FAN_EVENT_INFO_TYPE_DFID:
                    nul = buf.find(b"\0", fh_end, j + length)
                    name = bytes(buf[fh_end : nul if nul >= 0 else j + length])
                found[info_type] = (bytes(buf[h:fh_end]), name)
            j += length
        old = found.get(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME) or found.get(
            FAN_EVENT_INFO_TYPE_DFID_NAME, found.get(FAN_EVENT_INFO_TYPE_DFID)
        )
        new = found.get(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)
        out.append(
            RawEvent(
                mask,
                old[0] if old else None,
                old[1] if old else None,
                new[0] if new else None,
                new[1] if new else None,
                fd,
            )
        )
        i += event_len
    return out


@dataclass(frozen=True)
class Named:
    """An event with its directories as absolute paths (None: not resolvable, gone)."""

    mask: int
    dir: str | None
    name: str
    new_dir: str | None = None
    new_name: str = ""

    @property
    def path(self) -> str | None:
        return _entry(self.dir, self.name)

    @property
    def new_path(self) -> str | None:
        return _entry(self.new_dir, self.new_name)


def _entry(d: str | None, name: str) -> str | None:
    if d is None:
        return None
    if name in (".", ""):
        return d
    return f"{d}/{name}" if d != "/" else f"/{name}"


def _undo(path: str | None, later: list[tuple[str, str]]) -> str | None:
    if path is None:
        return None
    for old, new in later:  # the latest rename first: each maps a state back to the one before it
        if _under(path, new):
            path = old + path[len(new) :]
    return path


def as_of_event_time(events: Sequence[Named]) -> list[Named]:
    """The batch with each directory path as it was when its event happened.

    Handles resolve to where a directory is when the batch is read, so an event older than a
    directory rename later in the batch names the new path. Walking back from the end, each
    directory rename seen (old -> new) maps the paths of the events before it from below `new`
    to below `old`. Only directory parts are mapped: an entry's name is the one it had then."""
    out = list(events)
    later: list[tuple[str, str]] = []  # directory renames after the current event, latest first
    for i in range(len(out) - 1, -1, -1):
        ev = out[i]
        if later:
            ev = out[i] = replace(ev, dir=_undo(ev.dir, later), new_dir=_undo(ev.new_dir, later))
        if ev.mask & FAN_RENAME and ev.mask & FAN_ONDIR:
            old, new = ev.path, ev.new_path
            if old is not None and new is not None:
                later.append((old, new))
    return out


class _Fanotify:
    """The libc calls, with errno turned into OSError."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._init = libc.fanotify_init
        self._init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self._mark = libc.fanotify_mark
        self._mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        self._by_handle = libc.open_by_handle_at
        self._by_handle.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._to_handle = libc.name_to_handle_at
        self._to_handle.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]

    @staticmethod
    def _check(ret: int, what: str) -> int:
        if ret < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")
        return ret

    def init(self, flags: int) -> int:
        return self._check(self._init(flags, os.O_RDONLY | os.O_LARGEFILE), "fanotify_init")

    def mark(self, fd: int, flags: int, mask: int, path: str) -> None:
        self._check(self._mark(fd, flags, mask, AT_FDCWD, os.fsencode(path)), "fanotify_mark")

    def handle(self, fd: int) -> bytes:
        """The file handle of an open directory, as fanotify reports it."""
        buf = ctypes.create_string_buffer(_FH.size + MAX_HANDLE_SZ)
        _FH.pack_into(buf, 0, MAX_HANDLE_SZ, 0)
        mount_id = ctypes.c_int()
        self._check(self._to_handle(fd, b"", buf, ctypes.byref(mount_id), AT_EMPTY_PATH), "name_to_handle_at")
        size, _ = _FH.unpack_from(buf, 0)
        return buf.raw[: _FH.size + size]

    def path_of(self, mount_fd: int, fh: bytes) -> str | None:
        """Where the directory with this handle is now; None when it is gone (ESTALE) or deleted
        but still open somewhere."""
        fd = self._by_handle(mount_fd, fh, os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.endswith(" (deleted)") and os.fstat(fd).st_nlink == 0:
                return None
            return path
        except OSError:
            return None
        finally:
            os.close(fd)


def _refusal(e: OSError, what: str, path: str) -> UsageError:
    e = OSError(e.errno, os.strerror(e.errno)) if e.errno else e  # the message names `what` itself
    if e.errno == errno.EPERM:
        return UsageError(f"cannot watch {path} with fanotify: {what} needs CAP_SYS_ADMIN", "run as root")
    if e.errno in (errno.EINVAL, errno.ENOSYS):
        return UsageError(
            f"cannot watch {path} with fanotify: the kernel refused {what} ({e.strerror})",
            "fanotify with FAN_RENAME needs Linux 5.17 or later; use the inotify watcher",
        )
    if e.errno in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENODEV, errno.ESTALE):
        return UsageError(
            f"cannot watch {path} with fanotify: its filesystem cannot report file ids ({e.strerror})",
            "use the inotify watcher for this tree",
        )
    if e.errno == errno.EMFILE:
        return UsageError(
            f"cannot watch {path} with fanotify: too many fanotify groups ({e.strerror})",
            "raise fs.fanotify.max_user_groups",
        )
    return UsageError(f"cannot watch {path} with fanotify: {what}: {e.strerror}")


def _open(fan: _Fanotify, root: str) -> tuple[int, int, bytes]:
    """fanotify fd marked on the filesystem of `root`, an fd of the root (the mount handles
    are opened against), and the root's handle; UsageError when fanotify cannot."""
    try:
        fd = fan.init(INIT_FLAGS | FAN_UNLIMITED_QUEUE)
    except OSError:
        try:
            fd = fan.init(INIT_FLAGS)
        except OSError as e:
            raise _refusal(e, "fanotify_init", root) from None
    mount_fd = -1
    try:
        try:
            fan.mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, MARK_MASK, root)
        except OSError as e:
            raise _refusal(e, "a filesystem mark", root) from None
        try:
            # not O_PATH: open_by_handle_at() refuses one as the mount fd (EBADF)
            mount_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            root_fh = fan.handle(mount_fd)
        except OSError as e:
            raise _refusal(e, "name_to_handle_at", root) from None
        if fan.path_of(mount_fd, root_fh) is None:
            raise UsageError(
                f"cannot watch {root} with fanotify: its directory handles cannot be opened",
                "open_by_handle_at needs CAP_DAC_READ_SEARCH: run as root, or use the inotify watcher",
            )
        return fd, mount_fd, root_fh
    except BaseException:
        os.close(fd)
        if mount_fd >= 0:
            os.close(mount_fd)
        raise


def fanotify_available(path: str) -> str | None:
    """None when a FanWatcher can watch `path`, else why not (one line)."""
    try:
        fd, mount_fd, _ = _open(_Fanotify(), os.path.realpath(path))
    except UsageError as e:
        return e.message if not e.hint else f"{e.message}; {e.hint}"
    except OSError as e:  # libc without the calls
        return f"fanotify unavailable: {e}"
    os.close(fd)
    os.close(mount_fd)
    return None


class FanWatcher(BaseWatcher):
    """Reports changes below `root` as Change records, like Watcher, from one filesystem mark."""

    kind = "fanotify"

    def __init__(self, root: str, flt: Filter, cache_size: int = CACHE_SIZE) -> None:
        super().__init__(root, flt)
        self._fan = _Fanotify()
        self._mount_fd = -1
        self._root_fh = b""
        self._cache: dict[bytes, str | None] = {}  # directory handle -> its absolute path
        self._cache_size = cache_size
        self._parent = ""  # the folder holding the root path (realpath), for events naming the root
        self._root_name = os.path.basename(self.path)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._fd >= 0:
            return
        self._root_id = root_identity(self.path)
        if self._root_id is None or not os.path.isdir(self.path):
            raise SourceMissing(f"cannot watch {self.path}: not a directory")
        self.root = os.path.realpath(self.path)  # handles resolve to real paths
        self._parent = os.path.realpath(os.path.dirname(self.path))
        self._fd, self._mount_fd, self._root_fh = _open(self._fan, self.root)
        self._poll.register(self._fd)

    def close(self) -> None:
        if self._mount_fd >= 0:
            os.close(self._mount_fd)
            self._mount_fd = -1
        self._cache.clear()
        super().close()

    def needed_watches(self) -> int:
        """One mark, whatever the tree holds."""
        return 1

    @property
    def watch_count(self) -> int:
        return 1 if self._fd >= 0 else 0

    # -- events --------------------------------------------------------------------------
    def _drain(self) -> list[RawEvent]:
        out: list[RawEvent] = []
        for _ in range(_MAX_READS):
            try:
                buf = os.read(self._fd, _BUFSIZE)
            except BlockingIOError:
                break
            if not buf:
                break
            try:
                out += parse_events(buf)
            except ValueError:  # never seen: what the kernel wrote cannot be read, so compare all
                out.append(RawEvent(FAN_Q_OVERFLOW))
        for ev in out:
            if ev.fd >= 0:
                os.close(ev.fd)
        return out

    def read(self, timeout: float | None) -> list[Change]:
        """Changes from everything readable now; waits up to `timeout` for the first event."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            events = self._drain()
            if events:
                changes = self._decode(events)
                if changes:
                    return changes
            if self._stop_waiting(end):
                return []
            self._sleep_until(end)

    def _resolve(self, fh: bytes | None) -> str | None:
        if fh is None:
            return None
        try:
            return self._cache[fh]
        except KeyError:
            pass
        path = self._fan.path_of(self._mount_fd, fh)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[fh] = path  # a gone one too: a handle is never given to another directory
        return path

    def _name(self, events: list[RawEvent], out: list[Change]) -> list[Named]:
        """Handles to paths, in order. A directory renamed or deleted empties the cache after
        its event: what comes after it resolves anew. Root's own events are settled here, as
        its handle may no longer resolve."""
        named: list[Named] = []
        # With no directory renamed in the batch no path is mapped back: an event elsewhere on
        # the filesystem can go as soon as its directory is known (the common, cheap case).
        keep_all = any(ev.mask & FAN_RENAME and ev.mask & FAN_ONDIR for ev in events)
        prefix = self.root if self.root.endswith("/") else self.root + "/"
        for ev in events:
            mask = ev.mask
            if not keep_all and not mask & (FAN_RENAME | FAN_Q_OVERFLOW) and ev.dir_fh != self._root_fh:
                d = self._resolve(ev.dir_fh)
                if d is None or not (d.startswith(prefix) or d == self._parent):
                    continue
            if mask & FAN_Q_OVERFLOW:
                self._cache.clear()
                out.append(Change(RESCAN, ""))
                continue
            if mask & (FAN_DELETE_SELF | FAN_MOVE_SELF):
                if ev.dir_fh == self._root_fh:
                    self._root_lost = True
                    out.append(Change(RESCAN, ""))
                mask &= ~(FAN_DELETE_SELF | FAN_MOVE_SELF)  # other directories: their parent says it
                if not mask & ~FAN_ONDIR:
                    continue
            named.append(
                Named(
                    mask,
                    self._resolve(ev.dir_fh),
                    os.fsdecode(ev.name or b""),
                    self._resolve(ev.new_dir_fh),
                    os.fsdecode(ev.new_name or b""),
                )
            )
            if mask & FAN_ONDIR and mask & (FAN_RENAME | FAN_DELETE):
                self._cache.clear()
        return named

    def _rel(self, path: str | None) -> str | None:
        """The path relative to the root when strictly below it, else None: the first test an
        event from elsewhere on the filesystem meets, so a plain prefix check."""
        prefix = self.root if self.root.endswith("/") else self.root + "/"
        if path is None or not path.startswith(prefix) or len(path) == len(prefix):
            return None
        return path[len(prefix) :]

    def _names_root(self, d: str | None, name: str) -> bool:
        return d == self._parent and name == self._root_name

    def _decode(self, events: list[RawEvent]) -> list[Change]:
        """Events to changes, in order.

        The kernel merges an event into an earlier queued one for the same name (and process),
        so one mask may stand for several events in an unknown order, placed where the first
        was. A create and a delete in one mask: the path's state now tells which came last. A
        create or delete of a name that a later rename in the batch takes or frees may hide one
        made after that rename: such a path is looked at again at the end of the batch."""
        out: list[Change] = []
        named = as_of_event_time(self._name(events, out))
        renamed_at: dict[str, int] = {}  # path -> index of the last rename naming it (either side)
        for i, ev in enumerate(named):
            if ev.mask & FAN_RENAME:
                for p in (ev.path, ev.new_path):
                    if p is not None:
                        renamed_at[p] = i
        recheck: dict[str, bool] = {}  # path -> is_dir, to be looked at when the batch is done
        for i, ev in enumerate(named):
            mask, is_dir, path = ev.mask, bool(ev.mask & FAN_ONDIR), ev.path
            if mask & FAN_RENAME:
                self._renamed(ev, is_dir, out)
                continue
            if mask & _DIRENT and self._names_root(ev.dir, ev.name):
                self._root_lost = True  # the root's name went away or names another entry now
                out.append(Change(RESCAN, ""))
                continue
            if path == self.root:
                if mask & FAN_ATTRIB:
                    out.append(Change(WRITE, ""))
                continue
            rel = self._rel(path)
            if rel is None or path is None or self.flt.path_excluded(rel, is_dir):
                continue  # outside the tree, in a directory gone since, or excluded
            if mask & _DIRENT and renamed_at.get(path, -1) > i:
                recheck[path] = is_dir
            if mask & FAN_CREATE and mask & FAN_DELETE:
                if os.path.lexists(path):  # deleted, then made again
                    out += [Change(DELETE, rel, is_dir), Change(WRITE, rel, is_dir, created=True)]
                    self._created(rel, path, mask)
                else:
                    self._unclosed.discard(rel)
                    out += [Change(WRITE, rel, is_dir, created=True), Change(DELETE, rel, is_dir)]
            elif mask & FAN_CREATE:
                self._created(rel, path, mask)
                out.append(Change(WRITE, rel, is_dir, created=True))
            elif mask & FAN_DELETE:
                self._unclosed.discard(rel)
                out.append(Change(DELETE, rel, is_dir))
            elif mask & (FAN_CLOSE_WRITE | FAN_ATTRIB):
                if mask & FAN_CLOSE_WRITE:
                    self._unclosed.discard(rel)
                out.append(Change(WRITE, rel))
        for path, is_dir in recheck.items():
            rel = self._rel(path)
            assert rel is not None
            try:
                now_dir = stat.S_ISDIR(os.lstat(path).st_mode)
            except OSError:
                out.append(Change(DELETE, rel, is_dir))
            else:
                out.append(Change(WRITE, rel, now_dir))
        return out

    def _created(self, rel: str, path: str, mask: int) -> None:
        if mask & FAN_CLOSE_WRITE:
            self._unclosed.discard(rel)  # its close is merged in: whole already
        elif not mask & FAN_ONDIR and _regular(path):  # a symlink or a device node is whole when made
            self._unclosed.add(rel)

    def _renamed(self, ev: Named, is_dir: bool, out: list[Change]) -> None:
        old, new = ev.path, ev.new_path
        if old is not None and _under(self.root, old):  # the root or a folder holding it moved
            self._root_lost = True
            out.append(Change(RESCAN, ""))
            return
        if self._names_root(ev.dir, ev.name) or self._names_root(ev.new_dir, ev.new_name):
            self._root_lost = True  # something else took the root's name
            out.append(Change(RESCAN, ""))
            return
        old_rel, new_rel = self._rel(old), self._rel(new)
        if old_rel is not None and new_rel is not None:
            self._moved(old_rel, new_rel, is_dir, out)
        elif old_rel is not None:
            self._moved_out(old_rel, is_dir, out)
        elif new_rel is not None:
            self._moved_in(new_rel, is_dir, out)

    def _dir_renamed(self, old: str, new: str, out: list[Change]) -> None:
        if self.flt.anchored:
            out.append(Change(RESCAN, ""))  # anchored rules may judge the subtree anew by its new name
