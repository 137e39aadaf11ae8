"""A burst (a tar extracting folders into the tree) travels in one rsync run: the worker holds a
bulk transfer while the watcher is still walking new folders, which it reports no event of."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.rig.compare import assert_same_tree
from tests.rig.live import wait_for
from tests.rig.watching import gather, has
from tether.apply import Applier, BatchResult
from tether.config import LiveOptions
from tether.endpoints import Local
from tether.filters import Filter
from tether.live import SETTLE, TargetWorker
from tether.mirror import Mirror, MirrorSpec
from tether.service.status import JobStatus, StatusBoard, TargetStatus
from tether.ssh import SshOptions
from tether.state import KnownTargets
from tether.transport.rsync import Rsync
from tether.watch import Change, Coalescer, Watcher


def test_walking_a_new_folder_is_seen_before_any_event_of_it(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    w = Watcher(str(root), Filter())
    w.start()
    try:
        before = w.last_seen
        (root / "x" / "a" / "b").mkdir(parents=True)
        gather(w, has(Change("write", "x", is_dir=True, created=True)))
        assert w.last_seen > before
    finally:
        w.close()


class NotingWatcher(Watcher):
    """A real watcher that notes, after each read, what it tells a worker of the tree's activity."""

    activities: list[float]

    def read(self, timeout: float | None) -> list[Change]:
        got = super().read(timeout)
        self.activities.append(self.activity())
        return got


def test_changes_gathered_in_a_window_are_activity_until_handed_on(tmp_path: Path) -> None:
    """A tar writing files into a folder it has made makes no folder to walk, and a window gathers
    those changes for up to a second before they are handed on (and submitted): a worker holding
    a bulk transfer must see that as activity, or it takes the middle of a burst for quiet (seen:
    one round in three of bench.live's burst went in two rsync runs). An excluded path is no
    activity: a log written all day would hold every bulk transfer."""
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    w = NotingWatcher(str(root), Filter.build(exclude=["*.log"]))
    w.activities = []
    w.start()
    try:
        c = Coalescer(w, delay=0.2)  # above QUICK_MAX_DELAY: a window, never a batch at once
        before = time.monotonic()
        (root / "d" / "noise.log").write_text("excluded\n")
        assert c.next_batch(timeout=0.3) == [] and w.activity() < before
        w.activities.clear()
        (root / "d" / "f").write_text("extracted\n")
        (root / "d" / "g").write_text("extracted\n")
        batch = c.next_batch(timeout=60)
        assert {ch.path for ch in batch} >= {"d/f", "d/g"}, batch
        assert len(w.activities) >= 2 and all(a >= before for a in w.activities[1:]), (before, w.activities)
        assert w.activity() >= before
    finally:
        w.close()


class NotingApplier(Applier):
    """A real applier to a local target that notes when each batch began."""

    began: list[float]

    def apply(self, changes: Sequence[Change]) -> BatchResult:
        self.began.append(time.monotonic())
        return super().apply(changes)


def test_a_bulk_transfer_waits_while_the_watcher_walks_new_folders(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    rsync = Rsync(SshOptions(str(tmp_path / "sockets")))
    spec = MirrorSpec(Local(str(src)), (Local(str(dst)),))
    applier = NotingApplier(
        Local(str(dst)), spec, LiveOptions(), Mirror(rsync, KnownTargets(tmp_path / "st")), rsync.ssh
    )
    applier.began = []
    st = TargetStatus(str(dst))
    board = StatusBoard(tmp_path / "status.json", JobStatus(job="j", pid=os.getpid(), source=str(src), started=0.0,
                                                           targets=[st]))  # fmt: skip
    walk_ends = [0.0]  # the watcher walks new folders until then (a tar still making them)

    def seen() -> float:
        return min(time.monotonic(), walk_ends[0])

    stopping = threading.Event()
    worker = TargetWorker(applier, st, board, stopping, seen=seen)
    worker.request_full()
    worker.start()
    try:
        wait_for(lambda: st.full_passes == 1, 60, "the first full pass")
        (src / "x" / "a").mkdir(parents=True)
        (src / "x" / "a" / "f").write_text("extracted\n")
        walk_ends[0] = time.monotonic() + 10 * SETTLE
        worker.submit([Change("write", "x", is_dir=True, created=True)])
        wait_for(lambda: bool(applier.began) and st.pending == 0 and st.state == "idle", 60, "the batch applied")
        # before: the batch went SETTLE after its submission, with the walk a tenth done
        assert applier.began[0] >= walk_ends[0], (applier.began[0], walk_ends[0])
        assert_same_tree(src, dst)
    finally:
        stopping.set()
        worker.wake()
        worker.join(30)
        applier.close()
