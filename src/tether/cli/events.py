"""`tether events [NAME]`: what jobs did, from the one event stream every job kind writes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.cli.common import number
from tether.dirs import Dirs
from tether.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from tether.events import Event


def add_parser(sub: Any) -> None:
    e = sub.add_parser("events", help="what jobs did: passes, files sent, deleted, moved, conflicts, errors")
    e.add_argument("name", nargs="?", help="a job (a location set: locations.NAME); all jobs when left out")
    e.add_argument("-n", "--lines", type=number(0, 10**9, whole=True), default=50, metavar="N",
                   help="the last N events (0: all)")  # fmt: skip
    e.add_argument("-f", "--follow", action="store_true", help="keep printing new events until interrupted")
    e.add_argument("--kind", action="append", default=[], metavar="KIND", help="only events of this kind")
    e.add_argument("--json", action="store_true", help="one JSON object per line")


def cmd_events(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.events import KINDS, path_of, read

    for k in args.kind:
        if k not in KINDS:
            raise UsageError(f"--kind {k!r} is no event kind", "one of: " + ", ".join(KINDS))
    folder = dirs.state / "events"
    if args.name:
        files = [path_of(dirs.state, args.name)]
        if not files[0].exists() and not files[0].with_name(files[0].name + ".1").exists():
            from tether.jobs import load_named

            load_named(dirs, args.name)  # no such job: that error, with its hint
    else:
        files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []

    def wanted(ev: Event) -> bool:
        return not args.kind or ev.kind in args.kind

    def show(ev: Event) -> None:
        print(json.dumps(ev.to_json(), ensure_ascii=False) if args.json else ev.line(), flush=True)

    seen = sorted((ev for f in files for ev in read(f) if wanted(ev)), key=lambda ev: ev.at)
    for ev in seen[-args.lines :] if args.lines > 0 else seen:
        show(ev)
    if args.follow:
        sizes = {f: _size(f) for f in files}
        try:
            while True:
                time.sleep(0.2)
                if not args.name and folder.is_dir():
                    for f in folder.glob("*.jsonl"):
                        sizes.setdefault(f, 0)
                for f, size in list(sizes.items()):
                    now = _size(f)
                    if now < size:  # rotated: the new file starts from its beginning
                        size = 0
                    if now > size:
                        for ev in read(f, size):
                            if wanted(ev):
                                show(ev)
                    sizes[f] = now
        except KeyboardInterrupt:
            print(file=sys.stderr)
    return EXIT_OK


def _size(path: Path) -> int:
    try:
        return int(path.stat().st_size)
    except FileNotFoundError:
        return 0
