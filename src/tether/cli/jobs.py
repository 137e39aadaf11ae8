"""`tether sync NAME`, `tether check NAME`, `tether jobs`: what every job kind answers alike."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from tether.cli.common import check_job, describe
from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, TetherError, UsageError
from tether.ssh import SshOptions

if TYPE_CHECKING:
    from tether.jobs import Job


def cmd_sync(args: argparse.Namespace, dirs: Dirs) -> int:
    if args.all == (args.name is not None):
        raise UsageError("give a job NAME or --all, not both and not neither", "`tether jobs` lists the jobs")
    from tether.cli.common import check_quiet_options

    check_quiet_options(args)
    if args.all:
        return _sync_all(args, dirs)
    return _sync_one(args, dirs)


def _sync_all(args: argparse.Namespace, dirs: Dirs) -> int:
    """Every job once, for cron: one job's failure does not stop the others; each is said as it
    ends, the failed ones again at the end (an invalid job file is one), and the exit is 1 if any failed."""
    import copy
    import sys

    from tether.jobs import list_jobs

    if args.json:
        raise UsageError("--all prints each job's result as it goes", "for JSON, run `tether sync NAME --json` per job")
    names = list_jobs(dirs)
    if not names:
        if not args.quiet:
            print(f"no jobs yet: write one as {dirs.jobs}/NAME.toml (see README)")
        return EXIT_OK
    failed: list[tuple[str, str]] = []
    worst = EXIT_OK
    for name in names:
        if not args.quiet:
            print(f"== {name}", flush=True)
        one = copy.copy(args)
        one.name, one.all = name, False
        try:
            rc = _sync_one(one, dirs)
        except TetherError as e:
            print(f"FAIL  {name}: {e.message}" + (f"\n      hint: {e.hint}" if e.hint else ""), file=sys.stderr)
            rc = e.code
        if rc != EXIT_OK:
            failed.append((name, f"exit {rc}"))
            worst = EXIT_ERRORS
    ok = len(names) - len(failed)
    tally = f"{len(names)} jobs: {ok} ok" + (
        ", failed: " + ", ".join(f"{n} ({why})" for n, why in failed) if failed else ""
    )
    if args.summary or not args.quiet:
        print(tally)
    elif failed:  # --quiet: the failed ones are errors
        print(f"tether: {tally}", file=sys.stderr)
    return worst


def _sync_one(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import load_named
    from tether.service.daemon import check_conflicts

    job = load_named(dirs, args.name)
    if not args.dry_run:
        check_conflicts(dirs, job)
    import contextlib

    from tether import alerts

    with contextlib.nullcontext() if args.dry_run else alerts.for_job(dirs, job):  # a dry run tells nobody
        return _sync_loaded(job, args, dirs)


def _sync_loaded(job: Job, args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.config import MirrorJob

    if not isinstance(job, MirrorJob):
        from tether.cli.bisync import run_once

        return run_once(job, dirs, dry_run=args.dry_run, force=args.force, as_json=args.json, quiet=args.quiet,
                        summary=f"tether sync {args.name}" if args.summary else None)  # fmt: skip
    ssh = SshOptions.from_env(dirs)
    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config)
    from tether.cli.mirror import run_pass
    from tether.events import for_job

    events = None if args.dry_run else for_job(dirs.state, args.name)
    return run_pass(job.spec, args, dirs, ssh, job.hooks, events, job.live.python)


def cmd_check(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import job_file

    file = job_file(dirs, args.name)
    if getattr(args, "json", False):
        import json

        from tether.jobs import load_job

        print(json.dumps({"job": args.name, "file": str(file), "ok": True, **describe(load_job(file, args.name))}))
    else:
        print(f"{file}: ok ({check_job(file, args.name)})")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace, dirs: Dirs) -> int:
    import json

    from tether.jobs import list_jobs, load_named

    rows: list[dict[str, Any]] = []
    worst = EXIT_OK
    for name in list_jobs(dirs):
        try:
            rows.append({"name": name, "ok": True, **describe(load_named(dirs, name))})
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
