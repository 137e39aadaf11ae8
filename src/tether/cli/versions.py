"""`tether versions NAME|DIR [PATH]`: every version kept in a job's local replicas or targets."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any

from tether.dirs import Dirs
from tether.errors import EXIT_OK, UsageError
from tether.output import shown

if TYPE_CHECKING:
    from tether.versions import Version


def add_parser(sub: Any) -> None:
    v = sub.add_parser("versions", help="list the versions tether kept (trash, backups, conflict copies)")
    v.add_argument("where", metavar="NAME|DIR", help="a job name, or a replica or target folder")
    v.add_argument("path", nargs="?", help="only versions of this path (or below it), relative to the root")
    v.add_argument("--json", action="store_true", help="print a machine-readable list")


def _roots(dirs: Dirs, where: str) -> list[tuple[str, list[bytes]]]:
    """(local root, conflict copies its state records) for each local root of a job or folder."""
    from tether.jobs import load_named

    if os.path.isdir(where) and ("/" in where or not (dirs.jobs / f"{where}.toml").exists()):
        return [(os.path.abspath(where), [])]
    job = load_named(dirs, where)
    copies: list[bytes] = []
    from tether.bisync.config import BisyncJob

    if isinstance(job, BisyncJob):
        from tether.bisync.runner import state_path
        from tether.bisync.state import State

        if state_path(dirs, job).exists():
            state = State(state_path(dirs, job))
            try:
                copies = [c for _p, c, _t, _n in state.conflicts()]
            finally:
                state.close()
    return [(p, copies) for p in (w.local_path for w in job.writes()) if p]


def cmd_versions(args: argparse.Namespace, dirs: Dirs) -> int:
    roots = _roots(dirs, args.where)
    if not roots:
        raise UsageError(f"{args.where} has no local replica or target", "list a remote one on its host")
    want = os.fsencode(args.path.strip("/")) if args.path else None
    from tether.versions import scan_local  # dataclasses and inspect: not for every command's start

    found: list[tuple[str, Version]] = []
    for root, copies in roots:
        found += [(root, v) for v in scan_local(root, copies) if want is None or _covers(want, v.path)]
    if args.json:
        print(json.dumps({"versions": [{"root": shown(r), **_shown(v.json())} for r, v in found]}, indent=1))
    elif not found:
        print("no kept versions")
    for root, v in [] if args.json else found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.kept_at))
        print(f"{when}  {v.origin:<9} {v.size:>12,}  {shown(os.fsdecode(v.path))}  <- {shown(root)}/"
              f"{shown(os.fsdecode(v.stored))}")  # fmt: skip
    return EXIT_OK


def _covers(want: bytes, path: bytes) -> bool:
    return path == want or path.startswith(want + b"/")


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: shown(v) if isinstance(v, str) else v for k, v in doc.items()}


__all__ = ["add_parser", "cmd_versions"]
