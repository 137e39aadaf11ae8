"""A pool as rclone sees it: one `union` remote made from the definition, and each member's
space and use as rclone reports them.

The union is given to rclone as a connection string (`:union,upstreams='...':path`), not
written into any rclone config: the members stay the user's own remotes, in the user's config.
tether places new files itself (pools/placement.py); the union serves the one listing, reads,
`tether pool import` and the mounted view, where its search policy (first found) and action
policy (every member holding the path) are the ones that never lose a copy.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
from dataclasses import asdict, dataclass

from tether.pools.definition import Pool
from tether.pools.placement import Member
from tether.transport.rclone_bin import rclone_program

META = ".tether"  # tether's own folder in each member (versions, locks): not the pool's files


def union_fs(pool: Pool, path: str = "", without: frozenset[str] = frozenset()) -> str:
    """The pool as one rclone remote, at `path` inside it; `without` the members that are down
    (rclone refuses a union one of whose members cannot be set up)."""
    ups = " ".join(f'"{m.name}"' for m in pool.members if m.name not in without)
    return f":union,upstreams='{ups}',create_policy=ff,action_policy=epall,search_policy=ff:{path}"


def member_fs(m: Member, path: str = "") -> str:
    """A member as an rclone remote string, at `path` inside the pool."""
    base = m.name.rstrip("/") if not m.name.endswith(":") else m.name
    if not path:
        return base
    return f"{base}{path}" if base.endswith(":") else f"{base}/{path}"


@dataclass
class MemberUse:
    name: str
    up: bool
    files: int = 0
    used: int = 0  # bytes of the pool's files on it (counted by listing)
    free: int | None = None  # as its backend says; None where it cannot (`rclone about` unsupported)
    total: int | None = None
    cap: int | None = None
    reserve: int = 0
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _rclone_json(args: list[str], timeout: float) -> dict[str, object]:
    proc = subprocess.run([rclone_program(), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["rclone failed"])[-1])
    doc: dict[str, object] = json.loads(proc.stdout or "{}")
    return doc


def member_use(m: Member, timeout: float = 120.0) -> MemberUse:
    """One member's files and bytes (by listing), and its free space where the backend says it."""
    use = MemberUse(m.name, up=True, cap=m.cap, reserve=m.reserve)
    try:
        size = _rclone_json(["size", "--json", "--exclude", f"/{META}/**", member_fs(m)], timeout)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
        msg = str(e)
        if "directory not found" in msg:  # a member nothing was put on yet
            return use
        use.up, use.error = False, msg
        return use
    use.files, use.used = int(size.get("count", 0) or 0), int(size.get("bytes", 0) or 0)  # type: ignore[call-overload]
    try:
        about = _rclone_json(["about", "--json", member_fs(m)], timeout)
        free, total = about.get("free"), about.get("total")
        use.free = int(free) if isinstance(free, int) else None
        use.total = int(total) if isinstance(total, int) else None
    except (RuntimeError, subprocess.TimeoutExpired, ValueError):
        pass  # the backend cannot say: its use is counted, its cap holds, its free space is unknown
    return use


def pool_use(pool: Pool, timeout: float = 120.0) -> list[MemberUse]:
    """Every member's use, asked at once (a slow or unreachable member holds up only itself)."""
    with concurrent.futures.ThreadPoolExecutor(max(1, len(pool.members))) as ex:
        return list(ex.map(lambda m: member_use(m, timeout), pool.members))


def probe(pool: Pool, timeout: float = 20.0) -> frozenset[str]:
    """The members that cannot be reached now (all asked at once): listing a member's top level
    is what every pass does first. A member folder not made yet is reachable."""

    def down(m: Member) -> bool:
        try:
            argv = [rclone_program(), "lsf", "--max-depth", "1", "--dirs-only", member_fs(m)]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return True
        return proc.returncode != 0 and "directory not found" not in proc.stderr

    with concurrent.futures.ThreadPoolExecutor(max(1, len(pool.members))) as ex:
        return frozenset(m.name for m, d in zip(pool.members, ex.map(down, pool.members), strict=True) if d)
