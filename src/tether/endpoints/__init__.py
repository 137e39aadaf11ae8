"""Where files live: a local folder, an ssh host's folder, an rclone remote, behind one interface.

Every kind is parsed here from what a user writes (`/path`, `host:/path`, `remote:path`), declares
its capabilities (`caps`), says how to open its agent (`connector`) and how rsync names it. Code
outside this package asks an endpoint what it can do, never which class it is (a test holds it).
"""

from tether.endpoints.caps import Caps
from tether.endpoints.rclone import (
    Rclone,
    RcloneReached,
    ReplicaSpec,
    as_rclone,
    by_rsync,
    check_pair,
    parse_replica,
)
from tether.endpoints.spec import AnyEndpoint, Endpoint, Local, Ssh, as_local, check_overlap, is_inside, parse_endpoint
from tether.transport.rclone_bin import rclone_remotes

__all__ = [
    "AnyEndpoint", "Caps", "Endpoint", "Local", "Rclone", "RcloneReached", "ReplicaSpec", "Ssh", "as_local",
    "as_rclone", "by_rsync", "check_overlap", "check_pair", "is_inside", "parse_endpoint", "parse_replica",
    "rclone_remotes",
]  # fmt: skip
