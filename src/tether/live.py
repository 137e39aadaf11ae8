"""The continuous mirror: watch the source, push each change to every target independently.

    Watcher -> Coalescer -> (one queue per target) -> TargetWorker -> Applier -> agent | rsync

Each target has its own thread and queue, so a slow or unreachable target never delays the
others. A failed batch is never retried piecemeal: the target is marked for a full pass,
which converges whatever was lost (moves included) once the target is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tether.apply import AGENT_BATCH, Applier, BatchResult
from tether.coalesce import for_target
from tether.config import LiveOptions
from tether.crashpoints import crashpoint
from tether.endpoints import as_rclone, by_rsync
from tether.errors import TetherError
from tether.events import NO_EVENTS, Event, EventLog, pass_end, shown_path
from tether.hooks import NO_HOOKS, PassHooks
from tether.mirror import Mirror, MirrorSpec
from tether.service.status import DOWN, IDLE, RETRYING, SYNCING, WAITING, StatusBoard, TargetStatus
from tether.service.wait import Asked
from tether.ssh import SshOptions
from tether.transport.agent import AgentDown, AgentError
from tether.watch import MAX_DELAY, MOVE_GRACE, BaseWatcher, Change, Coalescer, SourceMissing, coalesce
from tether.watchers import PassWatcher, open_watcher

log = logging.getLogger("tether")

QUEUE_LIMIT = 50_000  # more pending changes than this: a full pass is cheaper than the list
BACKOFF_MAX = 10.0
RECHECK_S = 10.0  # how often a target reached only in part (a pool member away) is looked at again
SETTLE = 0.1  # a bulk batch waits for this much quiet: one transfer for a whole burst
SETTLE_MAX = 5.0  # but never longer than this, for sources that are never quiet
SOURCE_POLL = 0.25  # how often a job whose source is gone looks for it again


def _is_bulk(batch: Sequence[Change]) -> bool:
    """Writes enough for an rsync run (deletes and moves are one agent round trip however many)."""
    writes = [c for c in batch if c.kind == "write"]
    return len(writes) > AGENT_BATCH or any(c.is_dir for c in writes)


LATE_EVENTS_S = MAX_DELAY + 0.5  # how late after a transfer its files' events may arrive


class TargetWorker(threading.Thread):
    def __init__(
        self,
        applier: Applier,
        status: TargetStatus,
        board: StatusBoard,
        stopping: threading.Event,
        source_moved: Callable[[], bool] = lambda: False,
        events: EventLog = NO_EVENTS,
        job: str = "",
        seen: Callable[[], float] = lambda: 0.0,
    ) -> None:
        super().__init__(name=f"target {applier.target}", daemon=True)
        self.applier, self.status, self.board, self.stopping = applier, status, board, stopping
        self.source_moved = source_moved  # true when the source root is not the watched one
        self.seen = seen  # when the watcher last walked a new directory (a burst it reports no event of yet)
        self.events, self.job = events, job
        self.failing = False  # since the last error: said once, until a batch or pass succeeds
        self.cond = threading.Condition()
        self.pending: list[Change] = []
        self.full = False
        self.held = False  # the source is being watched anew: nothing to do until resume_full()
        self.busy = False  # a batch or pass is reading the source and writing the target
        self.busy_until = 0.0  # and, for the events of what it may have copied, until then
        # events were dropped (a source swapped in, a lost queue, a failed batch): the next full
        # pass stands in for them, so it compares content, not size and mtime, which an edit
        # that puts the old mtime back (cp -p, a restore) or a swapped-in tree can share
        self.lost = False
        self.last_submit = 0.0
        # for `tether wait`: submissions counted, how many the batch or pass in flight covers
        # (None when none is), and the waits not answered yet as (submissions then, their time,
        # the count of full passes that must have ended: one pending or running when asked)
        self.submitted = 0
        self.covering: int | None = None
        self.waits: list[tuple[int, int, int]] = []
        self._applied = 0  # the submissions the last successful batch or pass covered
        self.in_full = False  # the pass in flight is a full one
        self.fulls_done = 0

    def hold(self) -> None:
        """Drop what was queued (it describes a tree that is no longer the source) and wait."""
        with self.cond:
            self.pending.clear()
            self.full, self.held = False, True
            busy = self.status.state == SYNCING  # a transfer in flight says so until it ends
            self.board.update(self.status, state=SYNCING if busy else WAITING, pending=0, force=True)
            self.cond.notify()

    def resume_full(self) -> None:
        """Start over with a full pass, once the source is watched again."""
        with self.cond:
            self.held, self.full, self.lost = False, True, True
            self.cond.notify()

    def submit(self, changes: Sequence[Change]) -> None:
        with self.cond:
            self.submitted += 1
            self.last_submit = time.monotonic()
            if self.held:
                return
            # a transfer in flight, or one ended less than a watcher window ago, may have copied
            # what these name
            changes = for_target(changes, self.busy or time.monotonic() < self.busy_until)
            if any(c.kind == "rescan" for c in changes) or len(self.pending) + len(changes) > QUEUE_LIMIT:
                self.pending.clear()
                self.full, self.lost = True, True
            elif not self.full:
                self.pending.extend(changes)
            self.board.update(self.status, pending=len(self.pending))
            self.cond.notify()

    def mark_wait(self, asked: int) -> None:
        """`tether wait` asked at `asked` (ns), after everything before it was submitted: answer
        now if nothing is pending or in flight, else once what is submitted has been applied."""
        with self.cond:
            # a full pass pending or running covers what no event names (the first pass, one
            # after a lost queue): the wait is answered after it, even with nothing submitted
            need = self.fulls_done + 1 if self.full or self.in_full else 0
            self.waits.append((self.submitted, asked, need))
            self._answer_waits()

    def _answer_waits(self) -> None:
        """With the lock held: stamp caught_up with the latest wait that is covered."""
        idle = not (self.pending or self.full or self.held) and self.covering is None
        done = [t for seq, t, need in self.waits if idle or (seq <= self._applied and self.fulls_done >= need)]
        if done:
            self.waits = [w for w in self.waits if w[1] > max(done)]
            self.board.update(self.status, caught_up=max(done), force=True)

    def request_full(self) -> None:
        with self.cond:
            self.pending.clear()
            self.full = True
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    @contextlib.contextmanager
    def _transfer(self) -> Iterator[None]:
        """A file made during a transfer may reach the target with it: its delete must not then
        cancel out against its creation, as if the target never had it. The watcher hands its
        events over up to a window (max_delay) after they happened: those count too."""
        with self.cond:
            self.busy = True
        try:
            yield
        finally:
            with self.cond:
                self.busy = False
                self.busy_until = time.monotonic() + LATE_EVENTS_S

    def _settle(self, batch: list[Change], full: bool) -> tuple[list[Change], bool]:
        """Let a burst finish before a bulk transfer, so that it travels in one rsync run."""
        deadline = time.monotonic() + SETTLE_MAX
        with self.cond:
            while not self.stopping.is_set():
                quiet = time.monotonic() - max(self.last_submit, self.seen())
                if quiet >= SETTLE or time.monotonic() >= deadline:
                    break
                self.cond.wait(SETTLE - quiet)
            batch += self.pending
            self.pending = []
            full = full or self.full
            self.full = False
            self.covering = self.submitted
            self.in_full = full
        return ([] if full else batch), full

    def run(self) -> None:
        backoff = 0.0
        while True:
            with self.cond:
                while not self.stopping.is_set() and (self.held or (not self.pending and not self.full)):
                    if self.applier.degraded() is None or self.held:
                        self.cond.wait()
                    elif not self.cond.wait(RECHECK_S):  # what was away may be back: open anew, a full pass
                        self.applier.reset()
                        self.full = True
                if self.stopping.is_set():
                    break
                batch, self.pending = self.pending, []
                full, self.full = self.full, False
                self.covering = self.submitted
                self.in_full = full
            # bulk or not by what the batch comes to: a source that keeps making and deleting
            # temporary files sends many events that cancel out, and never goes quiet
            work = [] if full else coalesce(batch)
            if (full or _is_bulk(work)) and self.status.full_passes:
                batch, full = self._settle(batch, full)
                work = [] if full else coalesce(batch)
            if full and self.source_moved():
                with self.cond:
                    self.covering, self.in_full = None, False
                continue  # the job is about to watch the new source, then asks for this pass again
            with self.cond:
                lost = full and self.lost  # this pass stands in for what was dropped
                self.lost = self.lost and not full
            self.board.update(self.status, state=SYNCING, pending=len(batch), soon=True)
            if full:
                self.events.emit(Event("pass-begin", self.job, str(self.applier.target), detail="full pass"))
            began = time.monotonic()
            try:
                with self._transfer():
                    res = self.applier.full_pass(checksum=lost) if full else self.applier.apply(work)
            except Exception as e:  # a worker that dies would stop its target silently
                if not isinstance(e, (AgentDown, AgentError, TetherError, OSError)):
                    log.exception("%s: unexpected error", self.applier.target)
                self.applier.reset()
                down = isinstance(e, AgentDown) or "connection" in str(e) or "unreachable" in str(e)
                backoff = min(BACKOFF_MAX, backoff * 2 or 0.5)
                msg = str(e).splitlines()[0]
                log.warning(
                    "%s: %s (%s; retry in %.1f s)", self.applier.target, msg, "down" if down else "error", backoff
                )
                if not self.failing:  # once per outage, however often it is retried
                    self.failing = True
                    target = str(self.applier.target)
                    if isinstance(e, TetherError) and e.hint:  # the way out (a refused target: --force)
                        log.warning("%s: hint: %s", target, e.hint)
                    self.events.emit(Event("down" if down else "error", self.job, target, detail=msg))
                with self.cond:
                    self.full = not self.held  # whatever this batch held, a full pass will converge it
                    self.lost = self.lost or lost or not full
                    self.covering, self.in_full = None, False
                    state = WAITING if self.held else DOWN if down else RETRYING
                self.board.update(self.status, state=state, last_error=msg, last_error_at=time.time(), force=True)
                with self.cond:
                    self.cond.wait_for(self.stopping.is_set, timeout=backoff)
                continue
            crashpoint("live.applied")
            backoff = 0.0
            st = self.status
            self._said(work, full, res)
            with self.cond:
                left = len(self.pending)
                held = self.held
                self._applied, self.covering = self.covering or self._applied, None
                self.fulls_done += full
                self.in_full = False
                self._answer_waits()
            if full:
                st.full_passes += 1
                log.info("%s: full pass done (%d files, %d bytes) in %.3f s", self.applier.target, res.files, res.bytes,
                         time.monotonic() - began)  # fmt: skip
            elif res.files or len(batch) > 1:
                log.info("%s: %d changes: sent %d files (%d bytes) in %.3f s", self.applier.target, len(batch),
                         res.files, res.bytes, time.monotonic() - began)  # fmt: skip
            refused: dict[str, Any] = {}  # last_error and its time
            if res.errors:  # the files arrived, some of their owners, ACLs or xattrs did not: said, not retried
                more = f" (and {len(res.errors) - 1} more)" if len(res.errors) > 1 else ""
                for why in res.errors:
                    log.warning("%s: %s", self.applier.target, why)
                refused = {"last_error": res.errors[0] + more, "last_error_at": time.time()}
            part = self.applier.degraded()
            if part and not refused:  # reached in part: said in the status until it is whole again
                refused = {"last_error": part, "last_error_at": time.time()}
            self.board.update(
                st, state=WAITING if held else IDLE if not left else SYNCING, last_success=time.time(), pending=left,
                bytes_sent=st.bytes_sent + res.bytes, files_sent=st.files_sent + res.files, soon=True, **refused,
            )  # fmt: skip

    def _said(self, work: Sequence[Change], full: bool, res: BatchResult) -> None:
        """The batch or pass that just succeeded, as events (and the target back, if it was not)."""
        target = str(self.applier.target)
        up = [Event("up", self.job, target)] if self.failing else []
        self.failing = False
        errors = [Event("error", self.job, target, detail=why) for why in res.errors]
        if full:
            end = pass_end(self.job, target, True, sent=res.files, bytes=res.bytes, errors=len(res.errors))
            slow = [Event("warning", self.job, target, detail=self.applier.warning)] if self.applier.warning else []
            self.events.emit_all([*up, *errors, *slow, end])
            return
        spec, batch = self.applier.spec, list(work)  # made on the writer's thread (a burst: 20,000)
        self.events.later(
            lambda: [*up, *batch_events(self.job, target, batch, delete=spec.delete, trash=spec.trash), *errors]
        )


def batch_events(job: str, target: str, work: Sequence[Change], *, delete: bool, trash: bool) -> list[Event]:
    """What a coalesced batch did to a target, path by path."""
    out = []
    for c in work:
        if c.kind == "write":
            out.append(Event("sent", job, target, shown_path(c.path), "a new directory, whole" if c.is_dir else ""))
        elif c.kind == "delete" and delete:
            out.append(Event("deleted", job, target, shown_path(c.path), "kept in .tether/versions" if trash else ""))
        elif c.kind == "move":
            out.append(Event("moved", job, target, shown_path(c.path), f"from {shown_path(c.old or '')}"))
    return out


class LiveMirror:
    """Owns the watcher and one worker per target until stopped."""

    def __init__(
        self,
        spec: MirrorSpec,
        opts: LiveOptions,
        mirror: Mirror,
        ssh: SshOptions,
        board: StatusBoard,
        on_batch: Callable[[list[Change]], None] | None = None,
        pass_hooks: PassHooks = NO_HOOKS,
        events: EventLog = NO_EVENTS,
    ) -> None:
        """`pass_hooks`: the job's before/after commands and time limits, for each full pass."""
        self.spec, self.opts, self.board = spec, opts, board
        self.stopping = threading.Event()
        self._watcher: BaseWatcher | None = None
        self.asked = Asked()  # by `tether wait`
        self.on_batch = on_batch
        self.events = events
        events.in_background()
        self.workers = []
        for t in spec.targets:
            st = TargetStatus(str(t), state=SYNCING)  # its first full pass is due: not idle before it ran
            board.status.targets.append(st)
            reached, remote = by_rsync(t), as_rclone(t)
            if reached is not None:
                applier = Applier(reached, spec, opts, mirror, ssh, pass_hooks)
            else:  # rsync cannot reach it: its own scan and bulk sends, the same agent words for the rest
                from tether.rclone_live import RcloneApplier

                assert remote is not None
                applier = RcloneApplier(remote, spec, opts, mirror, ssh, pass_hooks)
            self.workers.append(
                TargetWorker(
                    applier, st, board, self.stopping, self._source_moved, events, board.status.job, self._last_seen
                )
            )

    def run(self) -> None:
        watcher = self._watch()  # before the first full pass, so nothing written during it is missed
        for w in self.workers:
            w.request_full()
            w.start()
        coalescer = Coalescer(watcher, delay=self.opts.delay)
        next_full = time.monotonic() + self.opts.interval if self.opts.interval else None
        try:
            while not self.stopping.is_set():
                # no timer while idle: events, the next full pass or wake() end the wait
                wait = None if next_full is None else max(0.0, next_full - time.monotonic())
                batch = coalescer.next_batch(timeout=wait)
                if watcher.root_changed():
                    # the batch describes the old tree (now elsewhere, or gone): drop it
                    anew = self._rewatch(watcher)
                    if anew is None:
                        break
                    watcher, coalescer = anew, Coalescer(anew, delay=self.opts.delay)
                    continue
                asked = self.asked.take()
                if asked is not None:  # everything made before the signal is queued by now: take it all
                    batch = coalesce([*batch, *self._drain(watcher)], transient=True)
                if batch:
                    if self.on_batch:
                        self.on_batch(batch)
                    for w in self.workers:
                        w.submit(batch)
                if asked is not None:
                    for w in self.workers:
                        w.mark_wait(asked)
                if next_full is not None and time.monotonic() >= next_full:
                    log.info("periodic full pass")
                    for w in self.workers:
                        w.request_full()
                    next_full = time.monotonic() + self.opts.interval
        finally:
            last, self._watcher = self._watcher, None
            if last is not None:
                last.close()
            self.stop()

    @staticmethod
    def _drain(watcher: BaseWatcher) -> list[Change]:
        """Every change the kernel has queued, a half-seen move settled."""
        out: list[Change] = []
        while got := watcher.read(0):
            out += got
        while watcher.holding:
            out += watcher.read(MOVE_GRACE)
        return out

    def request_wait(self) -> None:
        """Safe from a signal handler: `tether wait` asks when the targets have caught up."""
        self.asked.ask()
        if self._watcher is not None:
            self._watcher.wake()

    def _watch(self) -> BaseWatcher:
        watcher, how = open_watcher(self.spec.source.path, self.spec.filter, self.opts.watcher, self.opts.interval)
        # no watcher: a warning, the job keeps the tree only at each full pass
        log.log(logging.WARNING if isinstance(watcher, PassWatcher) else logging.INFO, "watching %s: %s",
                self.spec.source, how)  # fmt: skip
        watcher.wake_on_signals()  # a stop or a `tether wait` taken by a worker thread ends its wait too
        self._watcher = watcher
        self.board.update(state="running", message=None, watches=watcher.inotify_watches, watcher=watcher.kind,
                          force=True)  # fmt: skip
        return watcher

    def _last_seen(self) -> float:
        watcher = self._watcher
        return watcher.activity() if watcher is not None else 0.0

    def _source_moved(self) -> bool:
        """For the workers, before a full pass: is the source root still the watched directory?
        If not, the loop is woken to watch the new one (and then asks for the pass again)."""
        watcher = self._watcher
        if watcher is None:
            return True
        if watcher.root_changed():
            watcher.wake()
            return True
        return False

    def _rewatch(self, old: BaseWatcher) -> BaseWatcher | None:
        """The source root was moved, deleted or replaced (a deploy's `mv site.new site`): drop
        what was queued from the old tree, wait while the path names no directory, watch the
        one it names now and start over with a full pass. None when stopped meanwhile."""
        source = self.spec.source
        log.warning("source %s was moved, deleted or replaced: dropping queued changes, watching it anew", source)
        self._watcher = None
        old.close()
        for w in self.workers:
            w.hold()
        waiting = False
        while not self.stopping.is_set():
            try:
                watcher = self._watch()
            except SourceMissing:  # any other refusal (too many directories) stops the job, as at start
                if os.path.isdir(source.path):
                    # back between the look and this check (the second `mv` of a swap): look again
                    self.stopping.wait(0.01)
                    continue
                if not waiting:
                    waiting = True
                    msg = f"source {source} does not exist (moved or deleted); waiting for it to come back"
                    log.warning("%s", msg)
                    self.board.update(state="waiting", message=msg, force=True)
                self.stopping.wait(SOURCE_POLL)  # only while the source is missing
                continue
            log.info("watching %s again; full pass", source)
            for w in self.workers:
                w.resume_full()
            return watcher
        return None

    def request_stop(self) -> None:
        """Safe from a signal handler: the loop ends and the workers finish their transfer."""
        self.stopping.set()
        if self._watcher is not None:
            self._watcher.wake()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        for w in self.workers:
            w.wake()
        for w in self.workers:
            if w.is_alive():
                w.join(timeout)
        self.events.flush()
        for w in self.workers:
            try:
                w.applier.final_owner()
            except (TetherError, AgentError, AgentDown, OSError) as e:
                log.warning("%s: final owner not set: %s", w.applier.target, e)
            w.applier.close()
