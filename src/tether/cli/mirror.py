"""`tether mirror SRC DST...` (once, or `--watch`), and the one-shot pass a mirror job runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tether.dirs import Dirs
from tether.endpoints import Local, ReplicaSpec, as_local, check_overlap, parse_endpoint, parse_replica
from tether.errors import EXIT_ERRORS, EXIT_OK, UsageError
from tether.filters import Filter
from tether.output import shown
from tether.ssh import SshOptions

if TYPE_CHECKING:  # the mirror machinery is imported when a mirror runs: other commands start faster
    from tether.events import EventLog
    from tether.hooks import PassHooks
    from tether.mirror import MirrorSpec, RemotePass


def run_pass(
    spec: MirrorSpec,
    args: argparse.Namespace,
    dirs: Dirs,
    ssh: SshOptions,
    pass_hooks: PassHooks | None = None,
    events: EventLog | None = None,
) -> int:
    """One pass to every target; a job's `pass_hooks` put its before/after commands around it
    and its time limits on it; a job's `events` hear how each target's pass ended."""
    from tether.transport import rcd

    if args.dry_run or not (pass_hooks and pass_hooks.before):  # else after it: it may make the remote reachable
        _prestart_rcd(spec.targets)
    try:
        return _run_pass(spec, args, dirs, ssh, pass_hooks, events)
    finally:
        rcd.drop_prestarted()


def _prestart_rcd(targets: Sequence[ReplicaSpec]) -> None:
    """Start an rcd for each rclone target now: rclone's start (60-90 ms) then overlaps loading
    the mirror machinery, and the target's connect takes it (see transport/rcd.py)."""
    remotes = sum(1 for t in targets if t.kind == "rclone")
    if remotes:
        from tether.transport import rcd
        from tether.transport.rclone_bin import rclone_program

        rcd.prestart(rclone_program(), remotes)


def _run_pass(
    spec: MirrorSpec,
    args: argparse.Namespace,
    dirs: Dirs,
    ssh: SshOptions,
    pass_hooks: PassHooks | None,
    events: EventLog | None,
) -> int:
    from tether import hooks
    from tether.events import NO_EVENTS, Event, pass_end
    from tether.mirror import Mirror, TargetOutcome
    from tether.output import print_outcomes
    from tether.state import KnownTargets
    from tether.transport.rsync import Rsync

    def say(line: str) -> None:
        print(f"+ {shown(line)}", file=sys.stderr)

    pass_hooks = pass_hooks or hooks.PassHooks()
    events = events or NO_EVENTS
    job = getattr(args, "name", None) or ""
    if not args.dry_run:
        failed = hooks.run_command("before", pass_hooks.before, pass_hooks.command_timeout)
        if failed:
            events.emit(Event("refused", job, detail=failed))
            print(f"tether: refused: {failed}\n  hint: the pass did not run; fix the command or remove `before`"
                  " from the job", file=sys.stderr)  # fmt: skip
            return EXIT_ERRORS
    bar = None
    if sys.stderr.isatty() and not args.json and not args.verbose:
        from tether.progress import ProgressLine

        bar = ProgressLine()
    remote_pass: RemotePass | None = None
    if not all(t.caps.rsync for t in spec.targets):
        from tether.rclone_mirror import one_shot

        remote_pass = one_shot
    mirror = Mirror(
        Rsync(ssh, spec.rsync), KnownTargets(dirs.state), verbose=say if args.verbose else None, progress=bar,
        remote_pass=remote_pass,
    )  # fmt: skip
    clock = pass_hooks.clock()
    events.emit_all(Event("pass-begin", job, str(t)) for t in spec.targets)
    try:
        outcomes: list[TargetOutcome] = mirror.run(spec, dry_run=args.dry_run, force=args.force, clock=clock)
    except Exception as e:
        events.emit(Event("error", job, detail=str(e) or type(e).__name__), pass_end(job, "", False, errors=1))
        raise
    finally:
        if bar:
            bar.close()
    print_outcomes(spec.source.path, outcomes, dry_run=args.dry_run, as_json=args.json)
    for o in outcomes:
        said = [Event("refused" if o.refused else "error", job, o.target, detail=e) for e in o.errors]
        counts = {"sent": o.files, "deleted": o.deleted, "bytes": o.bytes, "errors": len(o.errors)}
        events.emit(*said, pass_end(job, o.target, o.ok, **counts))
    ok = all(o.ok for o in outcomes)
    warning = clock.soft_warning()
    if warning:
        print(f"tether: warning: {warning}", file=sys.stderr)
        events.emit(Event("warning", job, detail=warning))
    if not args.dry_run:
        failed = hooks.run_command("after", pass_hooks.after, pass_hooks.command_timeout)
        if failed:
            print(f"tether: error: {failed}", file=sys.stderr)
            ok = False
    return EXIT_OK if ok else EXIT_ERRORS


def cmd_mirror(args: argparse.Namespace, dirs: Dirs) -> int:
    source = as_local(parse_endpoint(args.src))
    if source is None:
        raise UsageError(f"source {args.src!r} must be a local directory", "tether pushes from this machine")
    targets = [parse_replica(d) for d in args.dst]
    check_overlap(source, targets)
    if args.bwlimit is not None:
        from tether.transport.rsync import RATE_RE

        if not RATE_RE.fullmatch(args.bwlimit):
            raise UsageError(f"--bwlimit {args.bwlimit!r} is not a rate", "write e.g. --bwlimit 5M or --bwlimit 500")
    flt = Filter.build(exclude_from=args.exclude_from, ordered=getattr(args, "rules", None) or [])
    if args.watch:
        return _watch(args, dirs, source, targets, flt)
    from tether.transport import rcd

    _prestart_rcd(targets)  # rclone starts while the rest loads
    try:
        from tether.mirror import MirrorSpec

        spec = MirrorSpec(source, tuple(targets), flt, delete=not args.no_delete, bwlimit=args.bwlimit)
        return run_pass(spec, args, dirs, SshOptions.from_env(dirs))
    finally:
        rcd.drop_prestarted()


def _watch(args: argparse.Namespace, dirs: Dirs, source: Local, targets: list[ReplicaSpec], flt: Filter) -> int:
    """`tether mirror --watch`: a continuous mirror until stopped."""
    from tether.cli.service import run_live
    from tether.config import LiveOptions
    from tether.mirror import MirrorSpec

    spec = MirrorSpec(source, tuple(targets), flt, delete=not args.no_delete, bwlimit=args.bwlimit)
    if args.dry_run:
        raise UsageError("--watch and --dry-run do not go together", "preview with --dry-run alone first")
    status = dirs.runtime / "jobs" / f"adhoc-{os.getpid()}.status.json"
    try:
        return run_live("mirror --watch", spec, LiveOptions(delay=args.delay), SshOptions.from_env(dirs), dirs, status)
    finally:
        status.unlink(missing_ok=True)
