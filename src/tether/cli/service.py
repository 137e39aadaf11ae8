"""Commands for jobs that run continuously: run, start, stop, restart, status, log."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.cli.common import number, running
from tether.dirs import Dirs
from tether.errors import EXIT_OK, LockedError, TetherError
from tether.output import shown

if TYPE_CHECKING:  # imported lazily at run time: other commands start faster without them
    from tether.config import LiveOptions
    from tether.events import EventLog
    from tether.hooks import PassHooks
    from tether.jobs import Job
    from tether.mirror import MirrorSpec
    from tether.ssh import SshOptions


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("run", help="run a job continuously in the foreground (for systemd, containers)")
    r.add_argument("name")
    r.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    r.add_argument("--json-log", action="store_true", help="log one JSON object per line (for log shippers)")
    r.add_argument("--log-file", type=Path, help=argparse.SUPPRESS)  # `start`'s: the job's log, rotated
    s = sub.add_parser("start", help="start a job in the background")
    s.add_argument("name", nargs="+")
    s.add_argument("-q", "--quiet", action="store_true", help="say nothing unless it fails")
    s.add_argument("--json-log", action="store_true", help="log one JSON object per line (for log shippers)")
    s.add_argument("--json", action="store_true", help="what was done, as JSON")
    p = sub.add_parser("stop", help="stop a background job (after its transfer in flight)")
    p.add_argument("name", nargs="+")
    p.add_argument("--json", action="store_true", help="what was done, as JSON")
    p.add_argument("--timeout", type=number(0, 86400, above=True), default=30.0,
                   help="seconds to wait before killing (default 30)")  # fmt: skip
    rs = sub.add_parser("restart", help="stop, then start a job")
    rs.add_argument("name", nargs="+")
    rs.add_argument("--json", action="store_true", help="what was done, as JSON")
    st = sub.add_parser("status", help="state of jobs and their targets")
    st.add_argument("name", nargs="?")
    st.add_argument("--json", action="store_true")
    lg = sub.add_parser("log", help="print a job's log")
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("-n", "--lines", type=number(0, 10**9, whole=True), default=50)


def run_live(
    name: str,
    job_spec: MirrorSpec,
    live_opts: LiveOptions,
    ssh: SshOptions,
    dirs: Dirs,
    status_path: Path,
    pass_hooks: PassHooks | None = None,
    events: EventLog | None = None,
) -> int:
    """Run a continuous mirror until SIGTERM/SIGINT; shared by `run NAME` and `mirror --watch`
    (which keeps no events: it is no job)."""
    from tether.events import NO_EVENTS
    from tether.hooks import PassHooks
    from tether.live import LiveMirror
    from tether.mirror import Mirror
    from tether.service.status import JobStatus, StatusBoard
    from tether.state import KnownTargets
    from tether.transport.rsync import Rsync

    board = StatusBoard(status_path, JobStatus(name, os.getpid(), job_spec.source.path, time.time()))
    mirror = Mirror(Rsync(ssh, job_spec.rsync), KnownTargets(dirs.state))
    live = LiveMirror(job_spec, live_opts, mirror, ssh, board, pass_hooks=pass_hooks or PassHooks(),
                      events=events or NO_EVENTS)  # fmt: skip
    with running(board, live.request_stop, "transfer", live.request_wait):
        live.run()
    return EXIT_OK


def cmd_run(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import load_named
    from tether.service.daemon import JobPaths, check_conflicts
    from tether.service.locks import PidLock

    job = load_named(dirs, args.name)
    from tether.service import joblog

    joblog.setup(job.name, job.log._replace(json=job.log.json or args.json_log), file=args.log_file, quiet=args.quiet)
    paths = JobPaths.of(dirs, args.name)
    lock = PidLock(paths.pid)
    if not lock.acquire():
        raise LockedError(f"{args.name} is already running (pid {lock.holder()})", f"`tether stop {args.name}` first")
    try:
        check_conflicts(dirs, job)
        from tether import alerts
        from tether.pools.mount import mounted_while_running

        with alerts.for_job(dirs, job), mounted_while_running(dirs, [*job.writes(), *job.reads()]):
            return _run_loaded(job, dirs, paths.status)
    finally:
        lock.release()


def _run_loaded(job: Job, dirs: Dirs, status: Path) -> int:
    from tether.config import MirrorJob
    from tether.events import for_job
    from tether.ssh import SshOptions

    if not isinstance(job, MirrorJob):
        from tether.cli.bisync import run_job_live

        return run_job_live(job, dirs, status)
    ssh = SshOptions.from_env(dirs)
    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config)
    return run_live(job.name, job.spec, job.live, ssh, dirs, status, job.hooks, for_job(dirs.state, job.name))


def cmd_status(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.service.overview import Gatherer, table, to_json

    views = Gatherer(dirs).gather(args.name)
    if args.json:
        print(json.dumps({"jobs": [to_json(v) for v in views]}, indent=2))
    else:
        print(table(views, time.time()) if views else "no jobs")
    return EXIT_OK


def cmd_log(args: argparse.Namespace, dirs: Dirs) -> int:
    """The newest lines (across a rotation), a JSON log's as plain ones; -f follows the file
    through its rotations until Ctrl-C."""
    from tether.jobs import job_file
    from tether.service import joblog
    from tether.service.daemon import JobPaths

    job_file(dirs, args.name)
    path = JobPaths.of(dirs, args.name).log
    lines, at = joblog.last_lines(path, args.lines)
    if at is None and not lines:
        print(f"no log yet for {args.name} ({path})" + ("; waiting for it" if args.follow else ""), flush=True)
        if not args.follow:
            return EXIT_OK
    for ln in lines:
        print(joblog.readable(ln))
    if args.follow:
        sys.stdout.flush()
        joblog.follow(path, at, lambda ln: print(joblog.readable(ln), flush=True), lambda: False)
    return EXIT_OK


def handle(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.service import daemon

    if args.command == "run":
        return cmd_run(args, dirs)
    if args.command == "status":
        return cmd_status(args, dirs)
    if args.command == "log":
        return cmd_log(args, dirs)
    worst = EXIT_OK
    quiet, as_json = getattr(args, "quiet", False), getattr(args, "json", False)
    docs: list[dict[str, Any]] = []

    def done(doc: dict[str, Any]) -> None:
        docs.append(doc)
        if not (quiet or as_json):
            print(daemon.said(doc))

    for name in args.name:
        try:
            if args.command in ("stop", "restart"):
                done(daemon.stop(dirs, name, timeout=getattr(args, "timeout", 30.0)))
            if args.command in ("start", "restart"):
                done(daemon.start(dirs, name, json_log=getattr(args, "json_log", False)))
        except TetherError as e:
            print(f"tether: error: {name}: {shown(str(e))}", file=sys.stderr)
            docs.append({"job": name, "state": "error", "error": str(e)})
            worst = max(worst, e.code)
    if as_json:
        print(json.dumps({"jobs": docs}, indent=2))
    return worst
