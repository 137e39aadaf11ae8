"""Agent for a replica on an rclone remote (`remote:path`), driven through a private `rclone rcd`.

Why rcd: one long-lived rclone keeps the remote's sessions and tokens open, so an operation is
one HTTP call on a kept-alive loopback connection (~0.6 ms) instead of an rclone start and a
fresh login.  Replies have the shape `agent_remote.dispatch` gives, so the engine drives local,
ssh and rclone replicas through the same `AgentClient.pipeline`; requests run in order, except
that a run of read-only ones (read, entry, hash) goes a few at a time.

What a remote cannot do, and what is done instead:
- no flock: the lock is a file naming its holder.  A holder on this host counts while its pid
  lives; one on another host until this host has seen its file unchanged for 10 minutes by its
  own clock (held locks are rewritten every 2 minutes; see lock_seen.py: two hosts' clocks are
  never compared).  No backend offers compare-and-swap, so: a lock is written through the
  staging dir and a server-side move (never half visible) and read back after; it is claimed
  (moved aside) before it is judged, deleted or replaced, so a lock someone else holds is never
  deleted, and replaced only in one call's gap on backends whose rename replaces (see _refresh).
  A lock found taken over makes the agent's writes fail (LockLost): the pass stops there.
- no atomic replace on most backends: where the remote moves server-side, a file is uploaded to
  .tether/tmp and moved into place, so an interrupted upload never shows as a half file.
- mtimes only at the backend's precision (1 s for sftp); mode and inode are reported as 0.
- rc 1.60 cannot set an mtime alone: the bytes go up again carrying the new mtime.
- no change feed: `watch` sleeps and answers "changed", so rclone sides are polled.
- no symlinks, no commands, names must be UTF-8.
Paths never meet a shell: rclone is started with an argument list, everything else is JSON.
"""

from __future__ import annotations

import base64
import calendar
import collections
import concurrent.futures
import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from tether.agent_remote import (
    PROTOCOL_VERSION,
    OpError,
    Rules,
    check_why,
    parse_version,
    prune_choice,
    show,
    split_path,
    to_bytes,
    version_name,
    version_stamp,
)
from tether.errors import LockedError
from tether.transport import rcd
from tether.transport.agent import AgentClient, AgentDown, AgentError, Request
from tether.transport.lock_seen import Clock, LocksSeen, boot_clock
from tether.transport.rclone_bin import CONTROL, rclone_program

if TYPE_CHECKING:
    import http.client

MIN_VERSION = (1, 60)
LOCK_STALE_S = 600.0  # a lock from another host seen unchanged this long (by this host's clock) is abandoned
LOCK_REFRESH_S = 120.0  # how often a held lock file is rewritten, so it never looks abandoned
STAGING = ".tether/tmp"  # uploads land here first, then move into place
STAGING_MAX_AGE_S = 86400.0  # leftovers of interrupted uploads older than this are removed
NO_MTIME_NS = 86400 * 10**9  # a precision this coarse means the backend keeps no mtimes (rclone says 100 years)
_START_TIMEOUT = 30.0
_CLOSE_TIMEOUT = 5.0
_STDERR_KEEP = 64 << 10
_IDLE_S = 20.0  # a kept-alive connection unused this long is closed, not reused
_READERS = 4  # concurrent rc calls for a run of read-only requests
_READ_ONLY = frozenset({"read", "entry", "hash"})
_WRITES = frozenset({"install", "discard", "rename", "set_meta", "prune_versions"})
_NAME_MAX = 255
_ADDRESS = re.compile(rb"Serving remote control on (http://[^\s/]+)")
_TIME = re.compile(r"(\d{4,})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")
_HOLDER = re.compile(r"\(host (.*), pid (\d+)\)\s*$")
_STAMP = re.compile(r"[0-9]{8}")
Item = dict[str, Any]  # one operations/list or operations/stat item


class RcError(Exception):
    """An rc call that rclone answered with an error; errno guessed from its status and message."""

    def __init__(self, method: str, status: int, message: str) -> None:
        super().__init__(f"{method}: {message}")
        self.status = status
        self.message = message
        self.errno = _errno_of(status, message)


class LockLost(AgentDown, LockedError):
    """The replica's lock was taken over while a pass held it: the pass must stop writing there.
    An AgentDown, so that no caller takes it for one path's failure and the pass ends (its state
    is as of the last batch, so the next pass continues); exit 4, as for a lock found taken.  The
    agent itself stays usable: reads go on, and taking the lock again clears it."""


# rclone's rc errors are text: the first row whose words appear in the message gives the errno
_ERRNO_WORDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("not found", "no such file"), errno.ENOENT),
    (("not a directory", "is a file"), errno.ENOTDIR),
    (("not empty",), errno.ENOTEMPTY),
    (("being updated",), errno.ESTALE),
    (("read-only", "read only"), errno.EROFS),
    (("permission denied",), errno.EACCES),
    (("exists", "precondition failed"), errno.EEXIST),  # 412: webdav refused to move onto a taken name
)


def _errno_of(status: int, message: str) -> int:
    if status == 404:
        return errno.ENOENT
    m = message.lower()
    return next((code for words, code in _ERRNO_WORDS if any(w in m for w in words)), errno.EIO)


def parse_mtime(text: str) -> int:
    """rclone's RFC 3339 time (0-9 fraction digits, any offset) as integer ns, exactly: no float."""
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"unexpected time {text!r} from rclone")
    secs = calendar.timegm((*(int(g) for g in m.groups()[:6]), 0, 0, 0))
    tz = m.group(8)
    if tz not in ("Z", "z"):
        offset = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        secs -= offset if tz[0] == "+" else -offset
    return secs * 1_000_000_000 + int((m.group(7) or "").ljust(9, "0"))


def _entry(item: Item) -> list[Any]:
    """An rc item in the agent's [type, size, mtime_ns, mode, ino] form; dirs carry no size or time."""
    if item.get("IsDir"):
        return ["d", 0, 0, 0, 0]
    return ["f", int(item["Size"]), parse_mtime(item["ModTime"]), 0, 0]


def _version_name(name: str, why: str, stamp: str, taken: set[str]) -> str:
    """agent_remote.version_name for a remote's (UTF-8) names: the first one not taken, numbered
    after every version of that name kept the same second (a lower number freed by pruning
    would read as the oldest)."""
    own = _parse_version(version_name(name.encode(), why.encode(), stamp.encode()).decode("utf-8", "ignore"))
    used = [v[2] for v in map(_parse_version, taken) if v and own and v[:2] == own[:2]]
    for n in range(max(used, default=-1) + 1, 100_000):
        got = version_name(name.encode(), why.encode(), stamp.encode(), n).decode("utf-8", "ignore")
        if got not in taken:
            return got
    raise OpError(errno.EEXIST, f"no free name for a version of {name}")


def _parse_version(name: str) -> tuple[str, str, int] | None:
    """(the kept file's own name, stamp, N) of a version's name on a remote."""
    v = parse_version(name.encode())
    return None if v is None else (v[0].decode("utf-8", "replace"), v[1].decode(), v[2])


def _glob_escape(name: str) -> str:
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", name)


def _parent(rel: str) -> tuple[str, str]:
    """(dir, name) of a relative remote path; dir is "" at the top."""
    d, _, n = rel.rpartition("/")
    return d, n


def _pid_alive(pid: int) -> bool:
    """A holder on this host lives as long as its pid does."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


class RcloneAgent(AgentClient):
    """The agent operations on `remote:root`, as rc calls to a private `rclone rcd`."""

    lock_refresh_s = LOCK_REFRESH_S  # per class, so tests can shorten it
    locks_seen: Path | None = None  # where foreign locks are noted (default: the state dir); tests set it
    lock_clock: Clock = staticmethod(boot_clock)  # this host's boot clock; tests move it

    def __init__(self, remote: str, root: str) -> None:
        self.remote_name = remote[:-1] if remote.endswith(":") else remote
        super().__init__(f"{self.remote_name}:{root}")
        self.fs = f"{self.remote_name}:{root}"
        self.info = {"host": self.remote_name, "root": root, "version": PROTOCOL_VERSION}
        self.precision_ns = 1  # these four come from rclone at connect
        self.hashes: list[str] = []
        self.can_move = False
        self.features: dict[str, Any] = {}  # operations/fsinfo's Features
        self.version = ""
        self._version_reply: Callable[[], dict[str, Any]] | None = None  # core/version under way (see _open)
        self._proc: subprocess.Popen[bytes] | None = None
        self._url = ""
        self._user, self._password, self._auth = "", "", ""  # rcd's random credentials, set by _spawn
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []  # kept-alive connections to rcd
        self._idle_lock = threading.Lock()
        self._tmp = tempfile.mkdtemp(prefix="tether-rclone-")
        self._stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_thread: threading.Thread | None = None
        self._address = threading.Event()
        self._down: AgentDown | None = None
        self._closing = threading.Event()
        self._held: dict[str, str] = {}  # lock path -> the content we wrote there
        self._lost: str | None = None  # why writes must stop: a held lock was taken over (see _lose)
        self._held_lock = threading.Lock()
        self._refresher: threading.Thread | None = None
        # test seam: called with a step's name where another client's change matters (see _step)
        self.step_hook: Callable[[str], None] | None = None
        self._handlers: dict[str, Callable[..., dict[str, Any]]] = {
            "lock": self._lock_op,
            "unlock": self._unlock_op,
            "scan": self._scan,
            "read": self._read,
            "fetch": self._fetch,
            "install": self._install,
            "entry": self._entry_op,
            "discard": self._discard,
            "rename": self._rename,
            "set_meta": self._set_meta,
            "hash": self._hash,
            "prune_versions": self._prune_versions,
            "kept": self._kept,
            "watch": self._watch,
            "run": self._run_op,
            "df": self._df,
        }

    # ------------------------------------------------------------------ start and stop

    @classmethod
    def connect(
        cls, remote: str, root: str, create: bool, rclone: str | None = None, *, version_later: bool = False
    ) -> Self:
        """Start rcd, open the root (made when create), learn the backend's mtime precision and
        features.  With version_later, the caller calls check_version before it writes anything
        (the version is rcd's slowest answer: it then overlaps the caller's first reads)."""
        if not remote.rstrip(":") or "\0" in remote or "\0" in root:
            raise AgentError(f"bad rclone remote {remote!r} with root {root!r}")
        try:
            root.encode("utf-8")
        except UnicodeEncodeError:
            raise AgentError(f"rclone root {show(to_bytes(root))} is not valid UTF-8", errno.EILSEQ) from None
        started = time.perf_counter()
        agent = cls(remote, root)
        try:
            agent._spawn(rclone or rclone_program())
            agent._open(create, version_later)
        except BaseException:
            agent.close()
            raise
        agent.connect_seconds = time.perf_counter() - started
        return agent

    def _spawn(self, rclone: str) -> None:
        """rcd on a port the kernel picks (read back from its log: no race for a free port), or
        the one `rcd.prestart` started for this program."""
        try:
            started = rcd.take(rclone) or rcd.spawn(rclone)
        except OSError as e:
            raise AgentError(
                f"cannot start {rclone}: {e.strerror or e}", None, "install rclone 1.60 or newer"
            ) from None
        self._proc = started.proc
        self._user, self._password = started.user, started.password
        self._auth = "Basic " + base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        assert self._proc.stderr is not None
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(self._proc.stderr,), name=f"rcd-stderr-{self.remote_name}", daemon=True
        )
        self._stderr_thread.start()
        if not self._address.wait(_START_TIMEOUT) or not self._url:
            raise AgentError(f"rclone rcd did not start: {self._stderr_last() or 'no message'}")

    def _open(self, create: bool, version_later: bool = False) -> None:
        if not version_later:
            version = self._rc("core/version", {})
            self._version_reply = lambda: version
            self.check_version()
        else:  # core/version takes rcd 10-25 ms (it gathers the OS's details): asked beside the rest
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rclone-version-{self.remote_name}")
            self._version_reply = pool.submit(self._rc, "core/version", {}).result
            pool.shutdown(wait=False)  # the one call still runs; its result is waited for by check_version
        try:
            self._open_root(create)
        except AgentError:
            self.check_version()  # an rclone too old says so first
            raise

    def check_version(self) -> None:
        """Wait for rclone's version (asked at connect) and refuse one too old; at most once."""
        if self._version_reply is None:
            return
        reply, self._version_reply = self._version_reply, None
        version = reply()
        self.version = str(version.get("version", ""))
        if tuple(version.get("decomposed") or (0, 0))[:2] < MIN_VERSION:
            raise AgentError(f"rclone {self.version} is too old", None, "install rclone 1.60 or newer")

    def _open_root(self, create: bool) -> None:
        where = f"rclone remote {self.fs}"
        try:
            item = self._rc("operations/stat", {"fs": self.fs, "remote": ""}).get("item")
        except RcError as e:
            if e.errno != errno.ENOENT:
                raise AgentError(f"{where}: {e.message}", e.errno) from None
            item = None
        if item is None:
            if not create:
                raise AgentError(f"{where}: not found", errno.ENOENT)
            self.check_version()  # nothing is written by an rclone too old
            try:
                self._rc("operations/mkdir", {"fs": self.fs, "remote": ""})
            except RcError as e:
                raise AgentError(f"{where} cannot be created: {e.message}", e.errno) from None
        elif not item.get("IsDir"):
            raise AgentError(f"{where}: not a directory", errno.ENOTDIR)
        fsinfo = self._rc("operations/fsinfo", {"fs": self.fs})
        self.precision_ns = int(fsinfo.get("Precision") or 1)
        self.hashes = [str(h) for h in fsinfo.get("Hashes") or []]
        self.features = dict(fsinfo.get("Features") or {})
        self.can_move = bool(self.features.get("Move"))

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        """Find rcd's address in its log, then keep the log's tail to explain a failure."""
        for line in stream:
            if not self._url and (m := _ADDRESS.search(line)):
                self._url = m.group(1).decode()
                self._address.set()
            self._stderr_tail.append(line)
            self._stderr_size += len(line)
            while self._stderr_size > _STDERR_KEEP and len(self._stderr_tail) > 1:
                self._stderr_size -= len(self._stderr_tail.popleft())
        self._address.set()  # rcd is gone: stop waiting for it

    def stderr_text(self) -> str:
        """What rcd logged so far (the last 64 KB)."""
        return b"".join(self._stderr_tail).decode("utf-8", "replace")

    def _stderr_last(self) -> str:
        return "; ".join(self.stderr_text().strip().splitlines()[-3:])

    def close(self) -> None:
        """Release held locks, stop rcd, remove the private temp dir; safe to call twice."""
        self._closing.set()
        if not self._lock.acquire(timeout=_CLOSE_TIMEOUT):
            if self._proc is not None:
                self._proc.kill()  # a call is stuck on the remote: this makes it fail with AgentDown
            self._lock.acquire()
        try:
            if self._down is None and self._url:
                for rel in list(self._held):
                    with contextlib.suppress(Exception):
                        self._unlock_op(rel)
            if self._down is None:
                self._down = AgentDown(f"rclone agent for {self.fs}: closed")
            if self._proc is not None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=_CLOSE_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                if self._stderr_thread is not None:
                    self._stderr_thread.join(timeout=2.0)
                if self._proc.stderr is not None and not (self._stderr_thread and self._stderr_thread.is_alive()):
                    self._proc.stderr.close()
            if self._refresher is not None:
                self._refresher.join(timeout=_CLOSE_TIMEOUT)
            with self._idle_lock:
                for conn, _since in self._idle:
                    conn.close()
                self._idle.clear()
            shutil.rmtree(self._tmp, ignore_errors=True)
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ rc calls

    def _rc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One rc call; RcError when rclone reports a failure, AgentDown when rcd is unreachable."""
        return self._post(method, f"/{method}", json.dumps(params).encode(), "application/json")

    def _post(self, method: str, target: str, body: bytes, ctype: str) -> dict[str, Any]:
        """POST on a kept-alive connection (http.client, not urllib: urllib opens and closes one per
        call, a TIME_WAIT socket each, which a big sync could run out of); never via a proxy.
        Imported here: http.client brings ssl and email (~40 ms), which a pass that never calls
        rcd (nothing to send) should not pay."""
        import http.client

        if self._down is not None:
            raise self._down
        headers = {"Content-Type": ctype, "Authorization": self._auth}
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request("POST", target, body, headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected) as e:
                conn.close()
                if not (reused and attempt == 1):  # else rcd had closed it while idle: the request never ran
                    raise self._went_down(f"during {method} ({e})") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise self._went_down(f"during {method} ({e})") from None
        with self._idle_lock:
            self._idle.append((conn, time.monotonic()))
        try:
            out = json.loads(raw) if raw.strip() else {}
        except ValueError:
            out = {"error": raw[:200].decode("utf-8", "replace")}
        if not isinstance(out, dict):
            out = {}
        if resp.status != 200:
            raise RcError(method, resp.status, str(out.get("error") or resp.reason))
        return out

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, whether it was used before): a recent idle one, else a new one.  rcd closes
        connections idle for about a minute (seen: 59 s kept, 100 s closed), so older ones are dropped."""
        with self._idle_lock:
            while self._idle:
                conn, since = self._idle.pop()
                if time.monotonic() - since < _IDLE_S:
                    return conn, True
                conn.close()
        import http.client

        host, _, port = self._url.removeprefix("http://").rpartition(":")
        return http.client.HTTPConnection(host, int(port)), False

    def _went_down(self, when: str) -> AgentDown:
        rc = self._proc.poll() if self._proc is not None else None
        state = "running" if rc is None else f"exit {rc}"
        self._down = AgentDown(
            f"rclone rcd for {self.fs} failed {when}, {state}: {self._stderr_last() or 'no message'}",
            "the next run starts a new one",
        )
        return self._down

    def _copy(self, src_fs: str, src: str, dst_fs: str, dst: str, fresh: bool = True) -> None:
        """copyfile; fresh (the usual case) copies even when the destination looks the same."""
        params: dict[str, Any] = {"srcFs": src_fs, "srcRemote": src, "dstFs": dst_fs, "dstRemote": dst}
        if fresh:  # otherwise rclone skips a same-size, same-mtime destination whatever its bytes
            params["_config"] = {"NoCheckDest": True}
        self._rc("operations/copyfile", params)

    def _download(self, rel: str, local: str) -> None:
        self._copy(self.fs, rel, "/", local.lstrip("/"))

    def _upload(self, local: str, rel: str, fresh: bool = True) -> None:
        self._copy("/", local.lstrip("/"), self.fs, rel, fresh)

    def _move(self, src: str, dst: str, replace: bool = False) -> None:
        """Server-side move.  Without replace, dst is a name believed free and rclone is told not to
        look there: left to itself it deletes a dst that differs from src before moving, so a file
        someone made there would be lost; now the backend's rename decides (webdav and OpenSSH's
        sftp refuse a taken name, rclone's own sftp server and local disks replace it).  With
        replace, rclone compares: the same bytes only take src's mtime, others are replaced."""
        params: dict[str, Any] = {"srcFs": self.fs, "srcRemote": src, "dstFs": self.fs, "dstRemote": dst}
        if not replace:
            params["_config"] = {"NoCheckDest": True}
        self._rc("operations/movefile", params)

    def _put_new(self, src: str, rel: str) -> bool:
        """Move src to rel unless rel is taken (False then, src left where it was).  The stat is
        the last look before the rename; where the backend's rename refuses a taken name the
        refusal checks again, where it replaces (rclone's own sftp server, local disks) a name
        taken in the gap between the two calls is replaced: that gap is the window left."""
        if self._stat(rel) is not None:
            return False
        self._step("name free")
        try:
            self._move(src, rel)
        except RcError:
            if self._stat(rel) is not None:
                return False
            raise
        return True

    def _claim(self, rel: str) -> str | None:
        """Move rel to a private name in the staging dir (one server-side rename); None if rel is
        not there.  What is then read under the private name no other process can change, so a
        decision taken on it (delete it, replace it) concerns exactly the object read."""
        private = _join(STAGING, secrets.token_hex(8))
        try:
            self._move(rel, private)
        except RcError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return private

    def _give_back(self, private: str, rel: str) -> None:
        """Put a claimed object back at rel; if rel was taken meanwhile, leave it in the staging
        dir (removed by purge_trash after a day) rather than replace or delete anything."""
        with contextlib.suppress(RcError):
            self._put_new(private, rel)

    def _delete(self, rel: str) -> None:
        self._rc("operations/deletefile", {"fs": self.fs, "remote": rel})

    def _stat(self, rel: str) -> Item | None:
        item = self._rc("operations/stat", {"fs": self.fs, "remote": rel, "opt": {"noMimeType": True}}).get("item")
        return item if isinstance(item, dict) else None

    def _list(self, rel: str, **opt: bool) -> list[Item]:
        """Items under rel (Path relative to the root); [] when rel does not exist."""
        try:
            got = self._rc("operations/list", {"fs": self.fs, "remote": rel, "opt": {"noMimeType": True, **opt}})
        except RcError as e:
            if e.errno == errno.ENOENT:
                return []
            raise
        return [it for it in got.get("list") or [] if isinstance(it, dict)]

    def _put_small(self, rel: str, data: bytes) -> None:
        """operations/uploadfile: a multipart form holding one file; its mtime becomes now."""
        folder, name = _parent(rel)
        boundary = secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file0"; '
            f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        query = urllib.parse.urlencode({"fs": self.fs, "remote": folder})
        method = "operations/uploadfile"
        self._post(method, f"/{method}?{query}", body, f"multipart/form-data; boundary={boundary}")

    # ------------------------------------------------------------------ requests

    def _exchange(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        """In order; a run of read-only requests goes a few at a time (each waits on the remote)."""
        if self._down is not None:
            raise self._down
        out: list[dict[str, Any]] = []
        i = 0
        while i < len(requests):
            j = i
            while j < len(requests) and requests[j][0] in _READ_ONLY:
                j += 1
            if j - i > 1:
                with concurrent.futures.ThreadPoolExecutor(min(_READERS, j - i)) as pool:
                    out += pool.map(lambda r: self._one(*r), requests[i:j])
                i = j
            else:
                out.append(self._one(*requests[i]))
                i += 1
        return out

    def _one(self, op: str, args: dict[str, Any], body: bytes) -> dict[str, Any]:
        """One request, answered like `agent_remote.dispatch`: failures become error replies."""
        if op in _WRITES:
            self._guard()
        handler = self._handlers.get(op)
        try:
            if handler is None:
                raise OpError(errno.ENOSYS, f"unknown operation {op!r}")
            kwargs = dict(args)
            if op in ("install", "put"):  # put: the mirror's word (transport/rclone_target.py)
                kwargs["data"] = body
            result = handler(**kwargs)
        except AgentDown:
            raise
        except OpError as e:
            return {"ok": False, "error": e.message, "errno": e.errno}
        except RcError as e:
            what = args.get("path", args.get("old"))
            where = f" {show(to_bytes(what))}" if isinstance(what, str | bytes) else ""
            return {"ok": False, "error": f"{op}{where}: {e.message}", "errno": e.errno}
        except OSError as e:
            return {"ok": False, "error": f"{op}: {e.strerror or e}", "errno": e.errno}
        except Exception as e:  # a bug or a malformed request: report it, keep serving
            return {"ok": False, "error": f"agent error in {op}: {type(e).__name__}: {e}", "errno": None}
        data = result.pop("data", None)
        if isinstance(data, bytes):
            return {"ok": True, "result": result, "_body": data}
        return {"ok": True, "result": result}

    # ------------------------------------------------------------------ helpers

    def _rel(self, path: str | bytes) -> str:
        """A path under the root as rclone takes it: relative, no '..', UTF-8."""
        p = to_bytes(path)
        split_path(p)
        try:
            rel = p.decode("utf-8")
        except UnicodeDecodeError:
            raise OpError(errno.EILSEQ, f"{show(p)}: not valid UTF-8; rclone remotes keep UTF-8 names") from None
        if CONTROL.search(rel):  # rclone's name encodings turn them into other characters (\n into U+240A)
            raise OpError(errno.EILSEQ, f"{show(p)}: control characters in names do not survive rclone")
        return rel

    def _local(self, path: str | bytes, what: str) -> str:
        """A local absolute path (rclone's `/` filesystem takes it without the leading slash)."""
        p = to_bytes(path)
        if not p.startswith(b"/") or b"\0" in p:
            raise OpError(errno.EINVAL, f"{what} {show(p)}: a local absolute path is needed")
        try:
            return os.path.abspath(p.decode("utf-8"))
        except UnicodeDecodeError:
            raise OpError(errno.EILSEQ, f"{what} {show(p)}: not valid UTF-8") from None

    def _guard(self) -> None:
        """LockLost once a held lock was found taken over: checked before each write, and again
        after an upload, which can outlast a refresher's round."""
        if self._lost is not None:
            raise LockLost(self._lost)

    def _step(self, name: str) -> None:
        """Test seam: tests make a change here, as another client of the remote could at that moment."""
        if self.step_hook is not None:
            self.step_hook(name)

    def _scratch(self) -> str:
        return os.path.join(self._tmp, secrets.token_hex(8))

    def _check_expect(self, rel: str, expect: list[Any] | None, dir_ok: bool = False) -> Item | None:
        """The entry must still be what the pass planned against: [type, size, mtime_ns] or None
        (absent; with dir_ok, a directory there is no race either)."""
        item = self._stat(rel)
        if expect is None:
            if item is not None and not (dir_ok and item.get("IsDir")):
                raise self._appeared(rel)
            return item
        if item is None:
            raise OpError(errno.ENOENT, f"{rel} vanished during the pass")
        t, size, mtime = _entry(item)[:3]
        if t != expect[0] or (t != "d" and (size != expect[1] or mtime != expect[2])):
            raise OpError(errno.ESTALE, f"{rel} changed during the pass")
        return item

    def _appeared(self, rel: str) -> OpError:
        """Why a name the pass found free is taken: another client made it meanwhile, or the
        remote takes it for a name it holds already that differs only in Unicode normalisation
        (rclone's sftp server keeps one of two such twins, and its stat answers for either)."""
        folder, name = _parent(rel)
        held = [str(it.get("Name", "")) for it in self._list(folder)]
        if name not in held:
            key = unicodedata.normalize("NFC", name)
            twin = next((n for n in held if unicodedata.normalize("NFC", n) == key), None)
            if twin is not None:
                shown_twin = f"{folder}/{twin}" if folder else twin
                return OpError(
                    errno.EEXIST,
                    f"{rel}: {self.remote_name} takes it for {shown_twin}, the same name once Unicode-normalised;"
                    " left out there",
                )
        return OpError(errno.EEXIST, f"{rel} appeared during the pass")

    def _still(self, rel: str, size: int, mtime_ns: int) -> None:
        self._check_expect(rel, ["f", size, mtime_ns])

    def _entry_now(self, rel: str) -> list[Any]:
        item = self._stat(rel)
        if item is None:
            raise OpError(errno.ENOENT, f"{rel} vanished right after it was written")
        return _entry(item)

    def _fetch_checked(self, rel: str, size: int, mtime_ns: int, local: str) -> None:
        """Download rel to local, only if it is still the scanned version: rclone gives the copy
        the remote's mtime, so the copy's own size and mtime say which version arrived."""
        try:
            self._download(rel, local)
        except RcError:
            item = self._stat(rel)
            if item is None:
                raise OpError(errno.ENOENT, f"{rel}: No such file or directory") from None
            if item.get("IsDir"):
                raise OpError(errno.ESTALE, f"{rel} changed during the pass") from None
            raise
        st = os.stat(local)
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            with contextlib.suppress(OSError):
                os.unlink(local)
            raise OpError(errno.ESTALE, f"{rel} changed during the pass")

    def _cat(self, rel: str) -> str | None:
        """A small remote file as text; None when absent."""
        tmp = self._scratch()
        try:
            self._download(rel, tmp)
            with open(tmp, "rb") as f:
                return f.read(1 << 16).decode("utf-8", "replace")
        except RcError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _df(self) -> dict[str, Any]:
        """Free and total bytes, as the backend tells them (operations/about); a backend that
        keeps no quota (sftp without statvfs, webdav without RFC 4331) says none: -1."""
        try:
            about = self._rc("operations/about", {"fs": self.fs})
        except RcError:
            return {"free": -1, "total": -1}
        return {"free": int(about.get("free", -1)), "total": int(about.get("total", -1))}

    def _rmdir(self, rel: str) -> None:
        try:
            self._rc("operations/rmdir", {"fs": self.fs, "remote": rel})
        except RcError as e:
            if e.errno == errno.ENOENT:
                raise OpError(errno.ENOENT, f"{rel} vanished during the pass") from None
            if self._list(rel):
                raise OpError(errno.ENOTEMPTY, f"delete {rel}: Directory not empty") from None
            raise

    def _clear_dir(self, rel: str, broot: str, why: str, leftovers: list[list[Any]] | None) -> str | None:
        """Make way for a file where a folder the pass emptied stands, as the local agent does:
        what it still holds is either excluded by the job (`leftovers`, its rules: the folder goes
        whole into the versions: where it lies now is returned) or was made during the pass (it
        stays; the next pass sees it)."""
        try:
            self._rmdir(rel)
            return None
        except OpError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
        if leftovers is None or not _only_excluded(rel, self._list(rel, recurse=True), Rules(leftovers)):
            raise OpError(
                errno.ENOTEMPTY,
                f"{rel}: the folder here holds files made during the pass; it stays, the next pass looks again",
            )
        return self.keep_version(rel, broot, why, move=self._move_dir)

    def sub_fs(self, rel: str) -> str:
        """The fs string of a directory below the root (for sync/move and sync/copy)."""
        if not rel:
            return self.fs
        return self.fs + ("" if self.fs.endswith((":", "/")) else "/") + rel

    def _move_dir(self, src: str, dst: str) -> None:
        """A whole folder, server-side (file by file where the backend has no DirMove)."""
        self._rc("sync/move", {"srcFs": self.sub_fs(src), "dstFs": self.sub_fs(dst), "deleteEmptySrcDirs": True,
                               "createEmptySrcDirs": True})  # fmt: skip
        with contextlib.suppress(RcError):  # left where the backend moved file by file
            self._rc("operations/rmdir", {"fs": self.fs, "remote": src})

    def keep_version(
        self, rel: str, root: str, why: str, keep: int = 0, move: Callable[[str, str], None] | None = None
    ) -> str:
        """Move the entry at rel (a file, unless `move` moves a folder too) into the versions
        tree at root, as agent_remote's _keep_version does (one layout for every endpoint); with
        `keep`, that path's versions beyond the newest `keep` go. Returns where it lies."""
        folder, name = _parent(rel)
        vdir = _join(root, folder)
        there = {str(it["Name"]) for it in self._list(vdir)}
        dest = _join(vdir, _version_name(name, why, version_stamp().decode(), there))
        (move or self._move)(rel, dest)
        own = _parse_version(dest.rpartition("/")[2])
        if keep > 0 and own is not None:
            mine = [(n.encode(), v[1].encode(), v[2]) for n in [*there, dest.rpartition("/")[2]]
                    if (v := _parse_version(n)) is not None and v[0] == own[0]]  # fmt: skip
            for old in prune_choice(mine, None, keep):
                with contextlib.suppress(RcError):
                    self._delete(_join(vdir, old.decode()))
        return dest

    def _source_file(self, data: bytes, mtime_ns: int | None, source: str | bytes | None) -> tuple[str, bool]:
        """(local file to upload, whether it is our scratch copy).  A given source must still have
        the mtime the pass saw, or it changed since the scan."""
        if source is not None:
            src = self._local(source, "install from")
            try:
                st = os.lstat(src)  # a symlink now stands there: not the file the pass saw
            except FileNotFoundError:
                raise OpError(errno.ENOENT, f"{src} vanished during the pass") from None
            if not stat.S_ISREG(st.st_mode) or (mtime_ns is not None and st.st_mtime_ns != mtime_ns):
                raise OpError(errno.ESTALE, f"{src} changed during the pass")
            return src, False
        tmp = self._scratch()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mtime_ns is not None:
            os.utime(tmp, ns=(time.time_ns(), int(mtime_ns)))
        return tmp, True

    def _place(self, local: str, rel: str, before: Callable[[], None], replace: bool = False) -> bool:
        """Put local at rel; False (nothing placed) if rel was taken again after `before` made room.

        Where the remote moves server-side, local is uploaded to the staging dir and moved into
        place, so no half file is ever visible, and `before` (the check that rel is still what the
        pass planned, then making room) runs after the upload, right before the move: an edit made
        during a long upload is seen.  What is left: an edit landing between that check and the
        move aside goes to the backups as the old version (kept, not lost), and a file made at rel
        after that is replaced only in `_put_new`'s gap.  replace (set_meta: the same bytes stay at
        rel) lets rclone compare instead: the same bytes only take the new mtime.  Without
        server-side moves, `before` runs first and the upload goes straight to rel: there the
        whole upload is the window."""
        if not self.can_move:
            before()
            self._upload(local, rel, fresh=not replace)
            return True
        staged = _join(STAGING, secrets.token_hex(8))
        try:
            self._upload(local, staged)
            self._step("uploaded")
            self._guard()
            before()
            self._step("room made")
            if replace:
                self._move(staged, rel, replace=True)
            elif not self._put_new(staged, rel):
                return False
            staged = ""
        finally:
            if staged:
                with contextlib.suppress(RcError, AgentDown):
                    self._delete(staged)
        return True

    # ------------------------------------------------------------------ operations

    def _scan(self, skip: str | bytes = ".tether", fmt: str = "json") -> dict[str, Any]:
        """Every entry under the root; the top-level skip dir is not even listed (an rc filter).
        Names like `.tether-tmp-*` are user data here as in the local scan: tether's own files
        in flight live under .tether/tmp."""
        top = to_bytes(skip).decode("utf-8", "surrogateescape")
        params: dict[str, Any] = {"fs": self.fs, "remote": "", "opt": {"recurse": True, "noMimeType": True}}
        rules = [f"/{_glob_escape(top)}/**"] if top else []
        params["_filter"] = {"ExcludeRule": rules}
        entries: list[list[Any]] = []
        for it in self._rc("operations/list", params).get("list") or []:
            p = str(it["Path"])
            if top and (p == top or p.startswith(top + "/")):
                continue
            if it.get("IsDir"):
                entries.append([p, "d", 0, 0, 0, 0, None])
            else:
                entries.append([p, "f", int(it["Size"]), parse_mtime(it["ModTime"]), 0, 0, None])
        return {"entries": entries, "unreadable": []}

    def _read(self, path: str | bytes, size: int, mtime_ns: int) -> dict[str, Any]:
        rel = self._rel(path)
        tmp = self._scratch()
        try:
            self._fetch_checked(rel, int(size), int(mtime_ns), tmp)
            with open(tmp, "rb") as f:
                data = f.read()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return {"data": data, "mode": 0o644}

    def _fetch(self, path: str | bytes, size: int, mtime_ns: int, into: str | bytes) -> dict[str, Any]:
        """A big file straight into a local file (never whole in memory)."""
        rel = self._rel(path)
        dest = self._local(into, "fetch into")
        if os.path.lexists(dest):
            raise OpError(errno.EEXIST, f"fetch into {dest}: already exists")
        self._fetch_checked(rel, int(size), int(mtime_ns), dest)
        return {}

    def _install(
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
        source: str | bytes | None = None,
        why: str = "replaced",
        leftovers: list[list[Any]] | None = None,
    ) -> dict[str, Any]:
        """Create or replace path with a file (from data or the local file source) or a dir, if it
        is still as planned; a replaced file goes to the backups first.  Mode cannot be kept.
        A folder where the file goes is cleared as the local agent clears it (`_clear_dir`)."""
        rel = self._rel(path)
        if kind == "l":
            raise OpError(errno.EOPNOTSUPP, f"{rel}: symlinks cannot be stored on {self.remote_name}")
        if kind not in ("f", "d"):
            raise OpError(errno.EINVAL, f"install {rel}: unknown kind {kind!r}")
        broot = self._rel(backup_root)
        check_why(why, "install")
        if kind == "d":
            item = self._check_expect(rel, expect, dir_ok=True)
            if item is not None and item.get("IsDir"):
                return {"entry": _entry(item)}
            if item is not None:
                self.keep_version(rel, broot, why, keep)
            self._rc("operations/mkdir", {"fs": self.fs, "remote": rel})
            return {"entry": self._entry_now(rel)}
        local, scratch = self._source_file(data, mtime_ns, source)

        kept: list[str] = []  # a folder of excluded files kept as a version, said back

        def make_room() -> None:  # after the upload, right before the move into place
            item = self._check_expect(rel, expect)
            if item is not None and item.get("IsDir"):
                if (where := self._clear_dir(rel, broot, why, leftovers)) is not None:
                    kept.append(where)
            elif item is not None:
                self.keep_version(rel, broot, why, keep)

        try:
            if source is not None and self.can_move:
                self._check_expect(rel, expect)  # and before a long upload too, to fail early
            if not self._place(local, rel, make_room):
                if expect is None:
                    raise self._appeared(rel)
                raise OpError(errno.ESTALE, f"{rel} changed during the pass")
        finally:
            if scratch:
                with contextlib.suppress(OSError):
                    os.unlink(local)
        return {"entry": self._entry_now(rel), **({"kept": kept[0]} if kept else {})}

    def _entry_op(self, path: str | bytes) -> dict[str, Any]:
        item = self._stat(self._rel(path))
        return {"entry": None if item is None else _entry(item)}

    def _discard(self, path: str | bytes, expect: list[Any] | None, trash_root: str | bytes) -> dict[str, Any]:
        """Soft delete: a file is kept as a deleted version under trash_root; a dir goes only if empty."""
        rel = self._rel(path)
        troot = self._rel(trash_root)
        item = self._check_expect(rel, expect)
        if item is None:
            return {"trashed": None}
        if item.get("IsDir"):
            self._rmdir(rel)
            return {"trashed": None}
        return {"trashed": self.keep_version(rel, troot, "deleted")}

    def _rename(self, old: str | bytes, new: str | bytes, expect: list[Any] | None) -> dict[str, Any]:
        """Rename a file (a conflict copy), only if old is as planned and new is free."""
        o, n = self._rel(old), self._rel(new)
        item = self._check_expect(o, expect)
        if item is None:
            raise OpError(errno.ENOENT, f"{o} vanished during the pass")
        if item.get("IsDir"):
            raise OpError(errno.EISDIR, f"rename {o}: directories cannot be renamed on {self.remote_name}")
        if not self._put_new(o, n):
            raise OpError(errno.EEXIST, f"{n} appeared during the pass")
        return {"entry": self._entry_now(n)}

    def _set_meta(
        self,
        path: str | bytes,
        mode: int | None = None,
        mtime_ns: int | None = None,
        expect: list[Any] | None = None,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """A file's mtime, by sending its bytes again carrying it (rc 1.60 cannot set an mtime alone),
        only if the entry is still `expect` ([type, size, mtime_ns] as the pass planned; None: no
        check) holding the bytes whose `digest` the pass compared.  Mode is not kept on a
        remote; nothing to do for dirs, or where the backend keeps no mtimes."""
        rel = self._rel(path)
        item = self._stat(rel) if expect is None else self._check_expect(rel, expect)
        if item is None:
            raise OpError(errno.ENOENT, f"set_meta {rel}: No such file or directory")
        if mtime_ns is None or item.get("IsDir") or self.precision_ns >= NO_MTIME_NS:
            return {}
        want = int(mtime_ns)
        _t, size, have = _entry(item)[:3]
        if abs(have - want) < self.precision_ns:
            return {}  # already as close as this backend can hold it
        tmp = self._scratch()
        try:
            self._fetch_checked(rel, size, have, tmp)
            if digest is not None and _digest_file(tmp) != digest:
                raise OpError(errno.ESTALE, f"{rel} changed during the pass")
            os.utime(tmp, ns=(time.time_ns(), want))
            # rclone sees the same bytes (when it can hash both) and only sets the mtime.  Left: an
            # edit landing between _still's stat and rclone's own look at rel (its hashing included)
            self._place(tmp, rel, lambda: self._still(rel, size, have), replace=True)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return {}

    def _hash(self, paths: list[str | bytes]) -> dict[str, Any]:
        """blake2b-160 of each file, computed here after a download: the local agent's digest, so
        the two sides compare (None when a file cannot be read)."""
        out: list[str | None] = []
        for p in paths:
            tmp = self._scratch()
            try:
                self._download(self._rel(p), tmp)
                out.append(_digest_file(tmp))
            except (OpError, RcError, OSError):
                out.append(None)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return {"digests": out}

    def _kept(self, tops: list[str | bytes]) -> dict[str, Any]:
        """agent_remote's kept: every file below each of tops, [[path, size, mtime_ns], ...]."""
        out: list[list[Any]] = []
        for top in tops:
            for it in self._list(self._rel(top), recurse=True, filesOnly=True):
                out.append([str(it["Path"]), int(it["Size"]), parse_mtime(str(it["ModTime"]))])
        return {"entries": out}

    def _prune_versions(self, versions_root: str | bytes, days: int | None, keep: int = 0) -> dict[str, Any]:
        """agent_remote's prune_versions on a remote: versions kept before the day `days` days
        ago go, and per path all but the newest `keep`; the older layouts by age only; and
        staging leftovers older than a day."""
        vroot = self._rel(versions_root)
        cutoff = None if days is None else time.strftime("%Y%m%d", time.localtime(time.time() - days * 86400))
        groups: dict[tuple[str, str], list[tuple[bytes, bytes, int]]] = {}
        dirs: set[str] = set()  # versions that are folders kept whole: purged, not deleted
        for it in self._list(vroot, recurse=True):
            path = str(it["Path"])
            folder, name = _parent(path)
            if any(_parse_version(c) for c in folder.split("/")):
                continue  # inside a folder kept whole: it goes with that folder
            v = _parse_version(name)
            if v is not None:
                groups.setdefault((folder, v[0]), []).append((name.encode(), v[1].encode(), v[2]))
                if it.get("IsDir"):
                    dirs.add(path)
        pruned = 0
        for (folder, _name), group in groups.items():
            for old in prune_choice(group, None if cutoff is None else cutoff.encode(), keep):
                rel = _join(folder, old.decode())
                with contextlib.suppress(RcError):
                    if rel in dirs:
                        self._rc("operations/purge", {"fs": self.fs, "remote": rel})
                    else:
                        self._delete(rel)
                    pruned += 1
        if days is not None:
            pruned += self._purge_legacy(days)
        for it in self._list(STAGING, filesOnly=True):
            if time.time_ns() - parse_mtime(it["ModTime"]) > STAGING_MAX_AGE_S * 1e9:
                with contextlib.suppress(RcError):
                    self._delete(_join(STAGING, str(it["Name"])))
        return {"pruned": pruned}

    def _purge_legacy(self, days: int) -> int:
        """The older layouts: .tether/trash/<day>/ dirs and .tether/backups/<path>.<stamp> files
        more than `days` days old."""
        today = datetime.date.today()
        purged = 0
        for it in self._list(".tether/trash", dirsOnly=True):
            try:
                day = datetime.date.fromisoformat(str(it["Name"])[:10])
            except ValueError:
                continue  # not one of ours
            if (today - day).days > days:
                self._rc("operations/purge", {"fs": self.fs, "remote": _join(".tether/trash", str(it["Name"]))})
                purged += 1
        cutoff = time.strftime("%Y%m%d", time.localtime(time.time() - days * 86400))
        for it in self._list(".tether/backups", recurse=True, filesOnly=True):
            n = str(it["Name"])
            dot = n.rfind(".")
            stamp = n[dot + 1 : dot + 9]
            if dot > 0 and _STAMP.fullmatch(stamp) and stamp < cutoff:
                with contextlib.suppress(RcError):
                    self._delete(str(it["Path"]))
                    purged += 1
        return purged

    def _lock_op(self, path: str | bytes, owner: str) -> dict[str, Any]:
        """Take the lock file unless a live holder has it (see the module doc); EAGAIN naming it if
        so.  Ours is read back after writing: of two takers, the one whose lock stayed holds it."""
        rel = self._rel(path)
        mine = f"{owner} (host {socket.gethostname()}, pid {os.getpid()})\n"
        with self._held_lock:
            if rel in self._held:
                return {"locked": True}
            item = self._stat(rel)
            if item is not None:
                self._judge(rel, item)
            try:
                if self.can_move:
                    self._take(rel, mine, item is not None)
                else:  # no server-side move: written in place (an object store shows an upload whole)
                    self._step("lock read")
                    self._put_small(rel, mine.encode())
            except RcError as e:
                if e.errno == errno.EROFS:  # nothing can write here, so nothing to guard
                    return {"locked": False, "reason": "read-only remote"}
                raise
            self._step("lock written")
            back = self._cat(rel)
            if back != mine:  # another taker wrote after us: theirs
                raise OpError(errno.EAGAIN, f"locked by {(back or '').strip() or 'another process'}")
            self._held[rel] = mine
            self._lost = None
            if self._refresher is None:
                self._refresher = threading.Thread(
                    target=self._refresh_locks, name=f"rclone-lock-{self.remote_name}", daemon=True
                )
                self._refresher.start()
        return {"locked": True}

    def _judge(self, rel: str, item: Item, key: str | None = None) -> None:
        """EAGAIN naming the holder when the lock file at rel (item: its stat) has a live one;
        `key`: the lock's own path when rel is where it was claimed to."""
        if item.get("IsDir"):
            raise OpError(errno.EISDIR, f"{rel} is a directory, not a lock file")
        holder = (self._cat(rel) or "").strip()
        if not holder:
            return
        m = _HOLDER.search(holder)
        if m is not None and m.group(1) == socket.gethostname():
            if _pid_alive(int(m.group(2))):
                raise OpError(errno.EAGAIN, f"locked by {holder}")
            return
        seen = self._seen().unchanged_for(
            f"{self.fs}/{key or rel}", [str(item.get("ModTime")), item.get("Size"), holder]
        )
        if seen < LOCK_STALE_S:
            raise OpError(
                errno.EAGAIN,
                f"locked by {holder}; from another host, so it counts until this host has seen it unchanged for "
                f"{LOCK_STALE_S / 60:g} min (so far {seen:.0f} s)",
            )

    def _seen(self) -> LocksSeen:
        path = self.locks_seen
        if path is None:
            from tether.dirs import Dirs

            path = Dirs.from_env().state / "rclone-locks-seen.json"
        return LocksSeen(path, LOCK_STALE_S, self.lock_clock)

    def _take(self, rel: str, mine: str, there: bool) -> None:
        """Put our lock at rel through the staging dir.  A lock that is there (judged dead or
        abandoned) is claimed first and judged again where nobody can refresh it, so a holder
        that refreshed it meanwhile keeps it; ours then goes in only where no lock is."""
        staged = self._stage(mine)
        claimed: str | None = None
        try:
            if there and (claimed := self._claim(rel)) is not None:
                again = self._stat(claimed)
                try:
                    if again is not None:
                        self._judge(claimed, again, key=rel)
                except OpError:
                    self._give_back(claimed, rel)
                    claimed = None
                    raise
            self._step("lock read")
            if not self._put_new(staged, rel):  # another taker was quicker: theirs
                raise OpError(errno.EAGAIN, f"locked by {(self._cat(rel) or '').strip() or 'another process'}")
            staged = ""
        finally:
            for leftover in (staged, claimed):  # claimed: the dead holder's, judged dead twice
                if leftover:
                    with contextlib.suppress(RcError):
                        self._delete(leftover)

    def _stage(self, text: str) -> str:
        """text as a new file in the staging dir; its name."""
        staged = _join(STAGING, secrets.token_hex(8))
        self._put_small(staged, text.encode())
        return staged

    def _refresh_locks(self) -> None:
        """Rewrite each held lock file now and then, so no other host sees it as abandoned."""
        while not self._closing.wait(self.lock_refresh_s):
            self._refresh_round()

    def _refresh_round(self) -> None:
        """One round of the refresher (tests run it directly).  A lock found taken over or gone is
        given up, and the agent's writes fail from then on (see _lose)."""
        with self._held_lock:
            for rel, mine in list(self._held.items()):
                try:
                    if self.can_move:
                        self._refresh(rel, mine)
                        continue
                    # no server-side move: read, rewrite in place, read back; a lock taken between
                    # the read and the write is overwritten, and its taker sees ours when it reads back
                    now = self._cat(rel)
                    if now != mine:
                        self._lose(rel, now)
                        continue
                    self._step("lock read")
                    self._put_small(rel, mine.encode())
                    self._step("lock written")
                    if (now := self._cat(rel)) != mine:
                        self._lose(rel, now)
                except (RcError, AgentDown, OSError):
                    pass  # the next round tries again; a dead rcd ends the agent anyway

    def _refresh(self, rel: str, mine: str) -> None:
        """Replace our lock at rel by a fresh copy, never anyone else's.  The lock is claimed (moved
        aside) and read there: someone else's goes back; ours is replaced by a copy staged
        beforehand, moved in only where no lock is, then read back.  While it is aside (three
        calls) rel looks free, and a taker may take it: then we lose it, never both hold it; on a
        backend whose rename replaces a taken name, a lock taken in `_put_new`'s gap is replaced,
        and its taker, reading back, sees ours and backs off."""
        staged = self._stage(mine)
        claimed: str | None = None
        give_back = True  # on any failure before ours is in: the claimed lock goes back
        try:
            claimed = self._claim(rel)
            if claimed is None:
                self._lose(rel, None)
                return
            text = self._cat(claimed)
            if text != mine:
                self._lose(rel, text)
                return
            self._step("lock read")
            if not self._put_new(staged, rel):  # taken while ours was aside: the taker's stays
                give_back = False
                self._lose(rel, self._cat(rel))
                return
            staged, give_back = "", False
            self._step("lock written")
            if (now := self._cat(rel)) != mine:
                self._lose(rel, now)
        finally:
            if staged:
                with contextlib.suppress(RcError):
                    self._delete(staged)
            if claimed is not None and give_back:
                self._give_back(claimed, rel)
            elif claimed is not None:
                with contextlib.suppress(RcError):
                    self._delete(claimed)  # our old copy

    def _lose(self, rel: str, text: str | None) -> None:
        """Give up a held lock that another process took over (text: what stands there now) or
        removed; until a lock is taken again, every write fails with LockLost.  Under _held_lock."""
        self._held.pop(rel, None)
        holder = (text or "").strip()
        how = f"was taken over by {holder}" if holder else "was removed by another process"
        self._lost = f"lock on {self.fs} {how}; the pass stops, the next pass continues"

    def _unlock_op(self, path: str | bytes) -> dict[str, Any]:
        """Remove our lock, never anyone else's: it is claimed (moved aside), read there, and
        deleted only if ours, else put back."""
        rel = self._rel(path)
        with self._held_lock:
            mine = self._held.pop(rel, None)
            if mine is None:
                return {}
            if not self.can_move:  # read, then delete: a lock taken between the two is deleted
                if self._cat(rel) == mine:
                    self._step("lock read")
                    with contextlib.suppress(RcError):
                        self._delete(rel)
                return {}
            claimed = self._claim(rel)
            if claimed is None:
                return {}
            ours = False
            try:
                ours = self._cat(claimed) == mine
                self._step("lock read")
            finally:
                if ours:
                    with contextlib.suppress(RcError):
                        self._delete(claimed)
                else:
                    self._give_back(claimed, rel)
        return {}

    def _watch(self, timeout: float) -> dict[str, Any]:
        """No change feed on a remote: wait out the timeout and say "changed", so a pass polls it."""
        self._closing.wait(float(timeout))
        return {"changed": True}

    def _run_op(self, argv: list[str | bytes], timeout: float | None = None) -> dict[str, Any]:
        raise OpError(errno.EOPNOTSUPP, f"commands cannot run on an rclone remote ({self.remote_name})")


def _only_excluded(rel: str, items: list[Item], rules: Rules) -> bool:
    """Whether a folder's recursive listing (paths from the root) holds nothing the rules let
    through: every file excluded or below an excluded folder, no other folder left empty."""
    gone: list[str] = []  # excluded folders: what lies below them is theirs
    kept_dirs: set[str] = set()
    below: set[str] = set()
    for it in sorted(items, key=lambda i: str(i["Path"])):
        p = str(it["Path"])
        if any(p.startswith(g + "/") for g in gone):
            continue
        parent = p.rpartition("/")[0]
        while parent and parent != rel:
            below.add(parent)
            parent = parent.rpartition("/")[0]
        raw = p.encode("utf-8", "surrogateescape")
        if it.get("IsDir"):
            if rules.excluded(raw, True):
                gone.append(p)
            else:
                kept_dirs.add(p)
        elif not rules.excluded(raw, False):
            return False
    return bool(items) and kept_dirs <= below


def _digest_file(path: str) -> str:
    """The local agent's digest (blake2b-160), so that the two sides compare."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
