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
from tether.watch import Change, Watcher


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
