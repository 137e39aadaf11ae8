"""`tether restore NAME|DIR PATH [--at TIME | --version N] [--to DIR]`: put kept versions back."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any

from tether.cli.common import number
from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, UsageError
from tether.output import shown

if TYPE_CHECKING:
    pass


def add_parser(sub: Any) -> None:
    r = sub.add_parser("restore", help="put a kept version back, or a folder as it was at a time")
    r.add_argument("where", metavar="NAME|DIR", help="a job name, or a replica or target folder")
    r.add_argument("path", metavar="PATH", help="the file or folder, relative to the root ('.' for all of it)")
    how = r.add_mutually_exclusive_group()
    how.add_argument("--at", metavar="TIME", help="as it was then: '2026-12-06 14:19', a day, or -30m, -2h, -1d")
    how.add_argument(
        "--version",
        type=number(1, 10**9, whole=True),
        metavar="N",
        help="the N-th version `tether versions` lists for PATH",
    )
    r.add_argument("--to", metavar="DIR", help="write under DIR (DIR/PATH) instead of over the live files")
    r.add_argument("-n", "--dry-run", action="store_true", help="say what would be put back, change nothing")
    r.add_argument("--json", action="store_true", help="print a machine-readable result")


def cmd_restore(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether import restore
    from tether.cli.versions import number_versions
    from tether.kept import collect
    from tether.kept import roots as kept_roots

    roots, into_path = kept_roots(dirs, args.where)
    want = b"" if args.path.strip("/") in ("", ".") else os.fsencode(os.path.normpath(args.path.strip("/")))
    if want.startswith(b"../") or want == b".." or want.split(b"/")[0] == b".tether":
        raise UsageError(f"PATH {args.path!r} is outside what tether syncs", "give a path inside the root")
    if into_path is None and not args.to:
        raise UsageError(f"{args.where} has no local replica to restore into", "give --to DIR")
    dest = os.fsencode(os.path.abspath(args.to)) if args.to else os.fsencode(str(into_path))
    found = collect(roots, want)
    where_of = {id(v): r for r, v in found}
    if args.at is not None:
        t = restore.parse_time(args.at)
        live = os.fsencode(str(into_path)) if into_path is not None else dest
        steps = restore.plan_folder(want, [v for _r, v in found], live, t, dest_root=dest if args.to else None)
    else:
        mine = [(r, v) for r, v in found if v.path == want]
        if not mine:
            if found:
                raise UsageError(f"{args.path} is a folder", "give --at TIME to bring it back as it was then")
            raise UsageError(f"no kept version of {args.path} in {args.where}", f"see: tether versions {args.where}")
        numbers = number_versions([v for _r, v in mine])
        n = args.version if args.version is not None else numbers[-1]
        if not 1 <= n <= len(mine):
            raise UsageError(f"{args.path} has versions 1 to {len(mine)}, not {n}", f"see: tether versions "
                             f"{args.where} {args.path}")  # fmt: skip
        steps = [restore.Step(want, b"", mine[n - 1][1])]
    fetched = _fetch(steps, where_of, dest) if not args.dry_run else []
    try:
        out = restore.apply(steps, dest, dry_run=args.dry_run)
    finally:
        for f in fetched:
            if os.path.lexists(f):
                os.unlink(f)
    _report(args, out, dest)
    return EXIT_ERRORS if out.errors else EXIT_OK


def _fetch(steps: list[Any], where_of: dict[int, Any], dest: bytes) -> list[bytes]:
    """Each version a step puts back, copied from its root into dest's .tether/tmp first (a
    remote root's by rsync or its agent): the restore itself then only renames."""
    from tether.agent_remote import TMP_DIR

    tmp = os.path.join(dest, *TMP_DIR)
    os.makedirs(tmp, exist_ok=True)
    got = []
    for s in steps:
        if s.version is None or id(s.version) not in where_of:
            continue
        local = os.path.join(tmp, b"restore-in-" + os.urandom(6).hex().encode())
        where_of[id(s.version)].fetch(s.version, local)
        s.source = local
        got.append(local)
    return got


def _report(args: argparse.Namespace, out: Any, dest: bytes) -> None:
    verb = "would put back" if args.dry_run else "put back"
    if args.json:
        doc = {
            "dry_run": args.dry_run, "into": shown(os.fsdecode(dest)),
            "restored": [{"path": shown(os.fsdecode(p)), "from": shown(os.fsdecode(v.stored)) if v else "live",
                          "origin": v.origin if v else "live", "kept_at": v.kept_at if v else None}
                         for p, v in out.restored],
            "removed": [shown(os.fsdecode(p)) for p in out.removed],
            "kept": [shown(k) for k in out.kept], "errors": out.errors,
        }  # fmt: skip
        print(json.dumps(doc, indent=1))
        return
    for p, v in out.restored:
        when = "" if v is None else f" ({v.origin} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(v.kept_at))})"
        print(f"{verb}  {shown(os.fsdecode(p))}{when}")
    for p in out.removed:
        print(f"{'would remove' if args.dry_run else 'removed'}  {shown(os.fsdecode(p))} (it did not exist then)")
    if out.kept:
        print(f"what was there is kept as a version: {len(out.kept)} in {shown(os.fsdecode(dest))}/.tether/versions")
    if not out.restored and not out.removed:
        print("nothing to put back: it already holds what it held then")
    for e in out.errors:
        print(f"FAIL  {shown(e)}")


__all__ = ["add_parser", "cmd_restore"]
