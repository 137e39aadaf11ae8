"""`tether wait NAME [--timeout S]`: block until a running job's targets hold what its source
held when called (see service/wait.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tether.cli.common import number
from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, TetherError
from tether.output import shown


def add_parser(sub: Any) -> None:
    w = sub.add_parser("wait", help="wait until a running job's targets have caught up with its source")
    w.add_argument("name")
    w.add_argument(
        "--timeout",
        type=number(0, 86400, above=True),
        default=600.0,
        metavar="SEC",
        help="give up after SEC (default 600)",
    )
    w.add_argument("--json", action="store_true")


def cmd_wait(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import load_named
    from tether.service.daemon import JobPaths
    from tether.service.locks import PidLock
    from tether.service.wait import wait

    load_named(dirs, args.name)  # an unknown or broken job is a usage error, named
    paths = JobPaths.of(dirs, args.name)
    lock = PidLock(paths.pid)
    pid = lock.holder()
    if pid is None:
        raise TetherError(f"job {args.name} is not running", f"start it first: tether start {args.name}")
    out = wait(paths.status, pid, args.timeout, lambda: lock.holder() == pid)
    if args.json:
        doc = {"job": args.name, "caught_up": out.ok, "seconds": round(out.seconds, 3), "why": out.why or None,
               "behind": [_row(t) for t in out.behind]}  # fmt: skip
        print(json.dumps(doc, indent=2))
    elif out.ok:
        print(f"{args.name}: every target caught up ({out.seconds:.2f} s)")
    else:
        print(f"tether: {args.name}: {out.why}", file=sys.stderr)
        for t in out.behind:
            r = _row(t)
            err = f", last error: {r['last_error']}" if r["last_error"] else ""
            print(f"  behind: {shown(r['target'])} ({r['state']}, {r['pending']} pending{err})", file=sys.stderr)
    return EXIT_OK if out.ok else EXIT_ERRORS


def _row(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t.get(k) for k in ("target", "state", "pending", "last_error")}
