"""The `tether` program's first step, before the parser and the command families load.

A one-shot `tether mirror SRC REMOTE:PATH` (or `pool:NAME`) waits first of all for rclone's listing of the remote
(see transport/rclone_lsf.py) and for its own walk of SRC (rclone_scan.py).  Loading the parser
and every family takes 40-90 ms; both are started here from a first look at the arguments, so
that time overlaps them.  The walk is started only when nothing but flags follows `mirror` (no
filter option, whose rules it would need); the pass takes it only for the same source and no
filter rules.  A guess that turns out wrong (an option's value that names a remote) costs one
read-only listing, ended when the command returns.  Kept light: the standard library and small
modules only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def entry() -> None:
    """The `tether` command."""
    argv = sys.argv[1:]
    early = _list_early(argv)
    from tether.cli.main import finish, main

    try:
        code = main(argv)
    finally:
        if early:
            from tether.cli.mirror import drop_prestarted

            drop_prestarted()
    finish(code)


# `tether mirror` options that take no value: with only these, the positionals are SRC DST...
_FLAGS = frozenset(("--dry-run", "-n", "--force", "--json", "-v", "--verbose", "-q", "--quiet", "--summary",
                    "--no-delete"))  # fmt: skip


def _list_early(argv: Sequence[str]) -> bool:
    """Start listing the rclone targets of `tether mirror ARGS` (not --watch), and walking its
    source where the arguments are plain enough; whether anything was started."""
    if argv[:1] != ["mirror"] or any(a in ("--watch", "-h", "--help") for a in argv):
        return False
    from tether.transport.rclone_bin import rclone_program, rclone_remotes, remote_spec

    known = rclone_remotes()
    fss = [f"{r[0]}:{r[1]}" for a in argv[1:] if not a.startswith("-") and (r := remote_spec(a, known)) is not None]
    if any(a.startswith("pool:") for a in argv[1:]):  # a pool is listed as its union
        from tether.endpoints.pool import parse_pool
        from tether.errors import TetherError

        for a in argv[1:]:
            try:
                pool = parse_pool(a)
            except TetherError:  # said by the command itself, in its turn
                continue
            if pool is not None:
                fss.append(pool.fs)
    if not fss:
        return False
    places = [a for a in argv[1:] if not a.startswith("-")]
    if all(a in _FLAGS for a in argv[1:] if a.startswith("-")) and len(places) >= 2 and ":" not in places[0]:
        import os

        from tether import rclone_scan

        # as endpoints/spec.py resolves a local path, before threads start (a fork beside them is riskier)
        rclone_scan.prescan(os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(places[0]))))
    from tether.transport import rclone_lsf

    for fs in fss:
        rclone_lsf.prelist(rclone_program(), fs)
    return True
