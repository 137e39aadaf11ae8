"""The Rclone replica endpoint, and the spec parser that tells `remote:path` from `host:/path`
(which names are rclone's remotes is read in transport/rclone_bin.py, light enough to be asked
before the rest of tether loads)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from tether.endpoints.caps import RCLONE, Caps
from tether.endpoints.pool import PoolEnd, parse_pool
from tether.endpoints.spec import AnyEndpoint, Endpoint, parse_endpoint
from tether.errors import UsageError
from tether.transport.rclone_bin import remote_spec

if TYPE_CHECKING:
    from tether.ssh import SshOptions
    from tether.transport.agent import AgentClient
    from tether.transport.rclone_target import RcloneTarget


class Rclone(NamedTuple):
    remote: str  # the remote's name, without the colon
    path: str  # path inside the remote

    @property
    def caps(self) -> Caps:
        return RCLONE

    @property
    def kind(self) -> str:
        return "rclone"

    @property
    def local_path(self) -> str | None:
        return None

    @property
    def ssh_host(self) -> str | None:
        return None

    @property
    def local_folders(self) -> tuple[str, ...]:
        return ()

    @property
    def empty_source_hint(self) -> str:
        """What to say when an empty source would empty this target (the pass is refused)."""
        return "is the source's disk mounted? pass --force if the target really should be emptied"

    @property
    def fs(self) -> str:
        """The remote at this path, as rclone's command line takes it."""
        return f"{self.remote}:{self.path}"

    def open_target(self, *, create: bool, version_later: bool = False) -> RcloneTarget:
        """A mirror's writer into this remote (the agent, with the mirror's words)."""
        from tether.transport.rclone_target import RcloneTarget

        return RcloneTarget.connect(f"{self.remote}:", self.path, create, version_later=version_later)

    def connector(self, ssh: SshOptions, python: str = "auto", *, create: bool = False) -> Callable[[], AgentClient]:
        """How to open this endpoint's agent: tether's operations over `rclone rcd`."""
        from tether.transport.rclone_agent import RcloneAgent

        return lambda: RcloneAgent.connect(f"{self.remote}:", self.path, create=create)

    def rsync_root(self, root: str) -> str:
        raise UsageError(f"{self} is an rclone remote: rsync cannot reach it", "files go through rclone's agent")

    def overlaps(self, other: AnyEndpoint) -> bool:
        return (
            isinstance(other, Rclone) and other.remote.lower() == self.remote.lower() and _nested(self.path, other.path)
        )

    def key(self) -> str:
        return f"rclone:{self.remote}:{os.path.normpath(self.path) if self.path else ''}"

    def __str__(self) -> str:
        return f"{self.remote}:{self.path}"


ReplicaSpec = Endpoint | Rclone | PoolEnd
RcloneReached = Rclone | PoolEnd  # what rclone reaches: a remote, or a pool's union


def parse_replica(spec: str, *, base: str | None = None) -> ReplicaSpec:
    """A local path, ssh `host:/path`, rclone `remote:path`, or a pool `pool:NAME[/path]`."""
    pool = parse_pool(spec)
    if pool is not None:
        return pool
    remote = remote_spec(spec)
    return Rclone(*remote) if remote is not None else parse_endpoint(spec, base=base)


def by_rsync(ep: ReplicaSpec) -> Endpoint | None:
    """The endpoint as rsync reaches it (a local folder or an ssh host), where rsync can."""
    return ep if ep.caps.rsync else None  # type: ignore[return-value]


def as_rclone(ep: AnyEndpoint) -> RcloneReached | None:
    """The endpoint as rclone reaches it (a remote, or a pool's union), where it is one: the
    mirror reaches such a target through its own scan and rcd (rsync cannot)."""
    return ep if isinstance(ep, (Rclone, PoolEnd)) else None


def _nested(a: str, b: str) -> bool:
    x, y = os.path.normpath("/" + a), os.path.normpath("/" + b)
    return x == y or x.startswith(y.rstrip("/") + "/") or y.startswith(x.rstrip("/") + "/")


def check_pair(p1: ReplicaSpec, p2: ReplicaSpec) -> None:
    """Two replicas that overlap would sync a tree into itself; two remote ones need rsync between hosts."""
    if p1.local_path is not None and p2.local_path is not None:
        if p1.overlaps(p2):
            raise UsageError(
                f"path1 {p1} and path2 {p2} overlap (one is inside the other)",
                "give two separate directories",
            )
        return
    if p1.local_path is not None or p2.local_path is not None:
        local, other = (p1, p2) if p1.local_path is not None else (p2, p1)
        here = os.path.realpath(local.local_path or "")
        for folder in other.local_folders:  # a pool member on this machine: the same test
            f = os.path.realpath(folder)
            if f == here or f.startswith(here.rstrip("/") + "/") or here.startswith(f.rstrip("/") + "/"):
                raise UsageError(f"{local} and {other} overlap: {f} is a member of {other}",
                                 "give a folder outside the pool's members")  # fmt: skip
        return
    if not (p1.caps.rsync and p2.caps.rsync):
        raise UsageError(
            f"path1 {p1} and path2 {p2}: an rclone remote pairs with a local directory only",
            "run tether where one replica is a local directory",
        )
    if p1.overlaps(p2) and os.path.normpath(p1.path) == os.path.normpath(p2.path):
        raise UsageError(f"path1 and path2 are the same place ({p1})", "give two separate directories")
    raise UsageError(
        f"path1 {p1} and path2 {p2} are both remote",
        "run tether on one of the two hosts, so that one replica is local",
    )
