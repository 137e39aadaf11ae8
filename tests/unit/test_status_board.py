"""The status board: a change made `soon` is on disk at once, and changes made together are one write."""

from __future__ import annotations

import json
from pathlib import Path

from tests.rig.live import wait_for
from tether.service.status import JobStatus, StatusBoard, TargetStatus


class CountingBoard(StatusBoard):
    writes = 0

    def flush(self) -> None:
        with self.lock:
            self.writes += self._is_dirty
            super().flush()


def board_of(tmp_path: Path, targets: int) -> CountingBoard:
    status = JobStatus(
        job="j", pid=1, source="/src", started=0.0, targets=[TargetStatus(f"t{i}") for i in range(targets)]
    )
    return CountingBoard(tmp_path / "j.status.json", status, min_gap=600)  # only `soon` can write before the test ends


def states(path: Path) -> list[str]:
    try:
        return [t["state"] for t in json.loads(path.read_text())["targets"]]
    except FileNotFoundError:
        return []


def test_changes_made_together_soon_are_one_write_at_once(tmp_path: Path) -> None:
    board = board_of(tmp_path, 32)
    with board.lock:  # 32 targets done in the same moment (the flusher cannot write meanwhile)
        for t in board.status.targets:
            board.update(t, state="syncing", soon=True)
    wait_for(lambda: states(board.path) == ["syncing"] * 32, 30, "the 32 states on disk")
    assert board.writes == 1


def test_a_change_not_made_soon_waits_for_the_gap_and_force_writes_before_returning(tmp_path: Path) -> None:
    board = board_of(tmp_path, 1)
    board.update(board.status.targets[0], state="syncing")
    assert states(board.path) == [], "written before min_gap"
    board.update(board.status.targets[0], state="idle", force=True)
    assert states(board.path) == ["idle"]
