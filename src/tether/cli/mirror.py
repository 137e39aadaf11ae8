"""`tether mirror SRC DST...` (once, or `--watch`), and the one-shot pass a mirror job runs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tether.dirs import Dirs
from tether.endpoints import Local, ReplicaSpec, as_local, check_overlap, parse_endpoint, parse_replica
from tether.errors import EXIT_ERRORS, EXIT_OK, TetherError, UsageError
from tether.filters import Filter
from tether.output import shown
from tether.ssh import SshOptions

if TYPE_CHECKING:  # the mirror machinery is imported when a mirror runs: other commands start faster
    from tether.events import EventLog
    from tether.hooks import PassHooks, RemoteRun
    from tether.mirror import MirrorSpec, RemotePass, TargetOutcome
    from tether.transport.agent import AgentClient


def run_pass(
    spec: MirrorSpec,
    args: argparse.Namespace,
    dirs: Dirs,
    ssh: SshOptions,
    pass_hooks: PassHooks | None = None,
    events: EventLog | None = None,
    python: str = "auto",
) -> int:
    """One pass to every target; a job's `pass_hooks` put its before/after commands around it
    and its time limits on it; a job's `events` hear how each target's pass ended; `python`
    starts the agents that run commands on targets."""
    import time

    if args.dry_run or not (pass_hooks and pass_hooks.before):  # else after it: it may make the remote reachable
        _prestart_rclone(spec.targets)
    recorder = None
    if args.summary:
        from tether.events import NO_EVENTS
        from tether.summary import Recorder

        events = recorder = Recorder(events or NO_EVENTS)
    started = time.monotonic()
    try:
        return _run_pass(spec, args, dirs, ssh, pass_hooks, events, python)
    finally:
        drop_prestarted()
        if recorder is not None:  # a pass that raised is told too, before its error
            from tether.summary import paragraph

            name = getattr(args, "name", None)
            title = f"tether sync {name}" if name else f"tether mirror {spec.source.path}"
            kept_in = ".tether/versions" if spec.trash else ""
            print(paragraph(shown(title), recorder.seen, time.monotonic() - started, kept_in=kept_in), flush=True)


def drop_prestarted() -> None:
    """End what `_prestart_rclone` or tether/launch.py started and no pass took (and an rcd a
    failed listing started)."""
    from tether import rclone_scan
    from tether.transport import rcd, rclone_lsf

    rclone_scan.drop()
    rclone_lsf.drop()
    rcd.drop_prestarted()


def _prestart_rclone(targets: Sequence[ReplicaSpec]) -> None:
    """Start listing each rclone target now: rclone's start (60-90 ms) and its walk then overlap
    loading the mirror machinery, and the pass takes the listing (see transport/rclone_lsf.py)."""
    remotes = [t for t in targets if t.kind == "rclone"]
    if remotes:
        from tether.transport import rclone_lsf
        from tether.transport.rclone_bin import rclone_program

        for t in remotes:
            rclone_lsf.prelist(rclone_program(), str(t))


def _run_pass(
    spec: MirrorSpec,
    args: argparse.Namespace,
    dirs: Dirs,
    ssh: SshOptions,
    pass_hooks: PassHooks | None,
    events: EventLog | None,
    python: str,
) -> int:
    from tether import hooks
    from tether.events import NO_EVENTS, Event, pass_end
    from tether.mirror import Mirror
    from tether.output import print_outcomes
    from tether.state import KnownTargets
    from tether.transport.rsync import Rsync

    def say(line: str) -> None:
        print(f"+ {shown(line)}", file=sys.stderr)

    pass_hooks = pass_hooks or hooks.PassHooks()
    events = events or NO_EVENTS
    job = getattr(args, "name", None) or ""
    commands = _Commands(pass_hooks, spec, ssh, python)
    refused: list[TargetOutcome] = []
    if not args.dry_run:
        going, refused, warnings = commands.before()
        for o in refused:
            events.emit(Event("refused", job, o.target, detail=o.errors[0]))
        if not going:
            commands.close()
            print_outcomes(spec.source.path, refused, dry_run=False, as_json=args.json, quiet=args.quiet)
            return EXIT_ERRORS
        for w in warnings:
            if not args.quiet:
                print(f"tether: warning: {w}", file=sys.stderr)
            events.emit(Event("warning", job, detail=w))
        spec = dataclasses.replace(spec, targets=going)
    bar = None
    if sys.stderr.isatty() and not (args.json or args.verbose or args.quiet):
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
        commands.close()
        raise
    finally:
        if bar:
            bar.close()
    outcomes = refused + outcomes
    print_outcomes(spec.source.path, outcomes, dry_run=args.dry_run, as_json=args.json, quiet=args.quiet)
    for o in outcomes:
        said = [Event("refused" if o.refused else "error", job, o.target, detail=e) for e in o.errors]
        counts = {"sent": o.files, "deleted": o.deleted, "bytes": o.bytes, "errors": len(o.errors)}
        events.emit(*said, pass_end(job, o.target, o.ok, **counts))
    ok = all(o.ok for o in outcomes)
    warning = clock.soft_warning()
    if warning:
        if not args.quiet:
            print(f"tether: warning: {warning}", file=sys.stderr)
        events.emit(Event("warning", job, detail=warning))
    if not args.dry_run:
        for failed in commands.after(outcomes):
            print(f"tether: error: {failed}", file=sys.stderr)
            events.emit(Event("error", job, detail=failed))
            ok = False
    return EXIT_OK if ok else EXIT_ERRORS


SKIPPED_HINT = 'the pass did not run; fix the command, remove `before`, or set before_fails = "continue"'


class _Commands:
    """A mirror job's before/after around one pass: once here, or (commands_on = "targets") once
    in each target's root through its agent, where a failing `before` skips that target only."""

    def __init__(self, pass_hooks: PassHooks, spec: MirrorSpec, ssh: SshOptions, python: str) -> None:
        self.hooks, self.spec, self.ssh, self.python = pass_hooks, spec, ssh, python
        self.agents: dict[ReplicaSpec, AgentClient] = {}  # on targets: each one's agent, open until after
        self.here = pass_hooks.on != "targets"
        self.going: list[ReplicaSpec] = []  # on targets: those whose `before` let the pass go

    def before(self) -> tuple[tuple[ReplicaSpec, ...], list[TargetOutcome], list[str]]:
        """The targets to pass to, the outcomes of those skipped, and the warnings to give."""
        from tether.hooks import Before
        from tether.mirror import TargetOutcome

        if not (self.hooks.before or self.hooks.after):
            return self.spec.targets, [], []
        if self.here:
            before = self.hooks.run_before(None, **self._where(None))
            if not before.go:
                skipped = [TargetOutcome(str(t), False, errors=[before.said or ""], hint=SKIPPED_HINT, refused=True)
                           for t in self.spec.targets]  # fmt: skip
                return (), skipped, []
            return self.spec.targets, [], [before.said] if before.said else []
        going, skipped, said = [], [], []
        for t in self.spec.targets:
            try:
                self.agents[t] = t.connector(self.ssh, self.python)()
                before = self.hooks.run_before(self._remote(t), **self._where(t))
            except TetherError as e:
                before = Before(False, f"before command on {t} could not run: {e}")
            if before.go:
                going.append(t)  # only these run `after`: a target skipped had no pass
                said += [f"{t}: {before.said}"] if before.said else []
            else:
                skipped.append(
                    TargetOutcome(str(t), False, errors=[before.said or ""], hint=SKIPPED_HINT, refused=True)
                )
        self.going = going
        return tuple(going), skipped, said

    def after(self, outcomes: list[TargetOutcome]) -> list[str]:
        """Run `after` (told each outcome's status and counts); the failures, to report."""
        try:
            if not (self.hooks.before or self.hooks.after):
                return []
            if self.here:
                failed = self.hooks.run_after(_status(outcomes), _counts(outcomes), None, **self._where(None))
                return [failed] if failed else []
            by_name = {o.target: o for o in outcomes}
            out = []
            for t in self.going:
                o = by_name[str(t)]
                failed = self.hooks.run_after(_status([o]), _counts([o]), self._remote(t), **self._where(t))
                out += [f"{t}: {failed}"] if failed else []
            return out
        finally:
            self.close()

    def close(self) -> None:
        for agent in self.agents.values():
            with contextlib.suppress(Exception):
                agent.close()
        self.agents.clear()

    def _remote(self, target: ReplicaSpec) -> RemoteRun:
        from tether.hooks import agent_runner

        return agent_runner(self.agents[target].call)

    def _where(self, target: ReplicaSpec | None) -> dict[str, str]:
        if target is not None:
            return {"source": self.spec.source.path, "target": str(target)}
        return {"source": self.spec.source.path, "targets": "\n".join(str(t) for t in self.spec.targets)}


def _status(outcomes: list[TargetOutcome]) -> str:
    """How a pass went, as `after` is told it: ok, refused (every failure a refusal) or error."""
    failed = [o for o in outcomes if not o.ok]
    return "ok" if not failed else "refused" if all(o.refused for o in failed) else "error"


def _counts(outcomes: list[TargetOutcome]) -> dict[str, int]:
    return {"sent": sum(o.files for o in outcomes), "deleted": sum(o.deleted for o in outcomes),
            "bytes": sum(o.bytes for o in outcomes), "errors": sum(len(o.errors) for o in outcomes)}  # fmt: skip


def cmd_mirror(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.cli.common import check_quiet_options

    check_quiet_options(args)
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

    _prestart_rclone(targets)  # rclone starts while the rest loads
    try:
        from tether.mirror import MirrorSpec

        spec = MirrorSpec(source, tuple(targets), flt, delete=not args.no_delete, bwlimit=args.bwlimit)
        return run_pass(spec, args, dirs, SshOptions.from_env(dirs))
    finally:
        drop_prestarted()


def _watch(args: argparse.Namespace, dirs: Dirs, source: Local, targets: list[ReplicaSpec], flt: Filter) -> int:
    """`tether mirror --watch`: a continuous mirror until stopped."""
    from tether.cli.service import run_live
    from tether.config import LiveOptions
    from tether.mirror import MirrorSpec

    spec = MirrorSpec(source, tuple(targets), flt, delete=not args.no_delete, bwlimit=args.bwlimit)
    if args.dry_run:
        raise UsageError("--watch and --dry-run do not go together", "preview with --dry-run alone first")
    if args.summary or args.json:
        raise UsageError("--watch runs until stopped: it has no end to sum up", "drop --summary/--json")
    from tether.jobkeys import LogSettings
    from tether.service import joblog

    joblog.setup("", LogSettings(), quiet=args.quiet)
    status = dirs.runtime / "jobs" / f"adhoc-{os.getpid()}.status.json"
    try:
        opts = LiveOptions(delay=args.delay, watcher=args.watcher)
        return run_live("mirror --watch", spec, opts, SshOptions.from_env(dirs), dirs, status)
    finally:
        status.unlink(missing_ok=True)
