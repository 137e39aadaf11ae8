"""Running bisync passes for a job: replicas, state, before/after commands, one pass or forever."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tether import hooks
from tether.bisync.config import BisyncJob
from tether.bisync.engine import Options, Pass, Report
from tether.bisync.replica import Replica, shown, ssh_for
from tether.bisync.state import State
from tether.dirs import Dirs
from tether.errors import TetherError
from tether.events import NO_EVENTS, Event, for_job, pass_end

if TYPE_CHECKING:
    import logging

    from tether.service.wait import Asked


def state_path(dirs: Dirs, job: BisyncJob) -> Path:
    """Per job, or for an ad hoc pair per (path1, path2), so two pairs never share a state."""
    if job.file is not None:
        return dirs.state / "bisync" / f"{job.name}.sqlite"
    import zlib  # not hashlib: loading OpenSSL costs a quick pass 4 ms; one_pass checks the pair stored

    key = pair_key(job).encode("utf-8", "surrogateescape")
    return dirs.state / "bisync" / f"pair-{zlib.crc32(key):08x}{zlib.adler32(key):08x}.sqlite"


def pair_key(job: BisyncJob) -> str:
    return f"{job.path1.key()}\0{job.path2.key()}"


def options(job: BisyncJob, *, dry_run: bool = False, force: bool = False) -> Options:
    return Options(
        policy=job.policy, dry_run=dry_run, force=force, max_delete=job.max_delete, filter=job.filter,
        backups_keep=job.backups_keep, trash_days=job.trash_days, max_time_soft=job.hooks.max_time_soft,
        max_time_hard=job.hooks.max_time_hard, bwlimit=job.bwlimit, rsync=job.rsync, rsync_args=job.rsync_args,
        preserve=job.preserve,
    )  # fmt: skip


@contextlib.contextmanager
def opened(job: BisyncJob, dirs: Dirs, state: State, *, early: bool = False) -> Iterator[tuple[Replica, Replica]]:
    """Both replicas; a missing root is created only on a first run (never when state exists).
    early, for one pass: an ssh replica is locked and scanned as soon as its agent is up (the
    pass takes that scan; only without a `before` command), and its agent is left to end by
    itself after the pass released its lock."""
    ssh = ssh_for(dirs, job)
    create = state.is_empty()
    owner = f"tether bisync {job.path1} <-> {job.path2}" if early and not job.hooks.before else None
    r1 = Replica.open("path1", job.path1, ssh, create=create, python=job.python, early_lock=owner)
    try:
        r2 = Replica.open("path2", job.path2, ssh, create=create, python=job.python, early_lock=owner)
    except BaseException:
        r1.close()
        raise
    try:
        yield r1, r2
    finally:
        r1.close(wait=not early)
        r2.close(wait=not early)


def commands_remote(job: BisyncJob, r1: Replica, r2: Replica) -> hooks.RemoteRun | None:
    """Where the job's before/after run: here (None), or (commands_on) in a replica's root."""
    if job.hooks.on == "local":
        return None
    return hooks.agent_runner((r1 if job.hooks.on == "path1" else r2).call)


def one_pass(
    job: BisyncJob, dirs: Dirs, *, dry_run: bool = False, force: bool = False,
    replicas: tuple[Replica, Replica] | None = None, tweak: Callable[[Options], None] | None = None,
    state: State | None = None, narrow: list[bytes] | None = None,
) -> Report:  # fmt: skip
    """One pass; a running job passes its open replicas and state, so neither is rebuilt per pass."""
    events = NO_EVENTS if dry_run else for_job(dirs.state, job.name if job.file is not None else None)
    events.emit(Event("pass-begin", job.name, detail="narrow" if narrow is not None else ""))
    try:
        rep = _one_pass(job, dirs, dry_run, force, replicas, tweak, state, narrow)
    except Exception as e:
        failed = Event("error", job.name, detail=str(e) or type(e).__name__)
        events.emit(failed, pass_end(job.name, "", False, errors=1))
        raise
    events.emit_all(report_events(job, rep))
    return rep


def report_events(job: BisyncJob, rep: Report) -> list[Event]:
    """A pass's report in the events every job kind speaks (see tether.events)."""
    name = job.name
    if rep.refused:
        return [Event("refused", name, detail=rep.refused)]
    side = {"path1": str(job.path1), "path2": str(job.path2)}
    out = []
    for d in rep.plan:
        act, where = d["action"], side.get(d["to"], d["to"])
        if act in ("copy", "mkdir", "meta"):
            out.append(Event("sent", name, where, d["path"], d.get("note", "")))
        elif act in ("delete", "rmdir"):
            out.append(Event("deleted", name, where, d["path"], "kept in .tether/versions"))
    for c in rep.conflicts:
        kept = f"the other version is {c['copy']}" if c.get("copy") else f"the losing one is in {c['loser_kept_in']}"
        out.append(Event("conflict", name, "", c["path"], f"{c['policy']}: {kept}"))
    problems = [*rep.errors, *(s["path"] + ": " + s["reason"] for s in rep.skipped)]
    out += [Event("error", name, detail=e) for e in problems]
    if rep.stopped:
        out.append(Event("error", name, detail=rep.stopped))
    out += [Event("warning", name, detail=w) for w in rep.warnings]
    return [*out, pass_end(name, "", rep.ok, **report_counts(rep))]


def report_counts(rep: Report) -> dict[str, int]:
    """A pass's counts as events and hooks name them."""
    return {"sent": sum(rep.copied.values()), "deleted": sum(rep.deleted.values()),
            "conflicts": len(rep.conflicts), "errors": len(rep.errors) + len(rep.skipped)}  # fmt: skip


def _one_pass(
    job: BisyncJob, dirs: Dirs, dry_run: bool, force: bool, replicas: tuple[Replica, Replica] | None,
    tweak: Callable[[Options], None] | None, state: State | None, narrow: list[bytes] | None,
) -> Report:  # fmt: skip
    where = state_path(dirs, job)
    own = state is None
    if state is None:
        state = State(None if dry_run and not where.exists() else where)
    try:
        stored = state.meta("pair")  # the pair the state was made for (an earlier release's: adopted)
        if stored is not None and stored != pair_key(job):
            if job.file is None:  # an ad hoc pair's state is found by a 64-bit checksum: never another's
                raise TetherError(f"state file {where} belongs to another pair", "remove it or make this pair a job")
            # the job file now names other replicas: what the state says was there proves nothing about
            # them, and read as deletions it would delete on the other side
            was = " <-> ".join(shown(os.fsencode(k)) for k in stored.split("\0"))
            state.start_over(f"job {job.name}'s state was made for {was}, and the job now names {job.path1} <-> "
                             f"{job.path2}", keep_file=dry_run)  # fmt: skip
            stored = None
        if stored is None and not dry_run:
            state.set_meta("pair", pair_key(job))
        with contextlib.ExitStack() as stack:
            r1, r2 = replicas if replicas is not None else stack.enter_context(opened(job, dirs, state, early=True))
            opts = options(job, dry_run=dry_run, force=force)
            if tweak:
                tweak(opts)
            if dry_run:
                return Pass(r1, r2, state, opts, ssh_for(dirs, job), narrow).run()
            remote, places = commands_remote(job, r1, r2), {"path1": str(job.path1), "path2": str(job.path2)}
            before = job.hooks.run_before(remote, **places)
            if not before.go:
                rep = Report(str(job.path1), str(job.path2), refused=before.said or "")
                rep.hint = 'the pass did not run; fix the command, remove `before`, or set before_fails = "continue"'
                return rep
            rep = Pass(r1, r2, state, opts, ssh_for(dirs, job), narrow).run()
            if before.said:
                rep.warnings.append(before.said)
            status = "ok" if rep.ok else "refused" if rep.refused else "stopped" if rep.stopped else "error"
            failed = job.hooks.run_after(status, report_counts(rep), remote, **places)
            if failed:
                rep.errors.append(failed)
            return rep
    finally:
        if own:
            state.close()


POLL_LOST = 2.0  # how often a directory that could not be watched is looked at instead
REOPEN_MAX = 30.0  # the longest pause between attempts to open a dead channel again
MAX_NARROW = 2000  # more dirty paths than this: one full pass is cheaper than naming them all


class Feed:
    """What the watchers saw since the last pass: the paths to look at, or everything."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.paths: set[bytes] = set()
        self.full = True  # the first pass looks at everything
        self.lost: set[bytes] = set()  # directories without a watch: looked at every POLL_LOST

    def add(self, paths: Iterable[bytes], full: bool = False) -> None:
        with self.cv:
            self.paths.update(paths)
            self.full = self.full or full
            self.cv.notify()

    def take(self, timeout: float) -> tuple[bool, list[bytes]] | None:
        """(full?, the narrowest set of tops) once something is waiting, None after timeout."""
        with self.cv:
            if not self.cv.wait_for(lambda: self.full or self.paths, timeout):
                return None
            full, paths = self.full or len(self.paths) > MAX_NARROW, self.paths
            self.full, self.paths = False, set()
        return full, [] if full else tops_of(paths)


def tops_of(paths: Iterable[bytes]) -> list[bytes]:
    """The paths with none of their ancestors among them (a dir's scan covers what is below it)."""
    out: list[bytes] = []
    for p in sorted(paths):
        if out and (p == out[-1] or p.startswith(out[-1] + b"/")):
            continue
        out.append(p)
    return out


def start_watch(w: Replica, job: BisyncJob) -> tuple[int, list[tuple[bytes, str]]]:
    """Place the watches before the first pass (nothing written meanwhile is missed).  A tree
    that needs more watches than the kernel allows is refused as the mirror refuses it."""
    from tether.agent_remote import to_bytes
    from tether.watch import too_many_watches
    from tether.watchlimit import max_user_watches

    res = w.call("watch", timeout=0, rules=job.filter.agent_rules())
    lost = [(to_bytes(d), why, code) for d, why, code in res.get("lost", [])]
    if any(code == errno.ENOSPC for _d, _w, code in lost):
        raise too_many_watches(str(w), int(res.get("watches", 0)) + len(lost), max_user_watches())
    return int(res.get("watches", 0)), [(d, why) for d, why, _c in lost]


def run_forever(
    job: BisyncJob, dirs: Dirs, stop: threading.Event, on_pass: Callable[[Report], None],
    on_watch: Callable[[int], None] | None = None, asked: Asked | None = None,
) -> None:  # fmt: skip
    """Continuous bisync.  Each side's agent watches (inotify, the job's filters applied where
    the watches are placed) and streams the paths that changed; a pass looks at those paths on
    both sides, decided by the same table as a full pass.  A full pass runs at start, every
    `interval` seconds (the safety net, and how rclone sides are polled), and whenever a watch
    says it may have missed something (a queue overflow, a moved root).  `tether wait` (`asked`)
    gets a full pass begun after it asked: its report's `answered` says so.  A channel that dies
    (ssh gave up on a host gone longer than its keepalive) is opened again, both sides' with it,
    after a pause that doubles up to REOPEN_MAX; a full pass follows.  Only the first opening's
    failure ends the job: the replicas were reachable once."""
    import logging  # here: a one-shot pass logs nothing, and loading logging is 3 ms of its start

    log = logging.getLogger("tether.bisync")
    state = State(state_path(dirs, job))
    feed = Feed()
    waiting: list[int] = []  # the times of the waits the next full pass answers
    pause, served = 0.0, False
    try:
        while not stop.is_set():
            try:
                _serve(job, dirs, state, feed, stop, on_pass, on_watch, asked, waiting, log)
                served, pause = True, 0.0
            except TetherError as e:
                if not served:
                    raise
                log.error("cannot open the replicas again: %s", e)
                on_pass(Report(str(job.path1), str(job.path2), errors=[str(e)]))
            if stop.is_set():
                break
            pause = min(REOPEN_MAX, pause * 2 or 0.5)
            feed.add((), full=True)  # what changed while a side was away was not seen
            stop.wait(pause)
    finally:
        state.close()


def _serve(
    job: BisyncJob, dirs: Dirs, state: State, feed: Feed, stop: threading.Event, on_pass: Callable[[Report], None],
    on_watch: Callable[[int], None] | None, asked: Asked | None, waiting: list[int], log: logging.Logger,
) -> None:  # fmt: skip
    """Watch and pass over one opening of the replicas, until stopped or until a channel dies."""
    from tether.agent_remote import to_bytes

    with opened(job, dirs, state) as (r1, r2), opened(job, dirs, state) as (w1, w2):  # a watch blocks its channel
        watched = [w for w in (w1, w2) if w.endpoint.caps.events]
        narrowable = len(watched) == 2  # an rclone side has no change feed: every pass is full

        def lose(w: Replica, lost: list[tuple[bytes, str]]) -> None:
            for d, why in lost:
                log.warning("cannot watch %s on %s (%s): looked at every %g s instead", shown(d), w, why, POLL_LOST)
            with feed.cv:
                feed.lost.update(d for d, _why in lost)

        watches = 0
        for w in watched:
            n, lost = start_watch(w, job)
            watches += n
            lose(w, lost)
        if on_watch is not None:
            on_watch(watches)
        done = threading.Event()  # this opening is over

        def watch(w: Replica) -> None:
            while not (stop.is_set() or done.is_set()):
                try:
                    res = w.call("watch", timeout=1.0)
                except TetherError as e:
                    if not done.is_set():
                        log.error("watching %s failed: %s; a full pass every %g s instead", w, e, POLL_LOST)
                    blind.set()
                    feed.add((), full=True)
                    return
                lose(w, [(to_bytes(d), why) for d, why, _code in res.get("lost", [])])
                if res["paths"] or res["full"]:
                    if res["full"]:
                        log.info("a watch on %s may have missed changes: a full pass", w)
                    feed.add(map(to_bytes, res["paths"]), res["full"])

        blind = threading.Event()
        threads = [threading.Thread(target=watch, args=(w,), daemon=True) for w in watched]
        for t in threads:
            t.start()
        last_full = last_poll = time.monotonic()
        failed = False  # the last pass failed as a whole (a side locked, unreachable): what it was to
        # look at is no longer in the feed, so full passes follow every POLL_LOST until one works
        try:
            while not stop.is_set():
                dead = [str(r) for r in (r1, r2, w1, w2) if r.down]
                if dead:
                    log.warning("lost the connection to %s: opening it again", ", ".join(sorted(set(dead))))
                    return
                now = time.monotonic()
                wait_asked = asked.take() if asked is not None else None
                if wait_asked is not None:
                    waiting.append(wait_asked)
                    feed.add((), full=True)
                if now - last_full >= (POLL_LOST if blind.is_set() or failed else job.interval):
                    feed.add((), full=True)
                if feed.lost and now - last_poll >= POLL_LOST:
                    last_poll = now
                    feed.add(feed.lost)
                got = feed.take(0.5)
                if got is None:
                    continue
                full, tops = got
                full = full or not narrowable
                try:
                    rep = one_pass(job, dirs, replicas=(r1, r2), state=state, narrow=None if full else tops)
                    failed = False
                except TetherError as e:
                    log.error("pass failed: %s", e)
                    rep = Report(str(job.path1), str(job.path2), errors=[str(e)])
                    failed = True
                if full:
                    last_full = time.monotonic()
                    if waiting and rep.ok:
                        rep.answered = max(waiting)
                        waiting.clear()
                rep.narrow, rep.looked = not full, 0 if full else len(tops)
                on_pass(rep)
        finally:
            done.set()
            for t in threads:
                t.join(timeout=3)
