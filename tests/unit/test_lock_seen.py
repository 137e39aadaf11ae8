"""A foreign lock is abandoned only after this host saw it unchanged long enough, by its own clock."""

from __future__ import annotations

from pathlib import Path

from tether.transport.lock_seen import LocksSeen


def test_the_count_starts_at_first_sight_and_again_at_any_change_or_reboot(tmp_path: Path) -> None:
    now = [0]
    seen = LocksSeen(tmp_path / "seen.json", 600, lambda: now[0], boot="boot-1")
    v1 = ["2026-12-06T10:00:00Z", 40, "far (host b, pid 1)"]
    assert seen.unchanged_for("r:/x/lock", v1) == 0
    now[0] = 599 * 10**9
    assert not seen.abandoned("r:/x/lock", v1)
    now[0] = 600 * 10**9
    assert seen.abandoned("r:/x/lock", v1)
    assert not seen.abandoned("r:/y/lock", v1)  # another lock: its own count
    v2 = [*v1[:1], 41, v1[2]]
    assert seen.unchanged_for("r:/x/lock", v2) == 0  # rewritten: counted again
    now[0] = 2000 * 10**9
    again = LocksSeen(tmp_path / "seen.json", 600, lambda: now[0], boot="boot-1")  # a later run: remembered
    assert again.unchanged_for("r:/x/lock", v2) == 1400
    rebooted = LocksSeen(tmp_path / "seen.json", 600, lambda: 5, boot="boot-2")  # the boot clock restarted
    assert rebooted.unchanged_for("r:/x/lock", v2) == 0 and not rebooted.abandoned("r:/x/lock", v2)


def test_a_torn_or_missing_notes_file_starts_every_count_afresh(tmp_path: Path) -> None:
    (tmp_path / "seen.json").write_text("{not json")
    seen = LocksSeen(tmp_path / "seen.json", 600, lambda: 10**15, boot="b")
    assert seen.unchanged_for("k", ["t", 1, "h"]) == 0
    assert LocksSeen(tmp_path / "none" / "seen.json", 600, lambda: 1, boot="b").unchanged_for("k", ["t"]) == 0
