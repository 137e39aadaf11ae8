"""`tether versions NAME|DIR [PATH]`: every version kept in a job's replicas or targets."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any

from tether.dirs import Dirs
from tether.errors import EXIT_OK
from tether.output import shown

if TYPE_CHECKING:
    from tether.versions import Version


def add_parser(sub: Any) -> None:
    v = sub.add_parser("versions", help="list the versions tether kept (trash, backups, conflict copies)")
    v.add_argument("where", metavar="NAME|DIR", help="a job name, or a replica or target folder")
    v.add_argument("path", nargs="?", help="only versions of this path (or below it), relative to the root")
    v.add_argument("--json", action="store_true", help="print a machine-readable list")


def cmd_versions(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.kept import collect
    from tether.kept import roots as kept_roots

    roots, _into = kept_roots(dirs, args.where)
    want = os.fsencode(args.path.strip("/")) if args.path else None
    found = [(r.shown, v) for r, v in collect(roots, want)]
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


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: shown(v) if isinstance(v, str) else v for k, v in doc.items()}


__all__ = ["add_parser", "cmd_versions", "number_versions"]
