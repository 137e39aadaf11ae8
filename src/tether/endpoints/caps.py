"""What an endpoint can do, declared once per kind, so callers ask this and never the kind."""

from __future__ import annotations

from typing import NamedTuple


class Caps(NamedTuple):
    in_process: bool  # its files are on this machine: scanned and hashed here, by forked children
    far_agent: bool  # its agent runs on another host: worth starting early, locking and scanning at once
    rsync: bool  # rsync can reach it (local path or ssh host)
    events: bool  # its agent can watch it (inotify) rather than poll
    moves: bool  # a rename is a rename, not a copy and a delete
    modes: bool
    owners: bool
    acls: bool
    xattrs: bool
    hardlinks: bool
    locks: bool  # an advisory lock held by a live agent (else a lock file with a lease)
    commands: bool  # its agent runs a program in its root (a job's before/after there)
    mtime_ns: int  # the precision its mtimes keep, in ns (1 = exact)


POSIX = Caps(
    in_process=True, far_agent=False, rsync=True, events=True, moves=True, modes=True, owners=True, acls=True,
    xattrs=True, hardlinks=True, locks=True, commands=True, mtime_ns=1,
)  # fmt: skip
SSH = POSIX._replace(in_process=False, far_agent=True)
# rclone's backends differ (the agent reads the real precision from `operations/fsinfo`); this is
# what tether may count on before it has asked.
RCLONE = Caps(
    in_process=False, far_agent=False, rsync=False, events=False, moves=True, modes=False, owners=False,
    acls=False, xattrs=False, hardlinks=False, locks=False, commands=False, mtime_ns=1_000_000_000,
)  # fmt: skip
