"""`tether doctor [NAME] [--json] [--fuse]`: check what a job (or every job) needs, and say how
to mend what fails.  Exit 0 when every check passes, 1 when one fails; an unknown job is a usage
error as everywhere (2)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, TetherError


def add_parser(sub: Any) -> None:
    d = sub.add_parser("doctor", help="check what the jobs need (rsync, ssh, python, ...) and say how to fix it")
    d.add_argument("name", nargs="?", help="one job (default: every job, and this machine's own checks)")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.add_argument("--fuse", action="store_true", help="also check FUSE (/dev/fuse, fusermount), as a mount needs")


def cmd_doctor(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.cli.common import describe
    from tether.doctor.plan import Check, checks_for, fuse_checks, machine_checks, needs_of, run_checks
    from tether.doctor.rules import Result, failed, report_json, report_text
    from tether.jobs import job_file, list_jobs, load_job
    from tether.ssh import SshOptions

    ssh = SshOptions.from_env(dirs)
    planned: list[tuple[str | None, Check]] = []
    titles: dict[str | None, str] = {None: "this machine"}
    broken: list[Result] = []
    if args.name is None:
        planned += [(None, c) for c in machine_checks(args.fuse)]
    elif args.fuse:
        planned += [(None, c) for c in fuse_checks()]
    for name in [args.name] if args.name is not None else list_jobs(dirs):
        file = job_file(dirs, name)
        try:
            job = load_job(file, name)
        except TetherError as e:
            if args.name is not None:
                raise  # one job asked for: its usual error and exit code
            broken.append(Result("job-file", name, failed(e.message, e.hint or f"run `tether check {name}`")))
            continue
        d = describe(job)
        arrow = "<->" if d["kind"] == "bisync" else "->"
        titles[name] = f"job {name} ({d['kind']} {d['source']} {arrow} {', '.join(d['targets'])})"
        planned += [(name, c) for c in checks_for(needs_of(job, ssh))]
    results = run_checks(planned) + broken
    if args.json:
        print(json.dumps(report_json(results), indent=2))
    else:
        print(report_text(results, titles))
    return EXIT_OK if all(r.finding.ok for r in results) else EXIT_ERRORS
