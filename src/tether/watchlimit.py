"""The kernel's inotify watch limit, read without loading the watcher (ctypes): `tether status`
and `serve` show it, the watcher and `doctor` hold trees against it."""

from __future__ import annotations

from collections.abc import Sequence

WATCHES_SYSCTL = "/proc/sys/fs/inotify/max_user_watches"
WATCHES_USERNS = "/proc/sys/user/max_inotify_watches"  # per user namespace (lowered by tests, containers)


def max_user_watches(files: Sequence[str] = (WATCHES_SYSCTL, WATCHES_USERNS)) -> int | None:
    """The per-user watch limit: the lower of the global one and this user namespace's (a
    container's may be lower than the host's); None where neither can be read."""
    found = []
    for sysctl in files:
        try:
            with open(sysctl) as f:
                found.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def namespace_binds(host: int | None, ns: int | None) -> bool:
    """Whether this user namespace's limit is the one that binds (lower than the machine's):
    then only the namespace's owner can raise it."""
    return ns is not None and (host is None or ns < host)


def binding_sysctl(limit: int | None) -> str:
    """Which setting makes `limit`: this user namespace's where it is the lower one, else the machine's."""
    host, ns = max_user_watches((WATCHES_SYSCTL,)), max_user_watches((WATCHES_USERNS,))
    if limit is not None and ns == limit and namespace_binds(host, ns):
        return "user.max_inotify_watches"
    return "fs.inotify.max_user_watches"
