"""One side of a bisync: an endpoint with its agent (in-process for local, over ssh otherwise)."""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tether.agent_remote import to_bytes, to_wire
from tether.bisync.plan import Entry, Raw
from tether.endpoints import ReplicaSpec
from tether.errors import LockedError, TetherError
from tether.forked import forked
from tether.ssh import SshOptions
from tether.transport.agent import AgentClient, AgentDown, AgentError, Request

if TYPE_CHECKING:
    from tether.bisync.config import BisyncJob
    from tether.dirs import Dirs

META = ".tether"
VERSIONS = f"{META}/versions"  # every kept version, one layout (agent_remote.version_name)
TMP = f"{META}/tmp"  # transfers land here, then the agent renames them into place
LOCK = f"{META}/lock"


def threaded(fn: Callable[[], Any], name: str) -> Callable[[], Any]:
    """Start fn() in a thread; the returned function waits for its result (or raises its error)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, fn()))
        except BaseException as e:
            out.append((False, e))

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()

    def wait() -> Any:
        t.join()
        ok, value = out[0]
        if not ok:
            raise value
        return value

    return wait


def ssh_for(dirs: Dirs, job: BisyncJob) -> SshOptions:
    ssh = SshOptions.from_env(dirs)
    return SshOptions(ssh.socket_dir, job.ssh_config) if job.ssh_config else ssh


def prestart(job: BisyncJob, dirs: Dirs) -> None:
    """Start the agents of the job's ssh replicas now: their far side's start-up (a shell, a
    Python) then overlaps loading the rest of tether and the state; `Replica.open` takes them."""
    for endpoint in (job.path1, job.path2):
        if endpoint.caps.far_agent and endpoint.ssh_host:
            with contextlib.suppress(TetherError):  # a bad name: the connect reports it in full
                AgentClient.prestart_ssh(ssh_for(dirs, job), endpoint.ssh_host, job.python)


def entry_of(row: Sequence[Any], link: bytes | None = None) -> Entry:
    """An Entry from the agent's [type, size, mtime_ns, mode, ino] form."""
    return Entry(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), link)


class Replica:
    """A replica and its agent.  An ssh agent connects in the background while the local side
    is opened and its state loaded; the first call that needs it waits.  With `early_lock`,
    the ssh agent takes the lock and scans the whole replica as soon as it is up, long before
    the engine asks (the state is still loading then): `start_scan` compares that listing
    with the known entries here instead of sending them over."""

    def __init__(
        self, label: str, endpoint: ReplicaSpec, connect: Callable[[], AgentClient], early_lock: str | None = None
    ) -> None:
        self.label = label
        self.endpoint = endpoint
        self._agent: AgentClient | None = None
        self.locked = False
        self.warnings: list[str] = []
        self._error: BaseException | None = None
        self._early_lock = early_lock if endpoint.caps.far_agent else None
        self._early: list[dict[str, Any] | AgentError] = []  # the replies to the early lock and scan
        if endpoint.caps.in_process:
            self._agent = self._checked(connect)
            self._thread: threading.Thread | None = None
        else:
            self._thread = threading.Thread(target=self._connect, args=(connect,), name=f"connect-{label}", daemon=True)
            self._thread.start()

    def _checked(self, connect: Callable[[], AgentClient]) -> AgentClient:
        try:
            return connect()
        except AgentError as e:
            raise TetherError(
                f"{self.label} {self.endpoint} cannot be opened: {e}",
                "is the disk mounted and the path right? tether does not create a replica that vanished",
            ) from None

    def _connect(self, connect: Callable[[], AgentClient]) -> None:
        try:
            self._agent = agent = self._checked(connect)
            if self._early_lock is not None:
                lock: Request = ("lock", {"path": LOCK, "owner": self._early_lock}, b"")
                self._early = agent.pipeline([lock, self._scan_request(agent, b"")])
        except BaseException as e:
            self._error = e

    @property
    def agent(self) -> AgentClient:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._agent is not None
        return self._agent

    @classmethod
    def open(
        cls,
        label: str,
        endpoint: ReplicaSpec,
        ssh: SshOptions,
        *,
        create: bool,
        python: str = "auto",
        early_lock: str | None = None,
    ) -> Replica:
        return cls(label, endpoint, endpoint.connector(ssh, python, create=create), early_lock)

    @property
    def host(self) -> str:
        return str(self.agent.info.get("host") or "localhost")

    @property
    def root(self) -> str:
        return str(self.agent.info.get("root") or "")

    def __str__(self) -> str:
        return f"{self.label} ({self.endpoint})"

    @property
    def down(self) -> bool:
        """Its agent could not connect, or its channel died since (ssh gave up on the host): this
        replica must be opened again."""
        if self._thread is not None and self._thread.is_alive():
            return False  # still connecting: the first call waits for it
        return self._error is not None or (self._agent is not None and self._agent.down)

    def close(self, wait: bool = True) -> None:
        """wait=False: an ssh agent is left to end by itself (its lock was released already)."""
        if self._thread is not None:
            self._thread.join()
        if self._agent is not None:
            if wait:
                self._agent.close()
            else:
                self._agent.close_soon()

    def call(self, op: str, body: bytes = b"", **args: Any) -> dict[str, Any]:
        return self.agent.call(op, body, **args)

    def pipeline(self, requests: Sequence[Request]) -> list[dict[str, Any] | AgentError]:
        return self.agent.pipeline(requests)

    def start_scan(
        self,
        lock_owner: str | None,
        known: Callable[[], dict[bytes, Raw]],
        keep: Callable[[dict[bytes, Raw]], dict[bytes, Raw]],
        tops: list[bytes] | None = None,
    ) -> Callable[[], tuple[dict[bytes, Raw], set[bytes], int, list[bytes], int | None]]:
        """Lock the replica (when lock_owner is given) and scan it against `known` (what the
        state recorded on this side), so that only differences travel; `keep` drops filtered
        paths; over ssh the lock and the scan share one round trip.  The returned function
        waits for (changed or new entries, known paths gone, entries seen, unreadable dirs, the
        mtime from which on an entry is racily clean, None when the side does not say).  With `tops`,
        only those paths and what lies below them.  A local replica is scanned in a forked
        child, a remote one by its agent while a thread here waits, so both sides proceed at
        once."""

        def finish(rows: dict[bytes, Raw], gone: Any, count: int, bad: list[bytes], t0: int | None) -> Any:
            return keep(rows), set(gone), count, bad, t0

        if self.endpoint.caps.in_process:
            if lock_owner is not None:
                self.lock(lock_owner)
            ops = self.agent.ops  # type: ignore[attr-defined]
            # the lock is touched here: a forked child closes every descriptor of ours, the lock's
            # too, and would fall back to our clock less 2 s (re-hashing every recent file)
            floor = ops.racy_from()

            def local() -> Any:
                rows, bad, gone, count, t0 = ops.scan_raw(META.encode(), known(), tops, floor)
                return finish(rows, gone, count, [p for p, _why in bad], t0)

            if tops is not None:  # a few paths: a fork would cost more than the scan
                done = local()
                return lambda: done
            return forked(local)

        def compared(ents: dict[bytes, Raw], count: int, bad: list[bytes], t0: int | None) -> Any:
            """A whole listing reduced here to its difference from the known entries."""
            before = known()
            changed = {p: e for p, e in ents.items() if before.get(p) != e}
            gone = [p for p in before if p not in ents]
            return finish(changed, gone, count, bad, t0)

        def remote() -> Any:
            cloud = not self.endpoint.caps.rsync
            early = self._early_lock is not None and tops is None
            mine = None if cloud or early else known()
            body = b"" if mine is None else marshal.dumps(mine)  # packed while the agent starts up
            agent = self.agent
            scan = self._scan_request(agent, body, tops)
            if early:  # lock and whole scan taken as the agent came up
                self._early_lock = None
                got, res = self._early
                self._early = []
                self._took_lock(got)
            elif lock_owner is None:
                (res,) = agent.pipeline([scan])
            elif cloud:  # a listing of a remote is slow: not taken for a lock that is refused
                self.lock(lock_owner)
                (res,) = agent.pipeline([scan])
            else:  # one round trip; a refused lock discards the scan taken beside it
                got, res = agent.pipeline([("lock", {"path": LOCK, "owner": lock_owner}, b""), scan])
                self._took_lock(got)
            if isinstance(res, AgentError):
                raise res
            if scan[1].get("fmt") == "marshal":
                rows, bad, gone, count, t0 = marshal.loads(res["data"])
                bad = [p for p, _why in bad]
                return compared(rows, count, bad, t0) if mine is None else finish(rows, gone, count, bad, t0)
            # another Python (or rclone): the full listing, compared here
            ents: dict[bytes, Raw] = {}
            for r in res["entries"]:
                lk = r[6]
                ents[to_bytes(r[0])] = (r[1], r[2], r[3], r[4], r[5], None if lk is None else to_bytes(lk))
            bad = [to_bytes(u[0]) for u in res.get("unreadable", [])]
            return compared(ents, len(ents), bad, res.get("now"))

        return threaded(remote, f"scan-{self.label}")

    @staticmethod
    def _scan_request(agent: AgentClient, known: bytes, tops: list[bytes] | None = None) -> Request:
        """marshal (with the known entries, if any, to compare on the far side) when both ends
        run the same Python, else the JSON listing; `tops` for a narrow scan."""
        narrow: dict[str, Any] = {} if tops is None else {"tops": [wire(t) for t in tops]}
        if agent.info.get("py") == list(sys.version_info[:2]):
            return ("scan", {"skip": META, "fmt": "marshal", **narrow}, known)
        return ("scan", {"skip": META, **narrow}, b"")

    def start_hash(self, paths: list[bytes]) -> Callable[[], list[str | None]]:
        """Content digests of paths, started now; the returned function waits for them.  Many
        local files are hashed in a forked child, so the two sides use both cores (a first run
        compares every file); a remote side's agent works while a thread here waits."""
        wired = [wire(p) for p in paths]
        if self.endpoint.caps.in_process and len(paths) > 256:
            ops = self.agent.ops  # type: ignore[attr-defined]
            return forked(lambda: ops.hash(paths)["digests"])
        return threaded(lambda: self.call("hash", paths=wired)["digests"], f"hash-{self.label}")

    def lock(self, owner: str) -> None:
        """The replica's lock file (an flock its agent holds); exit 4 naming the holder if taken."""
        (got,) = self.pipeline([("lock", {"path": LOCK, "owner": owner}, b"")])
        self._took_lock(got)

    def _took_lock(self, got: dict[str, Any] | AgentError) -> None:
        if isinstance(got, AgentError):
            if got.errno == errno.EAGAIN:  # held by a live process
                raise LockedError(f"{self} is in use: {got}", "wait for the other run to finish") from None
            raise TetherError(f"{self} cannot be locked: {got}", "check the replica's permissions") from None
        self.locked = bool(got.get("locked"))
        if not self.locked:
            self.warnings.append(f"{self} is not locked: {got.get('reason')}; nothing can be written there")

    def unlock(self) -> None:
        if self.locked:
            self.locked = False
            with contextlib.suppress(TetherError):  # a dead channel: the far side's lock died with its agent
                self.call("unlock", path=LOCK)

    def rsync_root(self) -> str:
        """The replica root as rsync names it (a trailing slash: the contents)."""
        return self.endpoint.rsync_root(self.root)


def wire(path: bytes) -> str:
    return to_wire(path)


def shown(path: bytes) -> str:
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = ["LOCK", "META", "TMP", "VERSIONS", "AgentDown", "AgentError", "Replica", "entry_of", "shown", "wire"]
