"""`tether pool create|list|status|remove|mount|umount|import`: several storages used as one (pools/)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, UsageError
from tether.output import shown


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pool", help="several cloud remotes or disks used as one storage")
    ps = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = ps.add_parser("create", help="define a pool from its members (rclone remotes or local folders)")
    c.add_argument("name")
    c.add_argument("members", nargs="+", metavar="MEMBER", help="remote:path (set up in rclone) or a local folder")
    c.add_argument("--policy", default="most-free", choices=("most-free", "least-used", "by-path"),
                   help="which member takes a new file (default most-free)")  # fmt: skip
    c.add_argument("--cap", action="append", default=[], metavar="MEMBER=SIZE",
                   help="the most of the pool's bytes MEMBER may hold, e.g. gdrive:tether=15G")  # fmt: skip
    c.add_argument("--reserve", action="append", default=[], metavar="MEMBER=SIZE",
                   help="free space to leave on MEMBER where its backend says its free space")  # fmt: skip
    c.add_argument("--mount", metavar="DIR", help="mount the pool there while a job that uses it runs")
    c.add_argument("--cache-size", default="1G", metavar="SIZE", help="the mount's VFS cache (default 1G)")
    c.add_argument("--force", action="store_true", help="replace a pool of that name")
    ps.add_parser("list", help="the pools defined").add_argument("--json", action="store_true")
    s = ps.add_parser("status", help="each member's use, free space, cap and reachability")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    r = ps.add_parser("remove", help="forget a pool's definition (its members' files stay)")
    r.add_argument("name")
    m = ps.add_parser("mount", help="the whole pool as one read-only folder (rclone mount, FUSE)")
    m.add_argument("name")
    m.add_argument("dir", metavar="DIR", help="an empty folder (made if missing)")
    m.add_argument("--cache-size", default="1G", metavar="SIZE", help="the VFS cache's size, under tether's state dir")
    ps.add_parser("umount", help="unmount a mounted pool").add_argument("name")
    i = ps.add_parser("import", help="everything in the pool copied into an empty folder (after a reinstall)")
    i.add_argument("name")
    i.add_argument("dir", metavar="DIR", help="an empty folder (made if missing)")
    i.add_argument("--partial", action="store_true", help="with a member away, import what the others hold")


def cmd_pool(args: argparse.Namespace, dirs: Dirs) -> int:
    actions = {"create": _create, "list": _list, "status": _status, "remove": _remove, "mount": _mount,
               "umount": _umount, "import": _import}  # fmt: skip
    return actions[args.action](args, dirs)


def _pairs(items: list[str], flag: str, members: list[str]) -> dict[str, int]:
    from tether.pools.definition import check_member
    from tether.schema import parse_size

    out: dict[str, int] = {}
    for item in items:
        member, sep, size = item.rpartition("=")
        if not sep or not member:
            raise UsageError(f"{flag} {item!r}: write MEMBER=SIZE", f"for example {flag} {members[0]}=40G")
        member = check_member(member)
        if member not in members:
            raise UsageError(f"{flag} {item!r}: {member!r} is not a member of this pool", "name one of: " +
                             ", ".join(members))  # fmt: skip
        value = parse_size(size)
        if value is None:
            raise UsageError(f"{flag} {item!r}: {size!r} is not a size", "write bytes, or like 500M, 40G, 1.5T")
        out[member] = value
    return out


def _create(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.pools.definition import Pool, check_member, pool_file, save_pool
    from tether.pools.placement import Member
    from tether.schema import parse_size

    members = [check_member(m) for m in args.members]
    if len(set(members)) != len(members):
        raise UsageError("a member is given twice", "list each member once")
    caps, reserves = _pairs(args.cap, "--cap", members), _pairs(args.reserve, "--reserve", members)
    file = pool_file(dirs, args.name)
    if file.exists() and not args.force:
        raise UsageError(f"a pool named {args.name!r} exists ({file})", "pass --force to replace its definition")
    if parse_size(args.cache_size) is None:
        raise UsageError(f"--cache-size {args.cache_size!r} is not a size", "write like 500M or 2G")
    mount = os.path.abspath(args.mount) if args.mount else None
    pool = Pool(args.name, tuple(Member(m, caps.get(m), reserves.get(m, 0)) for m in members), args.policy, mount,
                args.cache_size)  # fmt: skip
    saved = save_pool(dirs, pool)
    print(f"pool {args.name}: {len(members)} members, policy {args.policy} ({shown(str(saved))})")
    return EXIT_OK


def _list(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.pools.definition import list_pools, load_pool

    pools = [load_pool(dirs, n) for n in list_pools(dirs)]
    if args.json:
        print(json.dumps({"pools": [{"name": p.name, "policy": p.policy, "members": [m.name for m in p.members]}
                                    for p in pools]}, indent=2))  # fmt: skip
    else:
        for p in pools:
            print(f"{p.name}  {p.policy}  " + " ".join(shown(m.name) for m in p.members))
    return EXIT_OK


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _status(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.pools.definition import load_pool
    from tether.pools.union import pool_use

    pool = load_pool(dirs, args.name)
    uses = pool_use(pool)
    up = [u for u in uses if u.up]
    total = {"files": sum(u.files for u in up), "used": sum(u.used for u in up),
             "free": sum(u.free for u in up if u.free is not None) if all(u.free is not None for u in up) else None,
             "members_down": len(uses) - len(up)}  # fmt: skip
    if args.json:
        print(json.dumps({"pool": pool.name, "policy": pool.policy, "members": [u.to_json() for u in uses],
                          "total": total}, indent=2))  # fmt: skip
    else:
        print(f"pool {pool.name} ({pool.policy})")
        print(f"  {'member':<32} {'state':<6} {'files':>8} {'used':>8} {'free':>8} {'cap':>8} {'reserve':>8}")
        for u in uses:
            print(f"  {shown(u.name):<32} {'up' if u.up else 'DOWN':<6} {u.files:>8} {_size(u.used):>8}"
                  f" {_size(u.free):>8} {_size(u.cap):>8} {_size(u.reserve) if u.reserve else '-':>8}")  # fmt: skip
            if u.error:
                print(f"    {shown(u.name)}: {u.error}")
        print(f"  {'total':<32} {'':<6} {total['files']:>8} {_size(total['used']):>8} {_size(total['free']):>8}")
    return EXIT_OK if len(up) == len(uses) else EXIT_ERRORS


def _remove(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.pools.definition import pool_file

    file = pool_file(dirs, args.name)
    try:
        file.unlink()
    except FileNotFoundError:
        raise UsageError(f"no pool named {args.name!r}", "`tether pool list` shows the pools") from None
    print(f"pool {args.name}: definition removed; the files on its members stay")
    return EXIT_OK


def _mount(args: argparse.Namespace, dirs: Dirs) -> int:
    from pathlib import Path

    from tether.pools.definition import load_pool
    from tether.pools.mount import mount
    from tether.schema import parse_size

    if parse_size(args.cache_size) is None:
        raise UsageError(f"--cache-size {args.cache_size!r} is not a size", "write like 500M or 2G")
    where = mount(dirs, load_pool(dirs, args.name), Path(args.dir), args.cache_size)
    print(f"pool {args.name} mounted at {shown(str(where))} (read-only); `tether pool umount {args.name}` unmounts it")
    return EXIT_OK


def _umount(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.pools.definition import check_name
    from tether.pools.mount import umount

    where = umount(dirs, check_name(args.name))
    print(f"pool {args.name} unmounted from {shown(str(where))}")
    return EXIT_OK


def _import(args: argparse.Namespace, dirs: Dirs) -> int:
    from pathlib import Path

    from tether.pools.definition import load_pool
    from tether.pools.mount import import_pool

    files, size = import_pool(load_pool(dirs, args.name), Path(args.dir), args.partial)
    print(f"pool {args.name}: {files} files ({_size(size)}) imported into {shown(args.dir)}")
    return EXIT_OK
