"""`tether bisync PATH1 PATH2`, `tether sync NAME` for bisync jobs, `tether conflicts NAME`,
and the continuous loop behind `tether run/start NAME`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.bisync.config import BisyncJob
from tether.bisync.plan import POLICIES
from tether.cli.common import FilterAction, add_quiet_options, check_quiet_options, number, running
from tether.dirs import Dirs
from tether.endpoints import check_pair, parse_replica
from tether.errors import EXIT_ERRORS, EXIT_OK, UsageError
from tether.filters import Filter
from tether.output import shown

if TYPE_CHECKING:
    from tether.bisync.engine import Report


def add_parsers(sub: Any) -> None:
    b = sub.add_parser("bisync", help="two-way sync of two replicas, once (no job file needed)")
    b.add_argument("path1", metavar="PATH1", help="local path or host:/path")
    b.add_argument("path2", metavar="PATH2", help="local path or host:/path")
    b.add_argument("--conflict", choices=POLICIES, default="keep-both", help="who wins when both sides changed")
    b.add_argument("--exclude", action=FilterAction, metavar="PAT", help="gitignore-style pattern to leave out")
    b.add_argument("--include", action=FilterAction, metavar="PAT", help="pattern to take back in (like !PAT)")
    b.add_argument("--max-delete", type=number(0, 100, whole=True), default=50, metavar="PCT",
                   help="refuse a pass deleting more (default 50)")  # fmt: skip
    b.add_argument("--backups-keep", type=number(1, 10**6, whole=True), default=10, metavar="N",
                   help="versions kept per file (default 10)")  # fmt: skip
    b.add_argument("--dry-run", "-n", action="store_true", help="print the plan; change nothing")
    b.add_argument("--force", action="store_true", help="pass the delete guard and the empty-replica guard")
    b.add_argument("--json", action="store_true", help="print a machine-readable report")
    add_quiet_options(b)
    c = sub.add_parser("conflicts", help="list the open conflicts of a bisync job")
    c.add_argument("name", help="job name, or PATH1 PATH2 of an ad hoc pair", nargs="+")
    c.add_argument("--json", action="store_true")


def adhoc_job(args: argparse.Namespace) -> BisyncJob:
    p1, p2 = parse_replica(args.path1), parse_replica(args.path2)
    check_pair(p1, p2)
    if not 0 <= args.max_delete <= 100:
        raise UsageError(f"--max-delete {args.max_delete} is not a percentage", "give 0 to 100")
    if args.backups_keep < 1:
        raise UsageError("--backups-keep must be at least 1", "keep one version or more")
    flt = Filter.build(ordered=getattr(args, "rules", None) or [])
    return BisyncJob("adhoc", None, p1, p2, policy=args.conflict, filter=flt, max_delete=args.max_delete,
                     backups_keep=args.backups_keep)  # fmt: skip


def _test_seam() -> Any:
    """TETHER_TEST_AFTER_SCAN=PATH: announce PATH.scanned, wait for PATH.go (tests edit files mid-pass)."""
    where = os.environ.get("TETHER_TEST_AFTER_SCAN")
    if not where:
        return None

    def tweak(opts: Any) -> None:
        def pause() -> None:
            Path(where + ".scanned").touch()
            deadline = time.monotonic() + 30
            while not Path(where + ".go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)

        opts.after_scan = pause

    return tweak


def print_report(rep: Report, as_json: bool, quiet: bool = False) -> int:
    """The pass's report; `quiet` (cron) keeps only errors and refusals."""
    if as_json:
        print(json.dumps(rep.to_json(), indent=1))
    elif quiet:
        for s in rep.skipped:  # a skipped path fails the pass
            print(f"  skipped: {s['path']}: {s['reason']}", file=sys.stderr)
    else:
        verb = "would " if rep.dry_run else ""
        for step in rep.plan if rep.dry_run else []:
            print(
                f"  {step['action']:<8} {step['to']}  {step['path']}"
                + (f"  ({step['note']})" if "note" in step else "")
            )
        print(
            f"{rep.path1} <-> {rep.path2}: {verb}copy {rep.copied['to_path2']} to path2, {rep.copied['to_path1']} to "
            f"path1; {verb}delete {rep.deleted['path2']} on path2, {rep.deleted['path1']} on path1; "
            f"{len(rep.conflicts)} conflicts ({rep.seconds:.2f} s)" + (" [first run]" if rep.first_run else "")
        )
        for c in rep.conflicts:
            print(f"  conflict: {c['path']}: the other version is kept as {c['copy']}")
        for s in rep.skipped:
            print(f"  skipped: {s['path']}: {s['reason']}", file=sys.stderr)
        for w in rep.warnings:
            print(f"  warning: {w}", file=sys.stderr)
    for e in rep.errors:
        print(f"tether: error: {shown(e)}", file=sys.stderr)
    if rep.refused:
        print(f"tether: refused: {rep.refused}" + (f"\n  hint: {rep.hint}" if rep.hint else ""), file=sys.stderr)
    if rep.stopped:
        print(f"tether: {rep.stopped}", file=sys.stderr)
    return EXIT_OK if rep.ok else EXIT_ERRORS


def run_once(
    job: BisyncJob, dirs: Dirs, *, dry_run: bool, force: bool, as_json: bool, quiet: bool = False,
    summary: str | None = None,
) -> int:  # fmt: skip
    """One pass, its report printed; with `summary` (the run's title) one paragraph after it."""
    from tether.bisync.replica import prestart
    from tether.events import Event, pass_end
    from tether.transport.agent import drop_prestarted

    started = time.monotonic()
    said = [Event("pass-begin", job.name)]
    prestart(job, dirs)  # before the engine and the state load: the far side starts meanwhile
    try:
        from tether.bisync.runner import one_pass, report_events

        rep = _pass_beside_service(job, dirs, quiet, lambda: one_pass(job, dirs, dry_run=dry_run, force=force,
                                                                       tweak=_test_seam()))  # fmt: skip
        said += report_events(job, rep)
        return print_report(rep, as_json, quiet)
    except Exception as e:
        why = getattr(e, "message", None) or str(e) or type(e).__name__
        said += [Event("error", job.name, detail=why), pass_end(job.name, "", False)]
        raise
    finally:
        drop_prestarted()
        if summary:  # a pass that raised is told too, before its error
            from tether.summary import paragraph

            whole = f"{job.path1} <-> {job.path2}"
            print(paragraph(shown(summary), said, time.monotonic() - started, whole=whole), flush=True)


SERVICE_PASS_WAIT = 300.0  # how long `tether sync NAME` waits for the running NAME's pass to end


def _pass_beside_service(job: BisyncJob, dirs: Dirs, quiet: bool, run: Callable[[], Report]) -> Report:
    """run(), which takes the replicas' locks. When they are held by this job's own service (it
    is in a pass: `tether sync NAME` while NAME runs), the pass is taken after it, not refused;
    any other holder (another run, another host) is refused at once with exit 4, as before."""
    from tether.errors import LockedError

    deadline: float | None = None
    while True:
        try:
            return run()
        except LockedError:
            from tether.service.daemon import JobPaths  # only then: a pass that got its locks needs neither
            from tether.service.locks import PidLock

            service = PidLock(JobPaths.of(dirs, job.name).pid).holder()
            if service is None or service == os.getpid():
                raise
            if deadline is None:
                deadline = time.monotonic() + SERVICE_PASS_WAIT
                if not quiet:
                    print(f"tether: {job.name} is running (pid {service}) and in a pass: this one follows it"
                          f" (waiting up to {SERVICE_PASS_WAIT:g} s)", file=sys.stderr)  # fmt: skip
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)  # the lock has no queue: look again


def cmd_conflicts(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import load_named

    if len(args.name) == 1:
        loaded = load_named(dirs, args.name[0])
        if not isinstance(loaded, BisyncJob):
            raise UsageError(f"{args.name[0]!r} is a mirror job: only bisync jobs have conflicts")
        job = loaded
    elif len(args.name) == 2:
        job = BisyncJob("adhoc", None, parse_replica(args.name[0]), parse_replica(args.name[1]))
    else:
        raise UsageError("give a job name, or the two paths of an ad hoc pair")
    from tether.bisync.runner import state_path
    from tether.bisync.state import State

    path = state_path(dirs, job)
    if not path.exists():
        rows: list[tuple[bytes, bytes, float, str]] = []
    else:
        state = State(path)
        try:
            rows = state.conflicts()
            synced = state.load()
            gone = [c for _p, c, _t, _n in rows if c not in synced]  # the user deleted the copy: resolved
            state.drop_conflicts(gone)
            rows = [r for r in rows if r[1] in synced]
        finally:
            state.close()
    docs = [
        {"path": shown(os.fsdecode(p)), "copy": shown(os.fsdecode(c)), "since": t, "note": n} for p, c, t, n in rows
    ]
    if args.json:
        print(json.dumps({"conflicts": docs}, indent=1))
    elif not docs:
        print("no open conflicts")
    else:
        for d in docs:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(str(d["since"]))))
            print(f"{d['path']}: other version in {d['copy']} (since {when}); delete the one you do not want")
    return EXIT_OK


def handle(args: argparse.Namespace, dirs: Dirs) -> int:
    if args.command == "conflicts":
        return cmd_conflicts(args, dirs)
    check_quiet_options(args)
    title = f"tether bisync {args.path1} {args.path2}" if args.summary else None
    return run_once(adhoc_job(args), dirs, dry_run=args.dry_run, force=args.force, as_json=args.json,
                    quiet=args.quiet, summary=title)  # fmt: skip


def run_job_live(job: BisyncJob, dirs: Dirs, status_path: Path) -> int:
    """`tether run NAME` for a bisync job: passes on every change until SIGTERM/SIGINT."""
    import logging
    import threading

    from tether.bisync.runner import run_forever
    from tether.service.status import SYNCING, JobStatus, StatusBoard, TargetStatus
    from tether.service.wait import Asked

    log = logging.getLogger("tether")
    target = TargetStatus(str(job.path2), state=SYNCING)  # the first pass is due: not idle before it ran
    board = StatusBoard(status_path, JobStatus(job.name, os.getpid(), str(job.path1), time.time(), targets=[target]))
    stop = threading.Event()
    passes = full = looked = 0

    def on_pass(rep: Report) -> None:
        nonlocal passes, full, looked
        passes += 1
        full += not rep.narrow
        looked += rep.looked
        moved = sum(rep.copied.values()) + sum(rep.deleted.values())
        if moved or rep.conflicts or not rep.ok:
            log.info(
                "pass: %d copied, %d deleted, %d conflicts in %.2f s", sum(rep.copied.values()),
                sum(rep.deleted.values()), len(rep.conflicts), rep.seconds,
            )  # fmt: skip
        for problem in [*rep.errors, *(s["path"] + ": " + s["reason"] for s in rep.skipped)]:
            log.warning("%s", problem)
        if rep.refused:
            log.error("refused: %s", rep.refused)
        now = time.time()
        if rep.ok:
            board.update(target, state="idle", last_success=now, full_passes=full, passes=passes, paths_looked=looked,
                         files_sent=target.files_sent + sum(rep.copied.values()),
                         caught_up=rep.answered or target.caught_up)  # fmt: skip
        else:
            board.update(target, state="retrying", last_error=rep.refused or "; ".join(rep.errors)[:500] or "skipped",
                         last_error_at=now)  # fmt: skip

    asked = Asked()
    with running(board, stop.set, "pass", asked.ask):
        board.update(state="running", force=True)
        run_forever(job, dirs, stop, on_pass, lambda n: board.update(watches=n, force=True), asked)
    return EXIT_OK
