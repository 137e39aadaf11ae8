"""The `tether` command: parses arguments, calls the library, prints, returns an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import __version__
from tether.dirs import Dirs
from tether.endpoints import Local, parse_endpoint
from tether.errors import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, TetherError, UsageError
from tether.filters import Filter
from tether.output import shown
from tether.ssh import SshOptions

if TYPE_CHECKING:  # the mirror machinery is imported when a mirror runs: other commands start faster
    from tether.mirror import MirrorSpec


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


class _FilterAction(argparse.Action):
    """Keeps --exclude and --include in the order given: the last matching rule decides."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        values: object,
        opt: object = None,
    ) -> None:
        rules = list(getattr(ns, "rules", None) or [])
        rules.append((self.dest == "include", str(values)))
        ns.rules = rules


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", "-n", action="store_true", help="print what would change; change nothing")
    p.add_argument("--force", action="store_true", help="allow deleting in a target tether never wrote")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("-v", "--verbose", action="store_true", help="show each rsync command")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tether", description="Keep directories in sync, continuously and safely.")
    p.add_argument("--version", action="version", version=f"tether {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    m = sub.add_parser("mirror", help="make each DST an exact copy of SRC, once")
    m.add_argument("src", metavar="SRC")
    m.add_argument("dst", metavar="DST", nargs="+", help="local path, host:/path or user@host:/path")
    m.add_argument(
        "--exclude",
        action=_FilterAction,
        metavar="PAT",
        help="gitignore-style pattern to leave out",
    )
    m.add_argument("--include", action=_FilterAction, metavar="PAT", help="pattern to take back in (like !PAT)")
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
    m.add_argument("--delay", type=float, default=0.005, metavar="SEC", help="event window with --watch")
    _add_run_options(m)

    j = sub.add_parser("jobs", help="list the configured jobs")
    j.add_argument("--json", action="store_true")
    c = sub.add_parser("check", help="validate a job file")
    c.add_argument("name")
    s = sub.add_parser("sync", help="run a job once")
    s.add_argument("name")
    _add_run_options(s)
    from tether.cli_service import add_parsers as add_service_parsers

    add_service_parsers(sub)
    from tether.locations.parsers import add_parsers as add_locations_parsers

    add_locations_parsers(sub)
    from tether.bisync.cli import add_parsers as add_bisync_parsers

    add_bisync_parsers(sub)
    from tether.cli_import import add_parser as add_import_parser

    add_import_parser(sub)
    d = sub.add_parser("demo", help="mirror a sample tree to a local target and show what happened")
    d.add_argument("--keep", action="store_true", help="keep the demo folder afterwards")
    return p


def _mirror(spec: MirrorSpec, args: argparse.Namespace, dirs: Dirs, ssh: SshOptions) -> int:
    from tether.mirror import Mirror, TargetOutcome
    from tether.output import print_outcomes
    from tether.state import KnownTargets
    from tether.transport.rsync import Rsync

    def say(line: str) -> None:
        print(f"+ {shown(line)}", file=sys.stderr)

    bar = None
    if sys.stderr.isatty() and not args.json and not args.verbose:
        from tether.progress import ProgressLine

        bar = ProgressLine()
    mirror = Mirror(
        Rsync(ssh, spec.rsync), KnownTargets(dirs.state), verbose=say if args.verbose else None, progress=bar
    )
    try:
        outcomes: list[TargetOutcome] = mirror.run(spec, dry_run=args.dry_run, force=args.force)
    finally:
        if bar:
            bar.close()
    print_outcomes(spec.source.path, outcomes, dry_run=args.dry_run, as_json=args.json)
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_ERRORS


def cmd_mirror(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.mirror import MirrorSpec
    from tether.transport.rsync import RATE_RE

    source = parse_endpoint(args.src)
    if not isinstance(source, Local):
        raise UsageError(f"source {args.src!r} must be a local directory", "tether pushes from this machine")
    from tether.bisync.rclone_spec import check_targets, parse_replica

    targets = [parse_replica(d) for d in args.dst]
    check_targets(source, targets)
    if args.bwlimit is not None and not RATE_RE.fullmatch(args.bwlimit):
        raise UsageError(f"--bwlimit {args.bwlimit!r} is not a rate", "write e.g. --bwlimit 5M or --bwlimit 500")
    flt = Filter.build(exclude_from=args.exclude_from, ordered=getattr(args, "rules", None) or [])
    spec = MirrorSpec(source, tuple(targets), flt, delete=not args.no_delete, bwlimit=args.bwlimit)
    if args.watch:
        from tether.cli_service import run_live
        from tether.config import LiveOptions

        if args.dry_run:
            raise UsageError("--watch and --dry-run do not go together", "preview with --dry-run alone first")
        status = dirs.runtime / "jobs" / f"adhoc-{os.getpid()}.status.json"
        try:
            return run_live(
                "mirror --watch", spec, LiveOptions(delay=args.delay), SshOptions.from_env(dirs), dirs, status
            )
        finally:
            status.unlink(missing_ok=True)
    return _mirror(spec, args, dirs, SshOptions.from_env(dirs))


def cmd_sync(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.bisync.config import is_bisync
    from tether.config import job_file, parse_job

    file = job_file(dirs, args.name)
    if is_bisync(file):
        from tether.bisync.cli import run_once
        from tether.bisync.config import parse_bisync_job

        bjob = parse_bisync_job(file, args.name)
        return run_once(bjob, dirs, dry_run=args.dry_run, force=args.force, as_json=args.json)
    job = parse_job(file, args.name)
    ssh = SshOptions.from_env(dirs)
    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config)
    return _mirror(job.spec, args, dirs, ssh)


def check_job(file: Path, name: str) -> str:
    """Validate one job file as `tether check` does; what it syncs, in a few words."""
    from tether.bisync.config import is_bisync, parse_bisync_job
    from tether.config import parse_job

    if is_bisync(file):
        bjob = parse_bisync_job(file, name)
        return f"bisync {shown(str(bjob.path1))} <-> {shown(str(bjob.path2))}"
    job = parse_job(file, name)
    return f"mirror {shown(job.spec.source.path)} -> {', '.join(shown(str(t)) for t in job.spec.targets)}"


def cmd_check(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.config import job_file

    file = job_file(dirs, args.name)
    print(f"{file}: ok ({check_job(file, args.name)})")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace, dirs: Dirs) -> int:
    import json

    from tether.bisync.config import is_bisync, parse_bisync_job
    from tether.config import job_file, list_jobs, parse_job

    rows: list[dict[str, Any]] = []
    worst = EXIT_OK
    for name in list_jobs(dirs):
        try:
            if is_bisync(job_file(dirs, name)):
                bjob = parse_bisync_job(job_file(dirs, name), name)
                rows.append({"name": name, "kind": "bisync", "ok": True, "source": shown(str(bjob.path1)),
                             "targets": [shown(str(bjob.path2))]})  # fmt: skip
                continue
            job = parse_job(job_file(dirs, name), name)
            rows.append({"name": name, "kind": "mirror", "ok": True, "source": shown(job.spec.source.path),
                         "targets": [shown(str(t)) for t in job.spec.targets]})  # fmt: skip
        except TetherError as e:
            rows.append({"name": name, "ok": False, "error": e.message})
            worst = EXIT_USAGE
    if args.json:
        print(json.dumps({"jobs": rows}, indent=2))
    elif not rows:
        print(f"no jobs yet: write one as {dirs.jobs}/NAME.toml (see README)")
    for r in [] if args.json else rows:
        if r["ok"]:
            arrow = "<->" if r["kind"] == "bisync" else "->"
            print(f"{r['name']:<20} {r['kind']:<7} {r['source']} {arrow} {', '.join(r['targets'])}")
        else:
            print(f"{r['name']:<20} INVALID {r['error']}")
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    dirs = Dirs.from_env()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "demo":
            from tether.demo import run_demo

            return run_demo(keep=args.keep)
        from tether.cli_service import SERVICE_COMMANDS
        from tether.locations.parsers import COMMANDS as LOCATION_COMMANDS

        if args.command in LOCATION_COMMANDS:
            from tether.locations import cli as locations_cli

            return locations_cli.handle(args, dirs)
        from tether.bisync.cli import COMMANDS as BISYNC_COMMANDS

        if args.command in BISYNC_COMMANDS:
            from tether.bisync import cli as bisync_cli

            return bisync_cli.handle(args, dirs)
        if args.command in SERVICE_COMMANDS:
            from tether.cli_service import handle

            return handle(args, dirs)
        if args.command == "import-config":
            from tether.cli_import import cmd_import

            return cmd_import(args, dirs)
        handler = {"mirror": cmd_mirror, "sync": cmd_sync, "check": cmd_check, "jobs": cmd_jobs}[args.command]
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
    """The `tether` command: main(), then leave at once.  Everything is written and closed by
    then; skipping the interpreter's teardown (freeing every object, one by one) saves a
    tenth of a quick pass's time."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or EXIT_ERRORS
    os._exit(code)
