"""Running bisync passes for a job: replicas, state, before/after commands, one pass or forever."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tether.bisync.config import BisyncJob
from tether.bisync.engine import Options, Pass, Report
from tether.bisync.rclone_spec import Rclone
from tether.bisync.replica import Replica, ssh_for
from tether.bisync.state import State
from tether.dirs import Dirs
from tether.errors import TetherError


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
        backups_keep=job.backups_keep, trash_days=job.trash_days, max_time_soft=job.max_time_soft,
        max_time_hard=job.max_time_hard, bwlimit=job.bwlimit,
    )  # fmt: skip


@contextlib.contextmanager
def opened(job: BisyncJob, dirs: Dirs, state: State, *, early: bool = False) -> Iterator[tuple[Replica, Replica]]:
    """Both replicas; a missing root is created only on a first run (never when state exists).
    early, for one pass: an ssh replica is locked and scanned as soon as its agent is up (the
    pass takes that scan; only without a `before` command), and its agent is left to end by
    itself after the pass released its lock."""
    ssh = ssh_for(dirs, job)
    create = state.is_empty()
    owner = f"tether bisync {job.path1} <-> {job.path2}" if early and not job.before else None
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


def run_command(job: BisyncJob, which: str, argv: tuple[str, ...], r1: Replica, r2: Replica) -> str | None:
    """A before/after command (argument list, never a shell), here or in a replica's root; an error or None."""
    if not argv:
        return None
    where = job.commands_on
    try:
        if where == "local":
            proc = subprocess.run(
                list(argv), capture_output=True, timeout=job.command_timeout, stdin=subprocess.DEVNULL
            )
            rc, err = proc.returncode, proc.stderr.decode("utf-8", "replace")
        else:
            res = (r1 if where == "path1" else r2).call("run", argv=list(argv), timeout=job.command_timeout)
            if res.get("timed_out"):
                raise subprocess.TimeoutExpired(list(argv), job.command_timeout)
            rc, err = int(res["rc"]), str(res.get("stderr", ""))
    except subprocess.TimeoutExpired:
        return f"{which} command {argv[0]!r} did not finish within {job.command_timeout:g} s"
    except (OSError, TetherError) as e:
        return f"{which} command {argv[0]!r} could not run: {e}"
    if rc != 0:
        last = err.strip().splitlines()[-1:] or ["no message"]
        return f"{which} command {argv[0]!r} failed (exit {rc}): {last[0]}"
    return None


def one_pass(
    job: BisyncJob, dirs: Dirs, *, dry_run: bool = False, force: bool = False,
    replicas: tuple[Replica, Replica] | None = None, tweak: Callable[[Options], None] | None = None,
    state: State | None = None,
) -> Report:  # fmt: skip
    """One pass; a running job passes its open replicas and state, so neither is rebuilt per pass."""
    where = state_path(dirs, job)
    own = state is None
    if state is None:
        state = State(None if dry_run and not where.exists() else where)
    try:
        if job.file is None:  # an ad hoc pair's state is found by a 64-bit checksum: make sure it is ours
            stored = state.meta("pair")
            if stored is None and not dry_run:
                state.set_meta("pair", pair_key(job))
            elif stored is not None and stored != pair_key(job):
                raise TetherError(f"state file {where} belongs to another pair", "remove it or make this pair a job")
        with contextlib.ExitStack() as stack:
            r1, r2 = replicas if replicas is not None else stack.enter_context(opened(job, dirs, state, early=True))
            opts = options(job, dry_run=dry_run, force=force)
            if tweak:
                tweak(opts)
            if not dry_run:
                failed = run_command(job, "before", job.before, r1, r2)
                if failed:
                    rep = Report(str(job.path1), str(job.path2), refused=failed)
                    rep.hint = "the pass did not run; fix the command or remove `before` from the job"
                    return rep
            rep = Pass(r1, r2, state, opts, ssh_for(dirs, job)).run()
            if not dry_run:
                failed = run_command(job, "after", job.after, r1, r2)
                if failed:
                    rep.errors.append(failed)
            return rep
    finally:
        if own:
            state.close()


def run_forever(job: BisyncJob, dirs: Dirs, stop: threading.Event, on_pass: Callable[[Report], None]) -> None:
    """Continuous bisync: a pass whenever either side changes (inotify there, through each side's
    agent), and every `interval` seconds anyway (the safety net, and how rclone sides are polled)."""
    import logging

    log = logging.getLogger("tether.bisync")
    state = State(state_path(dirs, job))
    try:
        with opened(job, dirs, state) as (r1, r2), opened(job, dirs, state) as (w1, w2):  # a watch blocks its channel
            changed = threading.Event()

            def watch(rep: Replica) -> None:
                while not stop.is_set():
                    try:
                        if rep.call("watch", timeout=1.0).get("changed"):
                            changed.set()
                    except TetherError as e:
                        log.warning("watching %s failed: %s; falling back to the interval", rep, e)
                        return

            # an rclone remote has no change feed: it is polled by the pass every `interval`
            watched = [w for w in (w1, w2) if not isinstance(w.endpoint, Rclone)]
            for w in watched:  # watches in place before the first pass: no change can fall between them
                w.call("watch", timeout=0)
            threads = [threading.Thread(target=watch, args=(w,), daemon=True) for w in watched]
            for t in threads:
                t.start()
            last = 0.0
            changed.set()  # a first pass at once
            while not stop.is_set():
                if not changed.wait(timeout=0.5) and time.monotonic() - last < job.interval:
                    continue
                changed.clear()
                time.sleep(0.05)  # let a burst of edits land in one pass
                changed.clear()
                try:
                    rep = one_pass(job, dirs, replicas=(r1, r2), state=state)
                except TetherError as e:
                    log.error("pass failed: %s", e)
                    rep = Report(str(job.path1), str(job.path2), errors=[str(e)])
                last = time.monotonic()
                on_pass(rep)
            stop.set()
            for t in threads:
                t.join(timeout=3)
    finally:
        state.close()
