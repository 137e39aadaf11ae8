"""The `tether` command: the parser of every family, and the dispatch to its module.

    cli/main.py       this: parse, dispatch, turn errors into messages and exit codes
    cli/common.py     shared by all: parser ways, filter options, logging, a running job's life
    cli/jobs.py       sync, check, jobs (any job kind)
    cli/mirror.py     mirror (once or --watch), the one-shot pass of a mirror job
    cli/bisync.py     bisync, conflicts, a bisync job's passes (once and continuous)
    cli/service.py    run, start, stop, restart, status, log
    cli/locations.py  backup, work, transfer, tree, locations
    cli/importer.py   import-config
    cli/versions.py   versions
    cli/restore.py    restore
    cli/systemd.py    service install, service uninstall
    cli/events.py     events
    cli/alerts.py     alert test
    cli/doctor.py     doctor
    cli/serve.py      serve
    cli/wait.py       wait
    cli/pools.py      pool create, list, status, remove, mount, umount, import

Each family imports common and, where it hands over, a family below it; nothing imports main.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from tether import __version__
from tether.cli.common import FilterAction, Parser, add_run_options, number
from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_USAGE, TetherError
from tether.output import shown


class Family(NamedTuple):
    """A family of commands that adds its own parsers. A command line names one family: only its
    parser is built (each family's imports and parsers cost 5-30 ms, and `tether bisync` waited
    for all 13). tests/unit/test_cli_families.py holds `commands` to what the parsers add."""

    module: str  # where its parsers are added
    adds: str  # the function there taking the subparsers
    commands: tuple[str, ...]
    handler: str | None  # the module whose handle(args, dirs) runs them; None: COMMANDS names each one's


FAMILIES = (
    Family("tether.cli.service", "add_parsers", ("run", "start", "stop", "restart", "status", "log"),
           "tether.cli.service"),
    Family("tether.locations.parsers", "add_parsers", ("backup", "work", "transfer", "tree", "locations"),
           "tether.cli.locations"),
    Family("tether.cli.bisync", "add_parsers", ("bisync", "conflicts"), "tether.cli.bisync"),
    Family("tether.cli.importer", "add_parser", ("import-config",), None),
    Family("tether.cli.versions", "add_parser", ("versions",), None),
    Family("tether.cli.restore", "add_parser", ("restore",), None),
    Family("tether.cli.systemd", "add_parser", ("service",), None),
    Family("tether.cli.events", "add_parser", ("events",), None),
    Family("tether.cli.alerts", "add_parser", ("alert",), None),
    Family("tether.cli.doctor", "add_parser", ("doctor",), None),
    Family("tether.cli.serve", "add_parser", ("serve",), None),
    Family("tether.cli.wait", "add_parser", ("wait",), None),
    Family("tether.cli.pools", "add_parser", ("pool",), None),
)  # fmt: skip
# a command of one module: where its handler is, imported only when that command runs
COMMANDS = {
    "versions": ("tether.cli.versions", "cmd_versions"),
    "restore": ("tether.cli.restore", "cmd_restore"),
    "service": ("tether.cli.systemd", "cmd_service"),
    "alert": ("tether.cli.alerts", "cmd_alert"),
    "events": ("tether.cli.events", "cmd_events"),
    "doctor": ("tether.cli.doctor", "cmd_doctor"),
    "serve": ("tether.cli.serve", "cmd_serve"),
    "wait": ("tether.cli.wait", "cmd_wait"),
    "pool": ("tether.cli.pools", "cmd_pool"),
    "import-config": ("tether.cli.importer", "cmd_import"),
    "mirror": ("tether.cli.mirror", "cmd_mirror"),
    "sync": ("tether.cli.jobs", "cmd_sync"),
    "check": ("tether.cli.jobs", "cmd_check"),
    "jobs": ("tether.cli.jobs", "cmd_jobs"),
}


OWN = ("mirror", "jobs", "check", "sync", "demo")  # the commands whose parsers are made here


def family_of(command: str | None) -> Family | None:
    """The family that adds this command, if one does."""
    return next((f for f in FAMILIES if command in f.commands), None)


def build_parser(command: str | None = None) -> Parser:
    """The whole parser; for a command line that names a command, only the parsers it can reach
    (this module's own, and its family's). No command, or one nobody adds (a typo), gets them
    all: the help, and the error listing the commands, name every one."""
    p = Parser(prog="tether", description="Keep directories in sync, continuously and safely.")
    p.add_argument("--version", action="version", version=f"tether {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    m = sub.add_parser("mirror", help="make each DST an exact copy of SRC, once")
    m.add_argument("src", metavar="SRC")
    m.add_argument("dst", metavar="DST", nargs="+", help="local path, host:/path or user@host:/path")
    m.add_argument(
        "--exclude",
        action=FilterAction,
        metavar="PAT",
        help="gitignore-style pattern to leave out",
    )
    m.add_argument("--include", action=FilterAction, metavar="PAT", help="pattern to take back in (like !PAT)")
    m.add_argument(
        "--exclude-from",
        action="append",
        default=[],
        metavar="FILE",
        type=Path,
        help="file of patterns",
    )
    m.add_argument("--no-delete", action="store_true", help="keep target files the source no longer has")
    m.add_argument("--bwlimit", metavar="RATE", help="bandwidth limit per target, rsync syntax (e.g. 5M)")
    m.add_argument("--watch", action="store_true", help="keep running: push every change as it happens")
    m.add_argument("--delay", type=number(0, 60), default=0.005, metavar="SEC", help="event window with --watch (0-60)")
    m.add_argument("--watcher", choices=("auto", "inotify", "fanotify"), default="auto",
                   help="with --watch: inotify while the tree fits the watch limit, else fanotify (root)")  # fmt: skip
    add_run_options(m)

    j = sub.add_parser("jobs", help="list the configured jobs")
    j.add_argument("--json", action="store_true")
    c = sub.add_parser("check", help="validate a job file")
    c.add_argument("name")
    c.add_argument("--json", action="store_true", help="what the job syncs, as JSON (errors stay on stderr, exit 2)")
    s = sub.add_parser("sync", help="run a job once (or every job: --all)")
    s.add_argument("name", nargs="?")
    s.add_argument("--all", action="store_true", help="every job once, in turn; the failed ones listed, exit 1")
    add_run_options(s)
    own = family_of(command)
    families = () if command in OWN else (own,) if own is not None else FAMILIES
    for f in families:  # in the order `tether --help` lists them
        getattr(importlib.import_module(f.module), f.adds)(sub)
    d = sub.add_parser("demo", help="mirror a sample tree to a local target and show what happened")
    d.add_argument("--keep", action="store_true", help="keep the demo folder afterwards")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    dirs = Dirs.from_env()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "demo":
            from tether.demo import run_demo

            return run_demo(keep=args.keep)
        family = family_of(args.command)
        if family is not None and family.handler is not None:
            handle: Callable[[argparse.Namespace, Dirs], int] = importlib.import_module(family.handler).handle
            return handle(args, dirs)
        module, func = COMMANDS[args.command]  # the parser knows no other command
        handler: Callable[[argparse.Namespace, Dirs], int] = getattr(importlib.import_module(module), func)
        return handler(args, dirs)
    except TetherError as e:
        print(f"tether: error: {shown(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("tether: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERRORS


def entry() -> None:
    """main(), then `finish` (the program's entry is tether/launch.py)."""
    finish(main())


def finish(code: int) -> None:
    """Leave at once.  Everything is written and closed by then; skipping the interpreter's
    teardown (freeing every object, one by one) saves a tenth of a quick pass's time."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or EXIT_ERRORS
    os._exit(code)
