"""A pool as an endpoint: `pool:NAME` or `pool:NAME/sub/dir`, wherever an rclone remote is taken.

To rclone it is one union remote made from the pool's definition (pools/union.py); writes that
make new files are placed by tether on the members (pools/target.py). It declares rclone's
capabilities: the mirror and bisync reach it as they reach any rclone remote.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from tether.endpoints.caps import RCLONE, Caps
from tether.errors import UsageError

if TYPE_CHECKING:
    from tether.ssh import SshOptions
    from tether.transport.agent import AgentClient
    from tether.transport.rclone_target import RcloneTarget

PREFIX = "pool:"


class PoolEnd(NamedTuple):
    name: str
    path: str  # inside the pool
    remote: str  # the pool's union as rclone names a remote (the connection string, without its last ':')
    local_folders: tuple[str, ...] = ()  # its members that are folders on this machine (overlap checks)

    @property
    def caps(self) -> Caps:
        return RCLONE

    @property
    def kind(self) -> str:
        return "pool"

    @property
    def local_path(self) -> str | None:
        return None

    @property
    def ssh_host(self) -> str | None:
        return None

    @property
    def empty_source_hint(self) -> str:
        return (f"is the source's disk mounted? After a reinstall, bring the pool back first: `tether pool import"
                f" {self.name} SOURCE`; pass --force only if the pool really should be emptied")  # fmt: skip

    @property
    def fs(self) -> str:
        """The pool at this path, as rclone's command line takes it."""
        return f"{self.remote}:{self.path}"

    def open_target(self, *, create: bool, version_later: bool = False) -> RcloneTarget:
        """A mirror's writer into the pool: new files placed on its members."""
        from tether.dirs import Dirs
        from tether.pools.definition import load_pool
        from tether.pools.target import PoolTarget

        dirs = Dirs.from_env()
        index = (
            dirs.state / "pools" / self.name / f"held-{zlib.crc32(self.path.encode('utf-8', 'surrogateescape')):08x}"
        )
        return PoolTarget.open(load_pool(dirs, self.name), self.path, index, create=create, version_later=version_later)

    def connector(self, ssh: SshOptions, python: str = "auto", *, create: bool = False) -> Callable[[], AgentClient]:
        return lambda: self.open_target(create=create)

    def rsync_root(self, root: str) -> str:
        raise UsageError(f"{self} is a pool: rsync cannot reach it", "files go through rclone")

    def overlaps(self, other: object) -> bool:
        if not isinstance(other, PoolEnd) or other.name != self.name:
            return False
        a, b = os.path.normpath("/" + self.path), os.path.normpath("/" + other.path)
        return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")

    def key(self) -> str:
        return f"pool:{self.name}:{os.path.normpath(self.path) if self.path else ''}"

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}" + (f"/{self.path}" if self.path else "")


def parse_pool(spec: str) -> PoolEnd | None:
    """`pool:NAME[/path]` as a pool endpoint when a pool of that name is defined; None for any
    other spec (an rclone remote that happens to be called `pool` is then reached as before)."""
    if not spec.startswith(PREFIX):
        return None
    from tether.dirs import Dirs
    from tether.pools.definition import POOL_NAME_RE, load_pool, pool_file
    from tether.pools.union import union_fs

    name, _, path = spec[len(PREFIX) :].partition("/")
    if not POOL_NAME_RE.match(name):
        return None
    dirs = Dirs.from_env()
    if not pool_file(dirs, name).exists():
        return None
    pool = load_pool(dirs, name)
    folders = tuple(m.name for m in pool.members if m.name.startswith("/"))
    return PoolEnd(name, path.strip("/"), union_fs(pool)[:-1], folders)


def pools_of(endpoints: Iterable[object]) -> list[PoolEnd]:
    """The pools among a job's endpoints (what a running job mounts, where their pool says so)."""
    return [e for e in endpoints if isinstance(e, PoolEnd)]
