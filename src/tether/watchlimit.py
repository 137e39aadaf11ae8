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
