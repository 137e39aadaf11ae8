"""`tether sync NAME`, `tether check NAME`, `tether jobs`: what every job kind answers alike."""

from __future__ import annotations

import argparse
from typing import Any

from tether.cli.common import check_job, describe
from tether.dirs import Dirs
from tether.errors import EXIT_OK, EXIT_USAGE, TetherError
from tether.ssh import SshOptions


def cmd_sync(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.config import MirrorJob
    from tether.jobs import load_named
    from tether.service.daemon import check_conflicts

    job = load_named(dirs, args.name)
    if not args.dry_run:
        check_conflicts(dirs, job)
    if not isinstance(job, MirrorJob):
        from tether.cli.bisync import run_once

        return run_once(job, dirs, dry_run=args.dry_run, force=args.force, as_json=args.json)
    ssh = SshOptions.from_env(dirs)
    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config)
    from tether.cli.mirror import run_pass
    from tether.events import for_job

    return run_pass(job.spec, args, dirs, ssh, job.hooks, None if args.dry_run else for_job(dirs.state, args.name))


def cmd_check(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import job_file

    file = job_file(dirs, args.name)
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
