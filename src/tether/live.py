"""The continuous mirror: watch the source, push each change to every target independently.

    Watcher -> Coalescer -> (one queue per target) -> TargetWorker -> Applier -> agent | rsync

Each target has its own thread and queue, so a slow or unreachable target never delays the
others. A failed batch is never retried piecemeal: the target is marked for a full pass,
which converges whatever was lost (moves included) once the target is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from tether.apply import AGENT_BATCH, Applier
from tether.config import LiveOptions
from tether.errors import TetherError
from tether.mirror import Mirror, MirrorSpec
from tether.service.status import DOWN, IDLE, RETRYING, SYNCING, StatusBoard, TargetStatus
from tether.ssh import SshOptions
from tether.transport.agent import AgentDown, AgentError
from tether.watch import Change, Coalescer, Watcher, coalesce

log = logging.getLogger("tether")

QUEUE_LIMIT = 50_000  # more pending changes than this: a full pass is cheaper than the list
BACKOFF_MAX = 10.0
SETTLE = 0.1  # a bulk batch waits for this much quiet: one transfer for a whole burst
SETTLE_MAX = 5.0  # but never longer than this, for sources that are never quiet


def _is_bulk(batch: Sequence[Change]) -> bool:
    return len(batch) > AGENT_BATCH or any(c.kind == "write" and c.is_dir for c in batch)


class TargetWorker(threading.Thread):
    def __init__(self, applier: Applier, status: TargetStatus, board: StatusBoard, stopping: threading.Event) -> None:
        super().__init__(name=f"target {applier.target}", daemon=True)
        self.applier, self.status, self.board, self.stopping = applier, status, board, stopping
        self.cond = threading.Condition()
        self.pending: list[Change] = []
        self.full = False
        self.last_submit = 0.0

    def submit(self, changes: Sequence[Change]) -> None:
        with self.cond:
            self.last_submit = time.monotonic()
            if any(c.kind == "rescan" for c in changes) or len(self.pending) + len(changes) > QUEUE_LIMIT:
                self.pending.clear()
                self.full = True
            elif not self.full:
                self.pending.extend(changes)
            self.board.update(self.status, pending=len(self.pending))
            self.cond.notify()

    def request_full(self) -> None:
        with self.cond:
            self.pending.clear()
            self.full = True
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def _settle(self, batch: list[Change], full: bool) -> tuple[list[Change], bool]:
        """Let a burst finish before a bulk transfer, so that it travels in one rsync run."""
        deadline = time.monotonic() + SETTLE_MAX
        with self.cond:
            while not self.stopping.is_set():
                quiet = time.monotonic() - self.last_submit
                if quiet >= SETTLE or time.monotonic() >= deadline:
                    break
                self.cond.wait(SETTLE - quiet)
            batch += self.pending
            self.pending = []
            full = full or self.full
            self.full = False
        return ([] if full else batch), full

    def run(self) -> None:
        backoff = 0.0
        while True:
            with self.cond:
                while not self.stopping.is_set() and not self.pending and not self.full:
                    self.cond.wait()
                if self.stopping.is_set():
                    break
                batch, self.pending = self.pending, []
                full, self.full = self.full, False
            if (full or _is_bulk(batch)) and self.status.full_passes:
                batch, full = self._settle(batch, full)
            self.board.update(self.status, state=SYNCING, pending=len(batch), force=True)
            began = time.monotonic()
            try:
                res = self.applier.full_pass() if full else self.applier.apply(coalesce(batch))
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
                with self.cond:
                    self.full = True  # whatever this batch held, a full pass will converge it
                self.board.update(
                    self.status, state=DOWN if down else RETRYING, last_error=msg, last_error_at=time.time(), force=True
                )
                with self.cond:
                    self.cond.wait_for(self.stopping.is_set, timeout=backoff)
                continue
            backoff = 0.0
            st = self.status
            with self.cond:
                left = len(self.pending)
            if full:
                st.full_passes += 1
                log.info("%s: full pass done (%d files, %d bytes) in %.3f s", self.applier.target, res.files, res.bytes,
                         time.monotonic() - began)  # fmt: skip
            elif res.files or len(batch) > 1:
                log.info("%s: %d changes: sent %d files (%d bytes) in %.3f s", self.applier.target, len(batch),
                         res.files, res.bytes, time.monotonic() - began)  # fmt: skip
            self.board.update(
                st, state=IDLE if not left else SYNCING, last_success=time.time(), pending=left,
                bytes_sent=st.bytes_sent + res.bytes, files_sent=st.files_sent + res.files, force=True,
            )  # fmt: skip


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
    ) -> None:
        self.spec, self.opts, self.board = spec, opts, board
        self.stopping = threading.Event()
        self._watcher: Watcher | None = None
        self.on_batch = on_batch
        self.workers = []
        for t in spec.targets:
            st = TargetStatus(str(t))
            board.status.targets.append(st)
            self.workers.append(TargetWorker(Applier(t, spec, opts, mirror, ssh), st, board, self.stopping))

    def run(self) -> None:
        watcher = Watcher(self.spec.source.path, self.spec.filter)
        watcher.start()  # before the first full pass, so nothing written during it is missed
        self.board.update(state="running", watches=watcher.watch_count, force=True)
        log.info("watching %s (%d directories)", self.spec.source, watcher.watch_count)
        for w in self.workers:
            w.request_full()
            w.start()
        self._watcher = watcher
        coalescer = Coalescer(watcher, delay=self.opts.delay)
        next_full = time.monotonic() + self.opts.interval if self.opts.interval else None
        try:
            while not self.stopping.is_set():
                # no timer while idle: events, the next full pass or wake() end the wait
                wait = None if next_full is None else max(0.0, next_full - time.monotonic())
                batch = coalescer.next_batch(timeout=wait)
                if batch:
                    if self.on_batch:
                        self.on_batch(batch)
                    for w in self.workers:
                        w.submit(batch)
                if next_full is not None and time.monotonic() >= next_full:
                    log.info("periodic full pass")
                    for w in self.workers:
                        w.request_full()
                    next_full = time.monotonic() + self.opts.interval
        finally:
            watcher.close()
            self.stop()

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
        for w in self.workers:
            try:
                w.applier.final_owner()
            except (TetherError, AgentError, AgentDown, OSError) as e:
                log.warning("%s: final owner not set: %s", w.applier.target, e)
            w.applier.close()
