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


def restore_roots(dirs: Dirs, where: str) -> list[tuple[str, list[bytes], str]]:
    """(local root, its conflict copies, where a version from it is put back): a replica's or a
    folder's own versions go back into it; a mirror's, kept on its targets, go into its source
    (the next pass would replace them on a target), from its first local target only (every
    target keeps the same history)."""
    from tether.config import MirrorJob
    from tether.jobs import load_named

    roots = _roots(dirs, where)
    if os.path.isdir(where) and ("/" in where or not (dirs.jobs / f"{where}.toml").exists()):
        return [(r, c, r) for r, c in roots]
    job = load_named(dirs, where)
    if isinstance(job, MirrorJob):
        return [(r, c, job.spec.source.path) for r, c in roots[:1]]
    return [(r, c, r) for r, c in roots]


def cmd_versions(args: argparse.Namespace, dirs: Dirs) -> int:
    roots = _roots(dirs, args.where)
    if not roots:
        raise UsageError(f"{args.where} has no local replica or target", "list a remote one on its host")
    want = os.fsencode(args.path.strip("/")) if args.path else None
    from tether.versions import scan_local  # dataclasses and inspect: not for every command's start

    found: list[tuple[str, Version]] = []
    for root, copies in roots:
        found += [(root, v) for v in scan_local(root, copies) if want is None or _covers(want, v.path)]
    found.sort(key=lambda rv: (rv[1].kept_at, rv[1].path, rv[1].stored))  # one time line across roots
    numbers = number_versions([v for _r, v in found])
    if args.json:
        docs = [{"root": shown(r), "n": n, **_shown(v.json())} for (r, v), n in zip(found, numbers, strict=True)]
        print(json.dumps({"versions": docs}, indent=1))
    elif not found:
        print("no kept versions")
    for (root, v), n in [] if args.json else zip(found, numbers, strict=True):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.kept_at))
        print(f"#{n:<3} {when}  {v.origin:<9} {v.size:>12,}  {shown(os.fsdecode(v.path))}  <- {shown(root)}/"
              f"{shown(os.fsdecode(v.stored))}")  # fmt: skip
    return EXIT_OK


def number_versions(found: list[Version]) -> list[int]:
    """Each version's number among its path's, oldest first (`tether restore --version N`)."""
    seen: dict[bytes, int] = {}
    out = []
    for v in found:
        seen[v.path] = seen.get(v.path, 0) + 1
        out.append(seen[v.path])
    return out


def _covers(want: bytes, path: bytes) -> bool:
    return path == want or path.startswith(want + b"/")


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: shown(v) if isinstance(v, str) else v for k, v in doc.items()}


__all__ = ["add_parser", "cmd_versions", "number_versions", "restore_roots"]
