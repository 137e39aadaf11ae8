"""The far-side agent: file operations on one root, driven by framed messages on stdin/stdout.

Why this file is odd: it is sent verbatim over ssh and exec'd by the remote `python3`
(>= 3.8, stdlib only, nothing installed there), and it is also imported locally so that a
local target runs the very same `Ops` in-process.  So: no tether imports, no 3.9+ APIs,
and annotations stay strings (`from __future__ import annotations`).

Safety: every path is relative bytes, checked component by component, and resolved by
walking directory fds from the root with O_NOFOLLOW, so no symlink anywhere in a parent
can take an operation outside the root.  Names are never passed to a shell.

Frame (both directions): 4-byte big-endian header length, 4-byte body length, the JSON
header, the body.  Paths travel in JSON as UTF-8 with surrogateescape (any bytes survive,
json escapes the lone surrogates); file data travels in the body.
"""

from __future__ import annotations

import errno
import json
import os
import re  # json's decoder imports it already: free here
import stat
import struct
import sys
import time
from contextlib import contextmanager, suppress

TYPE_CHECKING = False  # not typing's: importing typing would cost every connection milliseconds
if TYPE_CHECKING:  # only for the checker: `dict[...]` at run time would break python 3.8
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import IO, Any, TypeAlias

    Result: TypeAlias = dict[str, Any]

PROTOCOL_VERSION = 1
MAGIC = b"TETHER-AGENT-READY\n"  # first line of stdout: lets the client skip shell start-up noise
TMP_PREFIX = b".tether-tmp-"
META_DIR = b".tether"  # tether's own folder at a root: never scanned, synced or watched
# Every version tether keeps, whatever kept it (a deletion, an overwrite, a conflict's loser), in
# one tree shaped like the replica: <dirs>/<stem>~<YYYYmmdd-HHMMSS>[-N]~<why><ext> (see version_name)
VERSIONS = META_DIR + b"/versions"
INCOMING = META_DIR + b"/incoming"  # rsync --backup-dir runs, each its own folder, until filed in VERSIONS
LEGACY_INCOMING = META_DIR + b"/trash/.incoming"  # where releases before VERSIONS kept them
WHYS = (b"deleted", b"replaced", b"conflict")
TMP_DIR = [META_DIR, b"tmp"]  # where bisync writes before a rename: temp names never sit beside user files
RACY_NS = 2_000_000_000  # without a filesystem clock: an mtime this close to ours may be shared by a later edit
TICK_MARGIN_NS = 10_000_000  # below the lock's own mtime: clocks coarser than one kernel tick are read as 2 s FAT
MAX_HEADER = 64 << 20


# The tests' crash seam (tether/crashpoints.py names every point): TETHER_CRASH_AT=NAME[:N] kills
# the process that reaches NAME for the N-th time with SIGKILL, after appending NAME to the file
# TETHER_CRASH_LOG names. Read once here; over ssh the client arms the far agent in its hello.
def _armed(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    return name, int(nth) if nth.isdigit() and int(nth) > 0 else 1


_CRASH_AT = _armed(os.environ.get("TETHER_CRASH_AT"))
_CRASH_LOG = os.environ.get("TETHER_CRASH_LOG")
_crash_reached = 0


def crashpoint(name: str) -> None:
    """Nothing unless a test armed this very point (one global None check)."""
    if _CRASH_AT is not None and _CRASH_AT[0] == name:
        _crash(name)


def _crash(name: str) -> None:
    global _crash_reached
    _crash_reached += 1
    assert _CRASH_AT is not None
    if _crash_reached < _CRASH_AT[1]:
        return
    if _CRASH_LOG:
        fd = os.open(_CRASH_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    os.kill(os.getpid(), 9)  # SIGKILL: no handler, no finally, no flush runs


def crash_arming() -> dict[str, str]:
    """What a client passes in its hello so that a far agent dies at the same point."""
    if _CRASH_AT is None:
        return {}
    return {"crash_at": f"{_CRASH_AT[0]}:{_CRASH_AT[1]}", "crash_log": _CRASH_LOG or ""}


def _arm(spec: str | None, log: str | None) -> None:
    global _CRASH_AT, _CRASH_LOG
    if spec:
        _CRASH_AT, _CRASH_LOG = _armed(spec), log or None


_FRAME = struct.Struct(">II")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_MAX = 255


class OpError(Exception):
    """A per-operation failure reported to the client; the agent carries on."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = code
        self.message = message


def to_bytes(value: str | bytes) -> bytes:
    """Path from the wire (surrogateescaped str) or from a local caller (bytes)."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogateescape")


def to_wire(value: bytes) -> str:
    """Bytes as a JSON-safe str that `to_bytes` turns back into the same bytes."""
    return value.decode("utf-8", "surrogateescape")


def show(path: bytes) -> str:
    """A path for messages, on one line: undecodable bytes and control characters escaped
    (a name with a newline would split a message, and a reader's line, in two)."""
    text = path.decode("utf-8", "backslashreplace")
    return "".join(c if " " <= c != "\x7f" else repr(c)[1:-1] for c in text)


@contextmanager
def _oserrors(what: str, path: bytes) -> Iterator[None]:
    """Turn OSError into OpError naming the operation and the path."""
    try:
        yield
    except OSError as e:
        raise OpError(e.errno, f"{what} {show(path)}: {e.strerror or e}") from None


def split_path(path: str | bytes) -> list[bytes]:
    """Components of a relative path, refusing anything that could leave the root."""
    p = to_bytes(path)
    if not p:
        raise OpError(errno.EINVAL, "empty path refused")
    if b"\0" in p:
        raise OpError(errno.EINVAL, f"path with a NUL byte refused: {show(p)}")
    if p.startswith(b"/"):
        raise OpError(errno.EINVAL, f"absolute path refused (paths are relative to the root): {show(p)}")
    parts = p.split(b"/")
    for c in parts:
        if c in (b"", b".", b".."):
            raise OpError(errno.EINVAL, f"path with an empty, '.' or '..' component refused: {show(p)}")
    return parts


def _tmp_name() -> bytes:
    return TMP_PREFIX + os.urandom(6).hex().encode()


def _ftype(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "o"  # fifo, socket, device: present, but not something tether syncs


class _Missing(Exception):
    """A parent component is absent (or not a real directory) on a lookup that must not create."""


class Ops:
    """Every agent operation on one root; local targets call it in-process."""

    def __init__(self, root: str | bytes, create: bool = False) -> None:
        r = os.path.expanduser(to_bytes(root))
        if create:
            with _oserrors("create root", r):
                os.makedirs(r, 0o755, exist_ok=True)
        with _oserrors("open root", r):
            os.close(os.open(r, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        self.root = os.path.abspath(r)
        self._locks: dict[bytes, int] = {}
        self._watcher: _Inotify | None = None

    # ------------------------------------------------------------------ path walking

    @contextmanager
    def _parent(self, parts: list[bytes], create: bool) -> Iterator[int]:
        """An fd of the directory holding parts[-1], reached without following any symlink.

        With create, missing directories are made (0o755); a symlink or non-directory in
        the way is an OpError.  Without create, either raises _Missing.
        """
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, c in enumerate(parts[:-1]):
                try:
                    nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Missing() from None
                    try:
                        os.mkdir(c, 0o755, dir_fd=fd)
                        os.chmod(c, 0o755, dir_fd=fd)  # exact mode, whatever the umask
                    except FileExistsError:
                        pass  # raced with another creator: fine if it is a directory
                    nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if not create:
                        raise _Missing() from None
                    where = show(b"/".join(parts[: i + 1]))
                    if e.errno == errno.ELOOP or stat.S_ISLNK(os.lstat(c, dir_fd=fd).st_mode):
                        raise OpError(errno.ELOOP, f"parent {where} is a symlink; refusing to follow it") from None
                    raise OpError(errno.ENOTDIR, f"parent {where} is not a directory") from None
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def _lstat(self, dfd: int, name: bytes) -> os.stat_result | None:
        try:
            return os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ operations

    def hello(self, version: int) -> Result:
        """Handshake: both sides must speak the same protocol."""
        if version != PROTOCOL_VERSION:
            raise OpError(
                errno.EPROTO,
                f"protocol version mismatch: tether speaks {version}, this agent speaks {PROTOCOL_VERSION}"
                "; use the same tether version on both sides",
            )
        return {
            "version": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "root": to_wire(self.root),
            "py": list(sys.version_info[:2]),
        }

    def put(
        self,
        path: str | bytes,
        data: bytes,
        mode: int = 0o644,
        mtime_ns: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        fsync: bool = False,
        trash_root: str | bytes | None = None,
        meta: Result | None = None,
    ) -> Result:
        """Atomic write: a temp file in the same dir renamed over the name, never half-visible.
        With trash_root, the version it replaces is kept there first (see _keep).  With meta
        (read_meta's), the owner and xattrs it asks for; what the target refuses is listed in
        "meta_errors" and the file is written all the same."""
        p = to_bytes(path)
        parts = split_path(p)
        refused: list[str] = []
        with _oserrors("put", p), self._parent(parts, create=True) as dfd:
            tmp = _tmp_name()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if uid is not None or gid is not None:
                        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                    if meta:
                        refused = apply_meta(fd, meta, p)
                    os.fchmod(fd, mode & 0o7777)
                    if fsync:
                        os.fsync(fd)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(time.time_ns(), mtime_ns))
                finally:
                    os.close(fd)
                if trash_root is not None:
                    self._keep(dfd, parts, to_bytes(trash_root), data)
                os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
        return {"size": len(data), "meta_errors": refused} if refused else {"size": len(data)}

    def symlink(
        self,
        path: str | bytes,
        target: str | bytes,
        mtime_ns: int | None = None,
        trash_root: str | bytes | None = None,
        meta: Result | None = None,
    ) -> Result:
        """Atomic symlink replace (temp link + rename); the link's own mtime is set, not the target's.
        With trash_root, the entry it replaces is kept there first (see _keep)."""
        p = to_bytes(path)
        parts = split_path(p)
        refused: list[str] = []
        with _oserrors("symlink", p), self._parent(parts, create=True) as dfd:
            tmp = _tmp_name()
            os.symlink(to_bytes(target), tmp, dir_fd=dfd)
            try:
                if meta:
                    refused = apply_owner_at(dfd, tmp, meta, p)
                if mtime_ns is not None:
                    os.utime(tmp, ns=(time.time_ns(), mtime_ns), dir_fd=dfd, follow_symlinks=False)
                if trash_root is not None:
                    self._keep(dfd, parts, to_bytes(trash_root), link=to_bytes(target))
                os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
        return {"meta_errors": refused} if refused else {}

    def mkdir(
        self, path: str | bytes, mode: int = 0o755, mtime_ns: int | None = None, meta: Result | None = None
    ) -> Result:
        """Make a directory (and its parents); an existing directory just gets mode and mtime
        (and, with meta, owner and xattrs: a chown or setfacl on a source dir arrives so)."""
        p = to_bytes(path)
        parts = split_path(p)
        refused: list[str] = []
        with _oserrors("mkdir", p), self._parent(parts, create=True) as dfd:
            created = True
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=dfd)
            except FileExistsError:
                created = False
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=dfd)  # ELOOP/ENOTDIR if a non-dir holds the name
            try:
                if meta:
                    refused = apply_meta(fd, meta, p)
                os.fchmod(fd, mode & 0o7777)
                if mtime_ns is not None:
                    os.utime(fd, ns=(time.time_ns(), mtime_ns))
            finally:
                os.close(fd)
        return {"created": created, "meta_errors": refused} if refused else {"created": created}

    def set_meta(
        self,
        path: str | bytes,
        mode: int | None = None,
        mtime_ns: int | None = None,
        expect: list[Any] | None = None,
        digest: str | None = None,
        meta: Result | None = None,
    ) -> Result:
        """Mode and mtime of an existing entry (dirs after their contents changed); never follows a symlink.

        With `expect` ([type, size, mtime_ns]) and `digest`, only if the entry is still the
        version the caller compared: an edit since then keeps its own mtime and propagates.
        With meta (read_meta's), owner and xattrs too; refusals come back in "meta_errors"."""
        p = to_bytes(path)
        parts = split_path(p)
        try:
            with _oserrors("set_meta", p), self._parent(parts, create=False) as dfd:
                if expect is not None:
                    self._check_expect(dfd, parts[-1], p, expect)
                if digest is not None and self._digest_at(dfd, parts[-1]) != digest:
                    raise OpError(errno.ESTALE, f"{show(p)} changed during the pass")
                refused = self._meta_of_existing(dfd, parts[-1], meta, p) if meta else []
                done = self._set_meta_at(dfd, parts[-1], mode, mtime_ns)
                return {**done, "meta_errors": refused} if refused else done
        except _Missing:
            raise OpError(errno.ENOENT, f"set_meta {show(p)}: No such file or directory") from None

    def _meta_of_existing(self, dfd: int, name: bytes, meta: Result, p: bytes) -> list[str]:
        if stat.S_ISLNK(os.lstat(name, dir_fd=dfd).st_mode):
            return apply_owner_at(dfd, name, meta, p)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            return apply_meta(fd, meta, p)
        finally:
            os.close(fd)

    def _set_meta_at(self, dfd: int, name: bytes, mode: int | None, mtime_ns: int | None) -> Result:
        st = os.lstat(name, dir_fd=dfd)
        if stat.S_ISLNK(st.st_mode):
            if mtime_ns is not None:
                os.utime(name, ns=(st.st_atime_ns, mtime_ns), dir_fd=dfd, follow_symlinks=False)
            return {}  # a symlink's mode means nothing on Linux
        if mode is not None:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except PermissionError:  # unreadable file (non-root): chmod by name, checked not a symlink above
                os.chmod(name, mode & 0o7777, dir_fd=dfd)
            else:
                try:
                    os.fchmod(fd, mode & 0o7777)
                finally:
                    os.close(fd)
        if mtime_ns is not None:
            os.utime(name, ns=(st.st_atime_ns, mtime_ns), dir_fd=dfd, follow_symlinks=False)
        return {}

    def move(self, old: str | bytes, new: str | bytes, trash_root: str | bytes | None = None) -> Result:
        """Rename old to new so that new ends up exactly as old was (an existing new is replaced;
        with trash_root it is kept there, as a deletion would be).

        {"moved": False, "reason": "missing"} when old is not there: the caller copies instead.
        Otherwise the moved entry's type, size and mtime, for the caller to check against its source.
        """
        o, n = to_bytes(old), to_bytes(new)
        oparts, nparts = split_path(o), split_path(n)
        if o == n:
            return {"moved": True}
        if n.startswith(o + b"/") or o.startswith(n + b"/"):
            raise OpError(errno.EINVAL, f"move {show(o)} -> {show(n)}: one path is inside the other")
        with _oserrors("move", o):
            try:
                with self._parent(oparts, create=False) as ofd:
                    ost = self._lstat(ofd, oparts[-1])
                    if ost is None:
                        return {"moved": False, "reason": "missing"}
                    with self._parent(nparts, create=True) as nfd:
                        nst = self._lstat(nfd, nparts[-1])
                        across = nst is not None and (stat.S_ISDIR(nst.st_mode) or stat.S_ISDIR(ost.st_mode))
                        if nst is not None and trash_root is not None:
                            self._keep(nfd, nparts, to_bytes(trash_root), whole=across)
                        elif across:
                            _remove_at(nfd, nparts[-1])  # rename cannot replace across kinds or a non-empty dir
                        os.rename(oparts[-1], nparts[-1], src_dir_fd=ofd, dst_dir_fd=nfd)
            except _Missing:
                return {"moved": False, "reason": "missing"}
        return {"moved": True, "type": _ftype(ost.st_mode), "size": ost.st_size, "mtime_ns": ost.st_mtime_ns}

    def remove(self, paths: list[str | bytes]) -> Result:
        """Remove files, symlinks and whole dirs; a symlink to a dir is unlinked, never descended."""
        checked = [(to_bytes(p), split_path(p)) for p in paths]
        removed, missing = 0, 0
        failed: list[Result] = []
        for p, parts in checked:
            try:
                with self._parent(parts, create=False) as dfd:
                    if _remove_at(dfd, parts[-1]):
                        removed += 1
                    else:
                        missing += 1
            except _Missing:
                missing += 1
            except OSError as e:
                failed.append({"path": to_wire(p), "error": f"remove {show(p)}: {e.strerror}", "errno": e.errno})
        return {"removed": removed, "missing": missing, "failed": failed}

    def trash(self, paths: list[str | bytes], trash_root: str | bytes, why: str = "deleted") -> Result:
        """Keep each path as a version under trash_root (the versions tree, see _keep_version)."""
        troot = to_bytes(trash_root)
        split_path(troot)  # a root outside the replica is refused as a whole, before any path
        why_b = check_why(why, "trash")
        checked = [(to_bytes(p), split_path(p)) for p in paths]
        for p, _ in checked:
            if p == troot or p.startswith(troot + b"/"):
                raise OpError(errno.EINVAL, f"refusing to trash {show(p)}: it is inside the trash")
        trashed, missing = 0, 0
        failed: list[Result] = []
        dests: list[str] = []
        for p, parts in checked:
            try:
                with self._parent(parts, create=False) as ofd:
                    if self._lstat(ofd, parts[-1]) is None:
                        missing += 1
                        continue
                    dest = self._keep_version(ofd, parts[-1], parts, troot, why_b)
                trashed += 1
                dests.append(to_wire(dest))
            except _Missing:
                missing += 1
            except OpError as e:
                failed.append({"path": to_wire(p), "error": e.message, "errno": e.errno})
            except OSError as e:
                failed.append({"path": to_wire(p), "error": f"trash {show(p)}: {e.strerror}", "errno": e.errno})
        return {"trashed": trashed, "missing": missing, "failed": failed, "dests": dests}

    def _keep_version(
        self,
        sfd: int,
        name: bytes,
        parts: list[bytes],
        root: bytes,
        why: bytes,
        *,
        link: bool = False,
        stamp: bytes | None = None,
        keep: int = 0,
    ) -> bytes:
        """Keep entry `name` of sfd as a version of the path `parts` in the versions tree at
        root: root/<parents>/<version_name>; with `link` as a hard link where the filesystem has
        them (the entry staying: its caller replaces it at once), else moved there. With `keep`,
        that path's versions beyond the newest `keep` go. Returns where the version lies,
        relative to the root of the replica."""
        when = stamp or version_stamp()
        with self._trash_dir(split_path(root), parts[:-1]) as (vfd, used):
            first = 0  # with a count to keep, never below a number this second already used: the
            listed: list[tuple[bytes, tuple[bytes, bytes, int, bytes]]] = []  # pruning below would
            taken: set[bytes] | None = None  # take a lower one freed by pruning for the oldest
            if keep > 0:  # the folder is listed once: its names are the free-name look, and prune
                names = [os.fsencode(n) for n in os.listdir(vfd)]
                taken = set(names)
                stem = _version_stem(parts[-1])  # only this file's versions are parsed
                listed = _versions_of(n for n in names if n.startswith(stem))
                own = parse_version(version_name(parts[-1], why, when))
                first = 1 + max((v[2] for _n, v in listed if own and v[0] == own[0] and v[1] == when), default=-1)

            def naming(n: int) -> list[bytes]:  # this reason's name first; the others' keep N in order
                mine = version_name(parts[-1], why, when, first + n)
                return [mine, *(version_name(parts[-1], w, when, first + n) for w in WHYS if w != why)]

            try:
                kept = _keep_as(sfd, name, vfd, naming, link=link, taken=taken)
            except OSError:
                if not link:
                    raise
                kept = _keep_as(sfd, name, vfd, naming, taken=taken)  # no hard links here (or a dir): moved
            crashpoint("agent.keep_version")
            own = parse_version(kept)
            if keep > 0 and own is not None:  # what another process kept meanwhile: its own prune's
                mine = [(n, v[1], v[2]) for n, v in [*listed, (kept, own)] if v[0] == own[0]]
                for old in prune_choice(mine, None, keep):
                    with suppress(OSError):
                        _remove_at(vfd, old)
        return b"/".join([*split_path(root), *used, kept])

    @contextmanager
    def _trash_dir(self, tparts: list[bytes], parents: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
        """An fd of the trash dir tparts/<parents>, made as needed. A parent whose name a file
        holds there (a version trashed earlier that day) is numbered instead (a.1): the trash
        never refuses a version. Yields the fd and the parents' names as used."""
        with self._parent([*tparts, b"x"], create=True) as tfd:
            fd = os.dup(tfd)
        used: list[bytes] = []
        try:
            for c in parents:
                name, n = c, 0
                while True:
                    try:  # opened first: most versions go where an earlier one made the folders
                        nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                        break
                    except FileNotFoundError:
                        with suppress(FileExistsError):
                            os.mkdir(name, 0o755, dir_fd=fd)
                        continue
                    except OSError as e:
                        if e.errno not in (errno.ELOOP, errno.ENOTDIR) or n >= 1000:
                            raise
                    n += 1
                    name = c[: _NAME_MAX - 8] + b".%d" % n
                os.close(fd)
                fd = nfd
                used.append(name)
            yield fd, used
        finally:
            os.close(fd)

    def _keep(
        self,
        dfd: int,
        parts: list[bytes],
        trash_root: bytes,
        same: bytes | None = None,
        link: bytes | None = None,
        whole: bool = False,
    ) -> None:
        """Keep the entry about to be replaced at parts in trash_root/<day>/<path>, numbered like
        a deletion's when the name is taken: a hard link (the replace follows at once), or the
        entry itself moved there when `whole` (a dir, or a kind change) or links are impossible.
        Nothing is kept when it already holds the new bytes `same` or the new link target `link`."""
        name = parts[-1]
        st = self._lstat(dfd, name)
        if st is None or (stat.S_ISDIR(st.st_mode) and not whole):
            return
        if same is not None and stat.S_ISREG(st.st_mode) and st.st_size == len(same):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
            try:
                held = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            finally:
                os.close(fd)
            if held == same:
                return
        if link is not None and stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dfd) == link:
            return
        self._keep_version(dfd, name, parts, trash_root, b"replaced", link=not whole)

    def fold_trash(self, path: str | bytes, trash_root: str | bytes) -> Result:
        """File what rsync --backup-dir runs left in `path`/<run>/ as versions under trash_root,
        run by run in the order of their names (a run's name starts with its start time, in hex
        nanoseconds, which stamps its versions): replaced where the path is there now, else
        deleted. Then drop the emptied dirs; what cannot be filed stays. Filing into VERSIONS
        also files what an older release's interrupted run left in its own incoming folder."""
        troot = to_bytes(trash_root)
        got: Result = {"folded": 0, "failed": []}
        for where in [to_bytes(path), *([LEGACY_INCOMING] if troot == VERSIONS else [])]:
            r = self._fold_from(where, troot)
            got["folded"] += r["folded"]
            got["failed"] += r["failed"]
        return got

    def _fold_from(self, path: bytes, troot: bytes) -> Result:
        folded = 0
        failed: list[Result] = []
        try:
            with self._parent([*split_path(to_bytes(path)), b"x"], create=False) as base:
                with os.scandir(base) as it:
                    runs = sorted(os.fsencode(e.name) for e in it if e.is_dir(follow_symlinks=False))
                for run in runs:
                    try:
                        stamp = version_stamp(int(run.partition(b"-")[0], 16) / 1e9)
                    except ValueError:
                        stamp = version_stamp()
                    dirs: list[list[bytes]] = []
                    stack: list[list[bytes]] = [[run]]
                    while stack:
                        rel = stack.pop()
                        dirs.append(rel)
                        dfd = _open_below(base, rel)
                        try:
                            with os.scandir(dfd) as it:
                                entries = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]
                            for name, is_dir in entries:
                                if is_dir:
                                    stack.append([*rel, name])
                                    continue
                                parts = [*rel[1:], name]
                                why = b"replaced" if self._exists(parts) else b"deleted"
                                try:
                                    self._keep_version(dfd, name, parts, troot, why, stamp=stamp)
                                    folded += 1
                                except OSError as e:
                                    failed.append({"path": to_wire(b"/".join([*rel, name])), "error": str(e)})
                        finally:
                            os.close(dfd)
                    for rel in reversed(dirs):
                        with suppress(OSError):
                            os.rmdir(b"/".join(rel), dir_fd=base)
        except _Missing:
            pass
        return {"folded": folded, "failed": failed}

    def kept(self, tops: list[str | bytes]) -> Result:
        """Every file or link below each of tops (the kept versions, in any layout), for a listing
        read on the other side (tether.versions classifies it): [[path, size, mtime_ns], ...]."""
        out: list[list[Any]] = []
        for top in tops:
            parts = split_path(top)
            try:
                with self._parent([*parts, b"x"], create=False) as tfd:
                    stack = [(os.dup(tfd), parts)]
                    while stack:
                        dfd, rel = stack.pop()
                        try:
                            for name in map(os.fsencode, os.listdir(dfd)):
                                st = os.lstat(name, dir_fd=dfd)
                                if stat.S_ISDIR(st.st_mode):
                                    with suppress(OSError):
                                        stack.append((os.open(name, _DIR_FLAGS, dir_fd=dfd), [*rel, name]))
                                else:
                                    out.append([to_wire(b"/".join([*rel, name])), st.st_size, st.st_mtime_ns])
                        finally:
                            os.close(dfd)
            except _Missing:
                continue
        return {"entries": out}

    def _exists(self, parts: list[bytes]) -> bool:
        try:
            with self._parent(parts, create=False) as dfd:
                return self._lstat(dfd, parts[-1]) is not None
        except (_Missing, OpError, OSError):
            return False

    def prune_versions(self, versions_root: str | bytes, days: int | None, keep: int = 0) -> Result:
        """Remove the versions kept before the day `days` days ago (None: never by age) and, per
        path, all but the newest `keep` (0: no limit); then the folders that emptied. The older
        layouts (.tether/trash/<day>/, .tether/backups/<path>.<stamp>) are pruned by age only."""
        cutoff = None if days is None else time.strftime("%Y%m%d", time.localtime(time.time() - days * 86400)).encode()
        pruned = 0
        try:
            with self._parent([*split_path(to_bytes(versions_root)), b"x"], create=False) as top:
                stack: list[tuple[int, list[bytes]]] = [(os.dup(top), [])]
                emptied: list[list[bytes]] = []
                while stack:
                    dfd, rel = stack.pop()
                    try:
                        found = _versions_in(dfd)
                        groups: dict[bytes, list[tuple[bytes, bytes, int]]] = {}
                        for n, v in found:
                            groups.setdefault(v[0], []).append((n, v[1], v[2]))
                        for group in groups.values():
                            for old in prune_choice(group, cutoff, keep):
                                with suppress(OSError):
                                    pruned += _remove_at(dfd, old)
                        kept = {n for n, _v in found}
                        with os.scandir(dfd) as it:
                            subs = [os.fsencode(e.name) for e in it if e.is_dir(follow_symlinks=False)]
                        for sub in subs:
                            if sub not in kept:
                                with suppress(OSError):
                                    stack.append((os.open(sub, _DIR_FLAGS, dir_fd=dfd), [*rel, sub]))
                        emptied.append(rel)
                    finally:
                        os.close(dfd)
                for rel in sorted(emptied, key=len, reverse=True):
                    if rel:
                        with suppress(OSError):
                            os.rmdir(b"/".join(rel), dir_fd=top)
        except _Missing:
            pass
        if days is not None:
            pruned += self._purge_days(META_DIR + b"/trash", days) + self._prune_stamped(META_DIR + b"/backups", days)
        return {"pruned": pruned}

    def _purge_days(self, trash_root: bytes, days: int) -> int:
        """The older layout's trash: remove its dated dirs more than `days` days old."""
        import datetime

        today = datetime.date.today()
        purged = 0
        with _oserrors("prune", trash_root):
            try:
                with self._parent([*split_path(trash_root), b"x"], create=False) as tfd:
                    for name in os.listdir(tfd):
                        try:
                            day = datetime.date.fromisoformat(name[:10])  # 2026-12-04 or 2026-12-04.2
                        except ValueError:
                            continue  # not one of ours
                        if (today - day).days > days and _remove_at(tfd, os.fsencode(name)):
                            purged += 1
            except _Missing:
                pass
        return purged

    def stat(self, paths: list[str | bytes]) -> list[Result]:
        """lstat of each path; type None when absent (a symlinked parent counts as absent)."""
        out: list[Result] = []
        for p in paths:
            parts = split_path(p)
            st = None
            try:
                with _oserrors("stat", to_bytes(p)), self._parent(parts, create=False) as dfd:
                    st = self._lstat(dfd, parts[-1])
            except _Missing:
                pass
            if st is None:
                out.append({"type": None})
            else:
                out.append(
                    {
                        "type": _ftype(st.st_mode),
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                        "mode": stat.S_IMODE(st.st_mode),
                    }
                )
        return out

    def run(self, argv: list[str | bytes], timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        """Run a program (argument list, no shell) in the root, stdin closed, output captured;
        `env` is added to the agent's environment (a hook's TETHER_* variables). The output goes
        to unnamed files, not pipes, so a daemon the program leaves behind holding them is not
        waited for (as tether.procs does on the near side; this file imports nothing of tether)."""
        import subprocess
        import tempfile

        args = [to_bytes(a) for a in argv]
        if not args:
            raise OpError(errno.EINVAL, "run: empty argument list")
        full = None if not env else {**os.environ, **{str(k): str(v) for k, v in env.items()}}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.root, env=full)
            except OSError as e:
                raise OpError(e.errno, f"run {show(args[0])}: {e.strerror}") from None
            with proc:
                try:
                    rc: int | None = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    rc = None
            out.seek(0)
            err.seek(0)
            return {"rc": rc, "timed_out": rc is None, "stdout": to_wire(out.read()), "stderr": to_wire(err.read())}

    def df(self) -> Result:
        """Free (for unprivileged users) and total bytes of the root's filesystem."""
        with _oserrors("df", self.root):
            st = os.statvfs(self.root)
        return {"free": st.f_bavail * st.f_frsize, "total": st.f_blocks * st.f_frsize}

    def empty(self) -> Result:
        """Whether the root holds nothing: a first pass into it has nothing of anyone's to look
        at before it writes (one round trip, not a listing)."""
        with _oserrors("empty", self.root):
            return {"empty": holds_nothing(self.root)}

    # ------------------------------------------------------------------ two-way sync (bisync)

    def scan_raw(
        self,
        skip: bytes = b".tether",
        known: dict[bytes, tuple[Any, ...]] | None = None,
        tops: list[bytes] | None = None,
        floor: int | None = None,
    ) -> tuple[dict[bytes, tuple[Any, ...]], list[tuple[bytes, str]], list[bytes], int, int]:
        """Entries under the root, path -> (type, size, mtime_ns, mode, ino, link), as bytes.
        A file's "ino" is its inode number and change time together (ino << 64 | ctime_ns): no
        user can set a ctime, so a file replaced or rewritten since it was recorded shows even
        when its size and mtime were put back (cp -p or tar onto a reused inode number).

        With `known` (what the last sync recorded here), only the entries that differ from it
        come back, with the known paths that are gone: a quiet tree sends almost nothing, and
        the comparison happens during the walk, where the tuples are made anyway.  A
        directory's size, mtime and inode are 0: its contents are compared path by path.
        Directories that cannot be listed come back separately: the caller must not read their
        absence as deletions.  Returns (entries, unreadable, gone, entries seen, and the mtime
        from which on an entry is racily clean, see racy_from).  (The loop is the hot path of a
        pass: types are compared as st_mode >> 12, not via stat.S_IS*.)  With `tops`, a narrow
        scan: only those paths and, where they are directories, what lies below them (`known`
        then holds what was recorded at or below them).  `floor`: racy_from as taken by the
        caller just before it forked this scan (the child holds no lock descriptor to touch).
        """
        t0 = self.racy_from() if floor is None else floor
        rows: dict[bytes, tuple[Any, ...]] = {}
        unreadable: list[tuple[bytes, str]] = []
        stack: list[bytes] = [b""] if tops is None else []
        if tops is not None:
            for top in tops:
                found = self._top_entry(top, skip)
                if found is None:
                    continue
                if found[0] == "d":
                    stack.append(top)
                rows[top] = found
        get = (known or {}).get
        diff = known is not None
        seen: set[bytes] = set()
        mark = seen.add
        for top in list(rows):
            k = get(top)
            if k is not None:
                mark(top)
                if k == rows[top]:
                    del rows[top]
        count = len(seen)
        while stack:
            rel = stack.pop()
            prefix = rel + b"/" if rel else b""
            try:
                it = os.scandir(self.root + b"/" + rel if rel else self.root)
            except OSError as e:
                unreadable.append((rel, e.strerror or str(e)))
                continue
            with it:
                for de in it:
                    name = de.name
                    if not rel and name == skip:
                        continue
                    p = prefix + name
                    try:
                        st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # vanished under the walk: the next scan sees what became of it
                    except OSError as e:  # a folder without execute permission: a name, no entry
                        unreadable.append((p, e.strerror or str(e)))
                        continue
                    m = st.st_mode
                    t = m >> 12
                    if t == 8:  # regular file
                        ent: tuple[Any, ...] = (
                            "f",
                            st.st_size,
                            st.st_mtime_ns,
                            m & 0o7777,
                            st.st_ino << 64 | st.st_ctime_ns,
                            None,
                        )
                    elif t == 4:  # directory
                        ent = ("d", 0, 0, m & 0o7777, 0, None)
                        stack.append(p)
                    elif t == 10:  # symlink
                        try:
                            ent = ("l", st.st_size, st.st_mtime_ns, 0, st.st_ino, os.readlink(de.path))
                        except OSError:
                            continue
                    else:
                        ent = ("o", 0, 0, 0, 0, None)
                    count += 1
                    if diff:
                        k = get(p)
                        if k is not None:
                            mark(p)
                            if k == ent:
                                continue
                    rows[p] = ent
        gone = [p for p in known if p not in seen] if known is not None and len(seen) != len(known) else []
        return rows, unreadable, gone, count, t0

    def _top_entry(self, top: bytes, skip: bytes) -> tuple[Any, ...] | None:
        """One named path of a narrow scan, reached without following a symlinked parent."""
        parts = split_path(top)
        if parts[0] == skip:
            return None
        try:
            with self._parent(parts, create=False) as dfd:
                st = os.lstat(parts[-1], dir_fd=dfd)
                t = st.st_mode >> 12
                if t == 8:
                    return (
                        "f",
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_mode & 0o7777,
                        st.st_ino << 64 | st.st_ctime_ns,
                        None,
                    )
                if t == 4:
                    return ("d", 0, 0, st.st_mode & 0o7777, 0, None)
                if t == 10:
                    return ("l", st.st_size, st.st_mtime_ns, 0, st.st_ino, os.readlink(parts[-1], dir_fd=dfd))
                return ("o", 0, 0, 0, 0, None)
        except (_Missing, OSError):
            return None

    def scan(
        self, skip: str | bytes = b".tether", fmt: str = "json", data: bytes = b"", tops: list[bytes] | None = None
    ) -> Result:
        """scan_raw for the wire.  fmt "marshal" (when both ends run the same Python, so the
        format is the same) answers in the body, several times faster than JSON for large
        trees, and takes the known entries (marshalled) in the request body; "json" lists
        everything, with paths and link targets as surrogateescaped str."""
        if fmt == "marshal":
            import marshal

            known = marshal.loads(data) if data else None
            return {"data": marshal.dumps(self.scan_raw(to_bytes(skip), known, tops))}
        rows, unreadable, _gone, _n, t0 = self.scan_raw(to_bytes(skip), None, tops)
        return {
            "now": t0,
            "entries": [(to_wire(p), *r[:5], None if r[5] is None else to_wire(r[5])) for p, r in rows.items()],
            "unreadable": [(to_wire(p), why) for p, why in unreadable],
        }

    def _open_regular(self, p: bytes) -> int:
        parts = split_path(p)
        try:
            with self._parent(parts, create=False) as dfd:
                return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        except _Missing:
            raise OpError(errno.ENOENT, f"{show(p)}: No such file or directory") from None

    def _digest_at(self, dfd: int, name: bytes) -> str | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        except OSError:
            return None
        try:
            return _digest(fd)
        finally:
            os.close(fd)

    def hash(self, paths: list[str | bytes]) -> Result:
        """A content digest per file (None when it cannot be read): decides 'same content'.
        Files are opened by name from their directory's fd, each directory reached once
        (a first run compares every file: walking from the root per file would triple it)."""
        out: list[str | None] = [None] * len(paths)
        by_dir: dict[bytes, list[tuple[int, bytes]]] = {}
        for i, p in enumerate(paths):
            try:
                parts = split_path(p)
            except OpError:
                continue
            by_dir.setdefault(b"/".join(parts[:-1]), []).append((i, parts[-1]))
        for d, names in by_dir.items():
            try:
                with self._parent([*split_path(d), b"x"] if d else [b"x"], create=False) as dfd:
                    for i, name in names:
                        out[i] = self._digest_at(dfd, name)
            except (_Missing, OSError, OpError):
                continue
        return {"digests": out}

    def read(self, path: str | bytes, size: int, mtime_ns: int, meta: list[str] | None = None) -> Result:
        """A whole small file, only if it is still the version the caller scanned; with meta (a
        job's preserve list), what it asks for too, read from the same open file."""
        p = to_bytes(path)
        with _oserrors("read", p):
            fd = self._open_regular(p)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
                    raise OpError(errno.ESTALE, f"{show(p)} changed during the pass")
                chunks = []
                got = 0
                while got <= size:
                    chunk = os.read(fd, max(size - got, 0) + 1)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
                after = os.fstat(fd)
                kept = read_meta(fd, after, meta) if meta else None
            finally:
                os.close(fd)
        if got != size or after.st_mtime_ns != mtime_ns:
            raise OpError(errno.ESTALE, f"{show(p)} changed during the pass")
        if kept is not None:
            return {"data": b"".join(chunks), "mode": stat.S_IMODE(st.st_mode), "meta": kept}
        return {"data": b"".join(chunks), "mode": stat.S_IMODE(st.st_mode)}

    def meta(self, paths: list[str | bytes], scope: list[str]) -> Result:
        """read_meta of each path (None when absent, {"error": ...} when it cannot be read):
        what a job's preserve carries of dirs and links."""
        out: list[Result | None] = []
        for p in paths:
            parts = split_path(p)
            try:
                with _oserrors("read the metadata of", to_bytes(p)), self._parent(parts, create=False) as dfd:
                    st = self._lstat(dfd, parts[-1])
                    if st is None:
                        out.append(None)
                    elif stat.S_ISLNK(st.st_mode):
                        out.append(read_meta(b"", st, scope))
                    else:
                        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
                        try:
                            out.append(read_meta(fd, os.fstat(fd), scope))
                        finally:
                            os.close(fd)
            except _Missing:
                out.append(None)
            except OpError as e:
                out.append({"error": e.message})
        return {"metas": out}

    def _check_expect(
        self, dfd: int, name: bytes, p: bytes, expect: list[Any] | None, dir_ok: bool = False
    ) -> os.stat_result | None:
        """The entry must still be what the pass planned against: [type, size, mtime_ns] or None
        (absent; with dir_ok, a directory there is no race either: one action of a pass may make
        it as another's parent)."""
        st = self._lstat(dfd, name)
        if expect is None:
            if st is not None and not (dir_ok and stat.S_ISDIR(st.st_mode)):
                raise OpError(errno.EEXIST, f"{show(p)} appeared during the pass")
            return st  # None, or the directory dir_ok lets be
        if st is None:
            raise OpError(errno.ENOENT, f"{show(p)} vanished during the pass")
        t = _ftype(st.st_mode)
        if t != expect[0] or (t != "d" and (st.st_size != expect[1] or st.st_mtime_ns != expect[2])):
            raise OpError(errno.ESTALE, f"{show(p)} changed during the pass")
        return st

    def _clear_dir(
        self, dfd: int, name: bytes, parts: list[bytes], p: bytes, broot: bytes, why: bytes,
        leftovers: list[list[Any]] | None,
    ) -> bytes | None:  # fmt: skip
        """Make way for a file where a folder the pass emptied stands. What it still holds is
        either excluded by the job (`leftovers`, its rules: no pass will ever empty it, so it goes
        whole into the versions, as a replaced file would: where it lies is returned) or was made
        during the pass (kept in place: the next pass sees it)."""
        try:
            os.rmdir(name, dir_fd=dfd)
            return None
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if leftovers is None or not _only_excluded(dfd, name, p, Rules(leftovers)):
            raise OpError(
                errno.ENOTEMPTY,
                f"{show(p)}: the folder here holds files made during the pass; it stays, the next pass looks again",
            )
        return self._keep_version(dfd, name, parts, broot, why)

    def _entry(self, dfd: int, name: bytes) -> list[Any]:
        """One entry in scan form (without path and link)."""
        st = os.lstat(name, dir_fd=dfd)
        t = _ftype(st.st_mode)
        if t == "d":
            return ["d", 0, 0, stat.S_IMODE(st.st_mode), 0]
        if t == "l":
            return ["l", st.st_size, st.st_mtime_ns, 0, st.st_ino]
        return [t, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), st.st_ino << 64 | st.st_ctime_ns]

    def install(
        self,
        path: str | bytes,
        kind: str,
        expect: list[Any] | None,
        backup_root: str | bytes,
        data: bytes = b"",
        mode: int = 0o644,
        mtime_ns: int | None = None,
        target: str | bytes = b"",
        keep: int = 10,
        staged: str | bytes | None = None,
        staged_as: list[int] | None = None,
        digest: bool = False,
        meta: Result | None = None,
        why: str = "replaced",
        leftovers: list[list[Any]] | None = None,
    ) -> Result:
        """Create or replace path with a file, symlink or directory, if it is still as planned.

        The check runs right before the new version takes the name (after any transfer), so an
        edit saved meanwhile is never overwritten.  An existing file or link is kept in the
        backups first; an existing dir is only replaced when empty.  A big file arrives
        `staged`: already written under .tether/tmp (by rsync or rclone), and, with `staged_as`
        ([size, mtime_ns]), only if it is the version planned.  Returns the new entry, so the
        caller records exactly what is there (and, with `digest`, the staged file's content digest:
        a racily clean record keeps it).  With meta (read_meta's, from the other side), the
        owner and xattrs it asks for; refusals come back in "meta_errors" (the entry is made).
        """
        got: Result = {}
        refused: list[str] = []
        p = to_bytes(path)
        parts = split_path(p)
        broot = to_bytes(backup_root)
        why_b = check_why(why, "install")
        with _oserrors("install", p), self._parent(parts, create=True) as dfd:
            name = parts[-1]
            st = self._check_expect(dfd, name, p, expect, dir_ok=kind == "d")
            if kind == "d" and st is not None and stat.S_ISDIR(st.st_mode):
                if meta:
                    refused = self._meta_at(dfd, name, meta, p)
                os.chmod(name, mode & 0o7777, dir_fd=dfd)
                got = {"entry": self._entry(dfd, name)}
                return {**got, "meta_errors": refused} if refused else got
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    kept = self._clear_dir(dfd, name, parts, p, broot, why_b, leftovers)
                    if kept is not None:
                        got["kept"] = to_wire(kept)
                elif kind == "d":
                    self._keep_version(dfd, name, parts, broot, why_b, link=True, keep=keep)
                    os.unlink(name, dir_fd=dfd)
                else:
                    self._keep_version(dfd, name, parts, broot, why_b, link=True, keep=keep)
            if kind == "d":
                os.mkdir(name, 0o700, dir_fd=dfd)
                if meta:
                    refused = self._meta_at(dfd, name, meta, p)
                os.chmod(name, mode & 0o7777, dir_fd=dfd)
            elif staged is not None:
                sparts = split_path(staged)
                with self._parent(sparts, create=False) as sfd:
                    sst = os.lstat(sparts[-1], dir_fd=sfd)
                    if staged_as is not None and (
                        not stat.S_ISREG(sst.st_mode) or [sst.st_size, sst.st_mtime_ns] != list(staged_as)
                    ):
                        raise OpError(errno.ESTALE, f"{show(p)}: the source changed during the transfer")
                    if digest:
                        got["digest"] = self._digest_at(sfd, sparts[-1])
                    os.chmod(sparts[-1], mode & 0o7777, dir_fd=sfd, follow_symlinks=False)
                    if mtime_ns is not None:
                        os.utime(sparts[-1], ns=(time.time_ns(), mtime_ns), dir_fd=sfd, follow_symlinks=False)
                    os.replace(sparts[-1], name, src_dir_fd=sfd, dst_dir_fd=dfd)
            else:

                def make(tfd: int, tmp: bytes) -> None:
                    if kind == "l":
                        os.symlink(to_bytes(target), tmp, dir_fd=tfd)
                        if meta:
                            refused.extend(apply_owner_at(tfd, tmp, meta, p))
                        if mtime_ns is not None:
                            os.utime(tmp, ns=(time.time_ns(), mtime_ns), dir_fd=tfd, follow_symlinks=False)
                        return
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    fd = os.open(tmp, flags, 0o600, dir_fd=tfd)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view) :]
                        if meta:
                            refused.extend(apply_meta(fd, meta, p))
                        os.fchmod(fd, mode & 0o7777)
                        if mtime_ns is not None:
                            os.utime(fd, ns=(time.time_ns(), mtime_ns))
                    finally:
                        os.close(fd)

                self._make_and_replace(dfd, name, make)
            got["entry"] = self._entry(dfd, name)
            if refused:
                got["meta_errors"] = refused
            return got

    def _meta_at(self, dfd: int, name: bytes, meta: Result, p: bytes) -> list[str]:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            return apply_meta(fd, meta, p)
        finally:
            os.close(fd)

    def _make_and_replace(self, dfd: int, name: bytes, make: Callable[[int, bytes], None]) -> None:
        """make(dir fd, temp name) under .tether/tmp, then rename it over name.  Where the name's
        directory is another filesystem (a mount inside the root), the temp is made beside it."""
        with self._parent([*TMP_DIR, b"x"], create=True) as tfd:
            try:
                self._replace_from(tfd, dfd, name, make)
                return
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
        self._replace_from(dfd, dfd, name, make)

    def _replace_from(self, tfd: int, dfd: int, name: bytes, make: Callable[[int, bytes], None]) -> None:
        tmp = _tmp_name()
        try:
            make(tfd, tmp)
            os.replace(tmp, name, src_dir_fd=tfd, dst_dir_fd=dfd)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=tfd)
            raise

    def entry(self, path: str | bytes) -> Result:
        """The entry as it is now, in scan form (None when absent)."""
        p = to_bytes(path)
        parts = split_path(p)
        try:
            with _oserrors("entry", p), self._parent(parts, create=False) as dfd:
                if self._lstat(dfd, parts[-1]) is None:
                    return {"entry": None}
                return {"entry": self._entry(dfd, parts[-1])}
        except _Missing:
            return {"entry": None}

    def discard(self, path: str | bytes, expect: list[Any], trash_root: str | bytes) -> Result:
        """Soft delete: a file or link is kept as a deleted version under trash_root; a dir is
        removed only if empty."""
        p = to_bytes(path)
        parts = split_path(p)
        try:
            with _oserrors("delete", p), self._parent(parts, create=False) as dfd:
                st = self._check_expect(dfd, parts[-1], p, expect)
                assert st is not None
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(parts[-1], dir_fd=dfd)  # ENOTEMPTY: something new lives there, keep it
                    return {"trashed": None}
                return {"trashed": to_wire(self._keep_version(dfd, parts[-1], parts, to_bytes(trash_root), b"deleted"))}
        except _Missing:
            raise OpError(errno.ENOENT, f"{show(p)} vanished during the pass") from None

    def rename(self, old: str | bytes, new: str | bytes, expect: list[Any]) -> Result:
        """Rename within the replica, only if old is as planned and new is free (conflict copies)."""
        o, n = to_bytes(old), to_bytes(new)
        oparts, nparts = split_path(o), split_path(n)
        try:
            with _oserrors("rename", o), self._parent(oparts, create=False) as ofd:
                self._check_expect(ofd, oparts[-1], o, expect)
                with self._parent(nparts, create=True) as nfd:
                    self._check_expect(nfd, nparts[-1], n, None)
                    os.rename(oparts[-1], nparts[-1], src_dir_fd=ofd, dst_dir_fd=nfd)
                    return {"entry": self._entry(nfd, nparts[-1])}
        except _Missing:
            raise OpError(errno.ENOENT, f"{show(o)} vanished during the pass") from None

    def _prune_stamped(self, backup_root: bytes, days: int) -> int:
        """The older layout's backups (<path>.<YYYYmmdd-HHMMSS-us>): remove those more than
        `days` days old."""
        cutoff = time.strftime("%Y%m%d", time.localtime(time.time() - days * 86400)).encode()
        pruned = 0
        for dirpath, _dirs, files in os.walk(self.root + b"/" + backup_root):
            for n in files:
                dot = n.rfind(b".")
                stamp = n[dot + 1 : dot + 9]
                if dot > 0 and stamp.isdigit() and stamp < cutoff:
                    with suppress(OSError):
                        os.unlink(os.path.join(dirpath, n))
                        pruned += 1
        return pruned

    def lock(self, path: str | bytes, owner: str) -> Result:
        """Hold an flock on path for this agent's life; a dead holder's lock is simply taken over."""
        import fcntl

        p = to_bytes(path)
        parts = split_path(p)
        try:
            with _oserrors("lock", p), self._parent(parts, create=True) as dfd:
                fd = os.open(parts[-1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
        except OpError as e:
            if e.errno == errno.EROFS:  # nothing can write here, so nothing to guard; writes fail one by one
                return {"locked": False, "reason": "read-only file system"}
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OpError(errno.EAGAIN, f"locked by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{owner} (host {os.uname().nodename}, pid {os.getpid()})\n".encode())
        self._locks[p] = fd
        self._clear_tmp()
        return {"locked": True}

    def racy_from(self) -> int:
        """The mtime from which on a file seen by a scan starting now may share its mtime with an
        edit after it (git's "racily clean"). A lock held here, touched now, carries the
        filesystem's own clock, whatever its tick (FAT's 2 s) or its skew from ours (an NFS
        server's): a file stamped before it cannot be stamped the same again. Without one, our
        clock less RACY_NS."""
        fd = next(iter(self._locks.values()), None)
        if fd is not None:
            try:
                os.utime(fd)
                stamp = os.fstat(fd).st_mtime_ns
                return stamp - (TICK_MARGIN_NS if stamp % 1_000_000_000 else RACY_NS)
            except OSError:
                pass
        return time.time_ns() - RACY_NS

    def _clear_tmp(self) -> None:
        """What an interrupted run left in .tether/tmp (half-copied files): nobody else writes
        there while the lock is held, and none of it was ever a user's version."""
        try:
            with self._parent([*TMP_DIR, b"x"], create=False) as tfd:
                for n in os.listdir(tfd):
                    with suppress(OSError):
                        _remove_at(tfd, os.fsencode(n))
        except (_Missing, OSError):
            pass

    def unlock(self, path: str | bytes) -> Result:
        fd = self._locks.pop(to_bytes(path), None)
        if fd is not None:
            with suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
        return {}

    def close(self) -> None:
        """Release locks and the watch (an in-process agent outlives nothing it was given)."""
        for p in list(self._locks):
            self.unlock(p)
        if self._watcher is not None:
            os.close(self._watcher.fd)
            self._watcher = None

    def watch(self, timeout: float, rules: list[list[Any]] | None = None) -> Result:
        """Block until something under the root changes (inotify) or timeout; for continuous
        bisync.  The first call places the watches (with the job's filter rules) and answers at
        once; later ones return {"paths": changed relative paths, "full": a full pass is
        needed, "lost": [(dir, why, errno)] that could not be watched}."""
        if self._watcher is None:
            self._watcher = _Inotify(self.root, rules)
            lost, self._watcher.lost = self._watcher.lost, []
            return {
                "paths": [],
                "full": False,
                "lost": [(to_wire(d), w, c) for d, w, c in lost],
                "watches": len(self._watcher.wds),
            }
        return self._watcher.wait(timeout)


# ---------------------------------------------------------------------- metadata kept exactly (preserve)
#
# A job's `preserve` asks for owner, group, ACLs and xattrs on top of mode and mtime.  The sending
# side reads them with read_meta (from the fd it reads the data from), the receiving side applies
# them with apply_meta to the new entry before it takes its name.  Owners travel as names with the
# number beside them (like rsync: the name wins where the receiving host knows it); ACLs travel as
# their xattrs system.posix_acl_access/default, with the names of the users and groups they name.

ACL_XATTRS = (b"system.posix_acl_access", b"system.posix_acl_default")
_ACL_USER, _ACL_GROUP = 0x02, 0x08  # tags of named entries in the xattr form (linux/posix_acl_xattr.h)
_NAMES: dict[tuple[str, int], str | None] = {}  # ("u" | "g", id) -> name, or None when unknown here
_IDS: dict[tuple[str, str], int | None] = {}  # ("u" | "g", name) -> id here


def _name_of(kind: str, num: int) -> str | None:
    key = (kind, num)
    if key not in _NAMES:
        import grp
        import pwd

        try:
            _NAMES[key] = pwd.getpwuid(num).pw_name if kind == "u" else grp.getgrgid(num).gr_name
        except KeyError:
            _NAMES[key] = None
    return _NAMES[key]


def _id_of(kind: str, num: int, name: str | None) -> int:
    """The local id for an owner sent as (number, name): the name's id here, else the number."""
    if name is None or num == 0:  # like rsync: root is root everywhere, never mapped by name
        return num
    key = (kind, name)
    if key not in _IDS:
        import grp
        import pwd

        try:
            _IDS[key] = pwd.getpwnam(name).pw_uid if kind == "u" else grp.getgrnam(name).gr_gid
        except KeyError:
            _IDS[key] = None
    got = _IDS[key]
    return num if got is None else got


def _in_scope(name: bytes, scope: Sequence[str]) -> bool:
    if name in ACL_XATTRS:
        return "acl" in scope
    return "xattr" in scope and not name.startswith(b"system.")


def _acl_ids(value: bytes) -> list[tuple[str, int]]:
    """The named users and groups of an ACL in its xattr form (a version word, then 8-byte entries)."""
    out = []
    for off in range(4, len(value) - 7, 8):
        tag, _perm, num = struct.unpack_from("<HHI", value, off)
        if tag in (_ACL_USER, _ACL_GROUP):
            out.append(("u" if tag == _ACL_USER else "g", num))
    return out


def _acl_mapped(value: bytes, names: dict[str, str]) -> bytes:
    """The ACL with each named entry's id made this host's id for that name."""
    buf = bytearray(value)
    for off in range(4, len(buf) - 7, 8):
        tag, perm, num = struct.unpack_from("<HHI", buf, off)
        if tag in (_ACL_USER, _ACL_GROUP):
            kind = "u" if tag == _ACL_USER else "g"
            struct.pack_into("<HHI", buf, off, tag, perm, _id_of(kind, num, names.get(f"{kind}{num}")))
    return bytes(buf)


def read_meta(target: int | bytes, st: os.stat_result, scope: Sequence[str]) -> Result:
    """What `scope` asks for, of an open fd or (a symlink: owner and group only) a path."""
    meta: Result = {}
    if "owner" in scope:
        meta["owner"] = [st.st_uid, _name_of("u", st.st_uid)]
    if "group" in scope:
        meta["group"] = [st.st_gid, _name_of("g", st.st_gid)]
    if ("acl" in scope or "xattr" in scope) and not stat.S_ISLNK(st.st_mode):
        xattrs, names = [], {}
        try:
            listed = os.listxattr(target)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            listed = []  # a filesystem without xattrs: there are none to keep
        for n in sorted(listed):
            name = os.fsencode(n)
            if not _in_scope(name, scope):
                continue
            try:
                value = os.getxattr(target, n)
            except OSError as e:
                if e.errno == errno.ENODATA:
                    continue  # removed between the listing and the read
                raise
            if name in ACL_XATTRS:
                for kind, num in _acl_ids(value):
                    names[f"{kind}{num}"] = _name_of(kind, num)
            xattrs.append([to_wire(name), to_wire(value)])
        meta["xattrs"] = xattrs
        meta["scope"] = [s for s in ("acl", "xattr") if s in scope]
        if names:
            meta["names"] = {k: v for k, v in names.items() if v is not None}
    return meta


def apply_meta(fd: int, meta: Result, p: bytes) -> list[str]:
    """Give an open file or directory the owner, group and xattrs in `meta` (from read_meta),
    xattrs exactly: those in scope that the source lacks are removed (a default ACL inherited
    from the parent included).  Call it before the mode is set (a chown clears set-id bits).
    What the filesystem or our privileges refuse comes back as one message per refusal."""
    errors: list[str] = []
    uid = _id_of("u", *meta["owner"]) if "owner" in meta else -1
    gid = _id_of("g", *meta["group"]) if "group" in meta else -1
    if uid != -1 or gid != -1:
        try:
            os.fchown(fd, uid, gid)
        except OSError as e:
            errors.append(f"{show(p)}: cannot set owner {_owner_text(meta)}: {e.strerror}")
    if "xattrs" in meta:
        scope = meta.get("scope", [])
        want = {to_bytes(n): to_bytes(v) for n, v in meta["xattrs"]}
        names = meta.get("names", {})
        try:
            have = [os.fsencode(n) for n in os.listxattr(fd)]
        except OSError as e:
            have = []
            if want:
                errors.append(f"{show(p)}: cannot keep {_scope_text(want)}: {e.strerror}")
                want = {}
        for name in have:
            if _in_scope(name, scope) and name not in want:
                try:
                    os.removexattr(fd, name)
                except OSError as e:
                    if e.errno != errno.ENODATA:
                        errors.append(f"{show(p)}: cannot remove {show(name)}: {e.strerror}")
        for name, value in want.items():
            try:
                os.setxattr(fd, name, _acl_mapped(value, names) if name in ACL_XATTRS and names else value)
            except OSError as e:
                why = e.strerror
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    why = f"the target's filesystem does not support it ({e.strerror})"
                errors.append(f"{show(p)}: cannot set {_scope_text({name: value})}: {why}")
    return errors


def apply_owner_at(dfd: int, name: bytes, meta: Result, p: bytes) -> list[str]:
    """Owner and group of a symlink (they are all a link keeps)."""
    uid = _id_of("u", *meta["owner"]) if "owner" in meta else -1
    gid = _id_of("g", *meta["group"]) if "group" in meta else -1
    if uid == -1 and gid == -1:
        return []
    try:
        os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
    except OSError as e:
        return [f"{show(p)}: cannot set owner {_owner_text(meta)}: {e.strerror}"]
    return []


def _owner_text(meta: Result) -> str:
    parts = [str(meta[k][1] or meta[k][0]) for k in ("owner", "group") if k in meta]
    return ":".join(parts) if "owner" in meta else ":" + parts[0]


def _scope_text(xattrs: dict[bytes, bytes]) -> str:
    acl = [n for n in xattrs if n in ACL_XATTRS]
    other = [show(n) for n in xattrs if n not in ACL_XATTRS]
    return ", ".join((["its ACL"] if acl else []) + (["xattr " + ", ".join(other)] if other else []))


def _digest(fd: int) -> str | None:
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
    except OSError:
        return None


def version_name(name: bytes, why: bytes, stamp: bytes, n: int = 0) -> bytes:
    """The name a version of `name` is kept under: report~20261206-141927~deleted.txt (the `-N`
    after the stamp when that second's name is taken). The extension stays last, so the copy
    opens like the file; a long name loses the end of its stem, never the tag."""
    stem, ext = _stem_ext(name)
    tag = b"~" + stamp + (b"-%d" % n if n else b"") + b"~" + why
    return stem[: _NAME_MAX - len(tag) - len(ext)] + tag + ext


def _stem_ext(name: bytes) -> tuple[bytes, bytes]:
    """A name split where its version's tag goes: the extension (16 bytes at most) stays last."""
    dot = name.rfind(b".")
    return (name[:dot], name[dot:]) if dot > 0 and len(name) - dot <= 16 else (name, b"")


def _version_stem(name: bytes) -> bytes:
    """What every version_name of `name` starts with, whatever its tag (the stem as cut for the
    longest tag and extension)."""
    return _stem_ext(name)[0][: _NAME_MAX - 64]


_VERSION_RE = re.compile(rb"^(.*)~(\d{8}-\d{6})(?:-(\d+))?~(deleted|replaced|conflict)(\.[^.]*)?$", re.S)


def parse_version(name: bytes) -> tuple[bytes, bytes, int, bytes] | None:
    """(the kept file's own name, stamp, N, why) from a version_name, else None."""
    m = _VERSION_RE.match(name)
    if m is None:
        return None
    return m.group(1) + (m.group(5) or b""), m.group(2), int(m.group(3) or 0), m.group(4)


def check_why(why: str, op: str) -> bytes:
    """A reason to keep a version, from the wire: one of WHYS, else the op is refused."""
    if why.encode() not in WHYS:
        raise OpError(errno.EINVAL, f"{op}: no such reason to keep a version: {why!r}")
    return why.encode()


def version_stamp(when: float | None = None) -> bytes:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(when)).encode()


def prune_choice(versions: list[tuple[bytes, bytes, int]], cutoff: bytes | None, keep: int) -> list[bytes]:
    """Which of one path's versions (stored name, stamp, N) go: those kept before the day
    `cutoff` (YYYYmmdd), and all but the newest `keep` (0: no limit by count)."""
    ordered = sorted(versions, key=lambda v: (v[1], v[2]), reverse=True)
    return [
        name for i, (name, stamp, _n) in enumerate(ordered)
        if (cutoff is not None and stamp[:8] < cutoff) or (keep > 0 and i >= keep)
    ]  # fmt: skip


def _versions_in(dfd: int) -> list[tuple[bytes, tuple[bytes, bytes, int, bytes]]]:
    """(stored name, parse_version of it) of every version kept in one folder of the tree."""
    return _versions_of(map(os.fsencode, os.listdir(dfd)))


def _versions_of(names: Iterable[bytes]) -> list[tuple[bytes, tuple[bytes, bytes, int, bytes]]]:
    out = []
    for n in names:
        v = parse_version(n)
        if v is not None:
            out.append((n, v))
    return out


def _free_name(dfd: int, name: bytes, naming: Callable[[int], list[bytes]], taken: set[bytes] | None = None) -> bytes:
    """The first naming(n)[0], for n = 0, 1, ..., such that no name of naming(n) is taken in dfd
    (the others reserve a number: a version's N is counted across its reasons, see
    Ops._keep_version); `taken`: dfd's names as just listed, read instead of asking the disk."""
    held: Callable[[bytes], bool] = taken.__contains__ if taken is not None else lambda c: _lexists_at(dfd, c)
    for n in range(100_000):
        candidates = naming(n)
        if not any(map(held, candidates)):
            return candidates[0]
    raise OSError(errno.EEXIST, f"no free name for {show(name)}")


def _lexists_at(dfd: int, name: bytes) -> bool:
    try:
        os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    return True


def _keep_as(
    sfd: int, name: bytes, dfd: int, naming: Callable[[int], list[bytes]], link: bool = False,
    taken: set[bytes] | None = None,
) -> bytes:  # fmt: skip
    """Put entry `name` of sfd into dfd under the first free name there (see _free_name) and
    return the name used; with `link`, as a hard link, the entry staying (OSError where there
    are none). Never over an entry: another process keeping versions in the same place (a
    `tether sync` beside the running job files the same incoming run) may take a name between
    the look and the move, and a rename would silently replace the version there. A hard link
    fails on a taken name instead, so a file moves under a private name first and is linked to
    its free name; a dir is renamed (only an empty dir could be replaced: no version lost).
    `taken` (dfd's names as just listed) is the first look; after a miss, the disk is asked."""
    if link:
        return _link_free(sfd, name, dfd, name, naming, taken)
    if stat.S_ISDIR(os.lstat(name, dir_fd=sfd).st_mode):
        for _ in range(1000):
            kept = _free_name(dfd, name, naming, taken)
            try:
                os.rename(name, kept, src_dir_fd=sfd, dst_dir_fd=dfd)
                return kept
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
            taken = None
        raise OSError(errno.EEXIST, f"no free name for {show(name)}")
    tmp = _tmp_name()
    os.rename(name, tmp, src_dir_fd=sfd, dst_dir_fd=dfd)
    try:
        kept = _link_free(dfd, tmp, dfd, name, naming, taken)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise  # kept under its private name: found, never replaced
        kept = _free_name(dfd, name, naming)  # no hard links here: renamed, as the only way left
        os.rename(tmp, kept, src_dir_fd=dfd, dst_dir_fd=dfd)
        return kept
    os.unlink(tmp, dir_fd=dfd)
    return kept


def _link_free(
    sfd: int, name: bytes, dfd: int, base: bytes, naming: Callable[[int], list[bytes]],
    taken: set[bytes] | None = None,
) -> bytes:  # fmt: skip
    """A hard link to `name` under the first free name for `base`; a name taken since the look
    fails the link (EEXIST), and the next free one is tried, looked up on the disk."""
    for _ in range(1000):
        kept = _free_name(dfd, base, naming, taken)
        try:
            os.link(name, kept, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            return kept
        except FileExistsError:
            taken = None
    raise OSError(errno.EEXIST, f"no free name for {show(base)}")


def holds_nothing(path: str | bytes) -> bool:
    """Whether the directory at `path` holds nothing but tether's own folder (a path that does
    not exist holds nothing; a file is not a directory that does)."""
    try:
        with os.scandir(to_bytes(path)) as it:
            return all(e.name == META_DIR for e in it)
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False


def _open_below(dfd: int, parts: list[bytes]) -> int:
    """An fd of the directory parts below dfd, never following a symlink on the way."""
    fd = os.dup(dfd)
    try:
        for c in parts:
            nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_at(dfd: int, name: bytes) -> bool:
    """Remove name (a whole tree if a real dir) relative to dfd without following symlinks.

    Iterative, so deep trees cannot hit the recursion limit.  False if name was absent.
    """
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return True
    stack = [(dfd, name, os.open(name, _DIR_FLAGS, dir_fd=dfd))]
    try:
        while stack:
            pfd, dname, fd = stack[-1]
            child = None
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        child = os.fsencode(entry.name)
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:
                stack.append((fd, child, os.open(child, _DIR_FLAGS, dir_fd=fd)))
                continue
            stack.pop()
            os.close(fd)
            os.rmdir(dname, dir_fd=pfd)
    finally:
        for _, _, fd in stack:
            os.close(fd)
    return True


def _only_excluded(dfd: int, name: bytes, rel: bytes, rules: Rules) -> bool:
    """Whether the folder `name` of dfd (the replica's `rel`) holds nothing the rules let through
    (at any depth; an empty folder is something: a pass would have synced it)."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        if not entries:
            return False
        for sub, is_dir in entries:
            path = rel + b"/" + os.fsencode(sub)
            if rules.excluded(path, is_dir):
                continue
            if not is_dir or not _only_excluded(fd, os.fsencode(sub), path, rules):
                return False
        return True
    finally:
        os.close(fd)


class Rules:
    """The job's exclude/include rules as the agent applies them where watches are placed:
    (regex, include, dir_only) triples compiled by tether's filters, last match wins."""

    def __init__(self, rules: list[list[Any]] | None) -> None:
        import re

        self.rules = [(re.compile(r[0], re.DOTALL), bool(r[1]), bool(r[2])) for r in rules or []]

    def excluded(self, rel: bytes, is_dir: bool) -> bool:
        if not self.rules:
            return False
        text = rel.decode("utf-8", "surrogateescape")
        verdict = False
        for rx, include, dir_only in self.rules:
            if (is_dir or not dir_only) and rx.fullmatch(text) is not None:
                verdict = not include
        return verdict


class _Inotify:
    """Recursive inotify on the root (ctypes, stdlib only): which paths changed.

    Excluded directories are never watched and excluded names never reported.  A directory
    that cannot be watched (the watch limit) is reported as lost, and an overflowed queue or a
    moved root asks for a full pass: the caller is never left to silence."""

    _MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800  # modify..move_self
    _ADD = _MASK | 0x01000000 | 0x02000000  # IN_ONLYDIR | IN_DONT_FOLLOW
    _ISDIR, _OVERFLOW, _IGNORED, _UNMOUNT, _SELF = 0x40000000, 0x4000, 0x8000, 0x2000, 0x400 | 0x800
    _EVENT = struct.Struct("iIII")
    SETTLE = 0.003  # a save is a burst of events microseconds apart: one answer covers it

    def __init__(self, root: bytes, rules: list[list[Any]] | None = None) -> None:
        import ctypes
        import ctypes.util

        self._ctypes = ctypes
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.root = root
        self.rules = Rules(rules)
        self.lost: list[tuple[bytes, str, int]] = []  # directories that could not be watched: why, errno
        self.full = self._moved_root = False
        self.fd = -1
        self._start()

    def _start(self) -> None:
        """Watches from the root path down (again, after the root was moved away or swapped)."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OpError(self._ctypes.get_errno(), "inotify_init1 failed")
        self.wds: dict[int, bytes] = {}  # watch descriptor -> directory relative to the root
        self._add_tree(b"")

    def _add_tree(self, top: bytes) -> None:
        stack = [top]
        while stack:
            rel = stack.pop()
            path = self.root + b"/" + rel if rel else self.root
            wd = self._libc.inotify_add_watch(self.fd, path, self._ADD)
            if wd < 0:
                code = self._ctypes.get_errno()
                if code not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # not gone meanwhile: lost
                    why = "the inotify watch limit is reached" if code == errno.ENOSPC else os.strerror(code)
                    self.lost.append((rel, why, code))
                continue
            self.wds[wd] = rel
            try:
                with os.scandir(path) as it:
                    for de in it:
                        if de.is_dir(follow_symlinks=False):
                            sub = rel + b"/" + de.name if rel else de.name
                            if not (not rel and de.name == META_DIR) and not self.rules.excluded(sub, True):
                                stack.append(sub)
            except OSError:
                continue

    def wait(self, timeout: float) -> Result:
        """Changed paths (relative bytes) once something happened, or none after timeout."""
        import select

        paths: set[bytes] = set()
        if b"" not in self.wds.values():  # the root was gone: watch it again once it is back
            self._start()
            self.full = self.full or b"" in self.wds.values()
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready:
            self._drain(paths)
            ready, _, _ = select.select([self.fd], [], [], self.SETTLE)
        if self.full and self._moved_root:
            self._moved_root = False
            self._start()  # the watches follow the old tree: start over on whatever holds the path now
        full, lost = self.full, self.lost
        self.full, self.lost = False, []
        return {
            "paths": [to_wire(p) for p in sorted(paths)],
            "full": full,
            "lost": [(to_wire(d), w, c) for d, w, c in lost],
        }

    def _drain(self, paths: set[bytes]) -> None:
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            off = 0
            while off < len(buf):
                wd, mask, _cookie, length = self._EVENT.unpack_from(buf, off)
                name = buf[off + 16 : off + 16 + length].rstrip(b"\0")
                off += 16 + length
                if mask & self._OVERFLOW:
                    self.full = True
                    continue
                rel = self.wds.get(wd)
                if rel is None:
                    continue
                if mask & self._IGNORED:  # the watch is gone (its dir was removed or moved away)
                    del self.wds[wd]
                    continue
                if not name:  # the watched dir itself
                    if rel == b"" and mask & (self._SELF | self._UNMOUNT):
                        self.full = self._moved_root = True  # the root moved away or was unmounted
                    continue
                p = rel + b"/" + name if rel else name
                is_dir = bool(mask & self._ISDIR)
                if (not rel and name == META_DIR) or self.rules.excluded(p, is_dir):
                    continue
                paths.add(p)
                if is_dir and mask & (0x100 | 0x80):  # a dir created or moved in: watch inside it too
                    self._add_tree(p)


# ---------------------------------------------------------------------- dispatch and framing

_PATH_ARGS = ("path", "old", "new", "target", "trash_root", "backup_root", "skip", "staged")  # bytes on arrival
_LIST_ARGS = ("paths", "argv", "tops")


def _handlers(ops: Ops) -> dict[str, Callable[..., Any]]:
    return {
        "hello": ops.hello,
        "put": ops.put,
        "symlink": ops.symlink,
        "mkdir": ops.mkdir,
        "set_meta": ops.set_meta,
        "move": ops.move,
        "remove": ops.remove,
        "trash": ops.trash,
        "prune_versions": ops.prune_versions,
        "fold_trash": ops.fold_trash,
        "kept": ops.kept,
        "stat": lambda paths: {"entries": ops.stat(paths)},  # replies are always objects
        "run": ops.run,
        "df": ops.df,
        "empty": ops.empty,
        "scan": ops.scan,
        "hash": ops.hash,
        "read": ops.read,
        "meta": ops.meta,
        "install": ops.install,
        "entry": ops.entry,
        "discard": ops.discard,
        "rename": ops.rename,
        "lock": ops.lock,
        "unlock": ops.unlock,
        "watch": ops.watch,
    }


def dispatch(ops: Ops, op: str, args: dict[str, Any], body: bytes) -> Result:
    """Run one request and build its reply; never raises, so one bad request cannot kill the agent."""
    try:
        handler = _handlers(ops).get(op)
        if handler is None:
            raise OpError(errno.ENOSYS, f"unknown operation {op!r}")
        kwargs = dict(args)
        for k in _PATH_ARGS:
            if k in kwargs:
                kwargs[k] = to_bytes(kwargs[k])
        for k in _LIST_ARGS:
            if k in kwargs:
                kwargs[k] = [to_bytes(v) for v in kwargs[k]]
        if op in ("put", "install", "scan"):
            kwargs["data"] = body
        result = handler(**kwargs)
        data = result.pop("data", None) if isinstance(result, dict) else None
        if isinstance(data, bytes):  # file content travels in the frame body, not the JSON
            return {"ok": True, "result": result, "_body": data}
        return {"ok": True, "result": result}
    except OpError as e:
        return {"ok": False, "error": e.message, "errno": e.errno}
    except OSError as e:
        return {"ok": False, "error": f"{op}: {e.strerror or e}", "errno": e.errno}
    except Exception as e:  # a bug or a malformed request: report it, keep serving
        return {"ok": False, "error": f"agent error in {op}: {type(e).__name__}: {e}", "errno": None}


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One message: lengths, JSON header (bytes values as surrogateescaped str), body."""
    h = json.dumps(header, separators=(",", ":"), default=_json_default).encode("ascii")
    return _FRAME.pack(len(h), len(body)) + h + body


def _json_default(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        return to_wire(bytes(value))
    raise TypeError(f"cannot send {type(value).__name__} in a message")


def read_exact(f: IO[bytes], n: int) -> bytes | None:
    """Exactly n bytes, or None on a clean EOF before the first byte (EOFError mid-way)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            if got == 0:
                return None
            raise EOFError(f"stream ended inside a message ({got} of {n} bytes)")
        got += k
    return bytes(buf)


def read_frame(f: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next message, or None at EOF."""
    head = read_exact(f, _FRAME.size)
    if head is None:
        return None
    hlen, blen = _FRAME.unpack(head)
    if hlen > MAX_HEADER:
        raise EOFError(f"message header of {hlen} bytes: stream out of sync")
    h = read_exact(f, hlen) if hlen else b""
    body = (read_exact(f, blen) if blen else b"") or b""
    if h is None:
        raise EOFError("stream ended inside a message")
    header = json.loads(h.decode("ascii"))
    if not isinstance(header, dict):
        raise EOFError("message header is not an object")
    return header, body


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    """The agent loop: the first message is hello (with root), then requests in order until EOF."""
    out.write(MAGIC)
    out.flush()
    first = read_frame(inp)
    if first is None:
        return 0
    header, _ = first
    rid = header.get("id")
    args = header.get("args") or {}
    if header.get("op") != "hello" or "root" not in args:
        out.write(encode_frame({"id": rid, "ok": False, "error": "the first message must be hello with a root"}))
        out.flush()
        return 2
    _arm(args.get("crash_at"), args.get("crash_log"))
    try:
        ops = Ops(to_bytes(args["root"]), create=bool(args.get("create")))
    except OpError as e:
        out.write(encode_frame({"id": rid, "ok": False, "error": e.message, "errno": e.errno}))
        out.flush()
        return 2
    reply = dispatch(ops, "hello", {"version": args.get("version")}, b"")
    out.write(encode_frame(dict(reply, id=rid)))
    out.flush()
    if not reply["ok"]:
        return 2
    while True:
        frame = read_frame(inp)
        if frame is None:
            return 0
        header, body = frame
        reply = dispatch(ops, str(header.get("op")), header.get("args") or {}, body)
        data = reply.pop("_body", None)
        if data is not None:  # bytes came back, maybe none (an empty file): "body" tells b"" from no data
            reply["body"] = True
        out.write(encode_frame(dict(reply, id=header.get("id")), data or b""))
        out.flush()


def main() -> None:
    """Entry point on the far side: stdout is reserved for frames, stray prints go to stderr."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    try:
        rc = serve(sys.stdin.buffer, out)
    except (EOFError, BrokenPipeError) as e:
        sys.stderr.write(f"tether agent: {e}\n")
        rc = 3
    sys.exit(rc)


if __name__ == "__main__":
    main()
