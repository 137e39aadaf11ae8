"""The rclone mirror's plan: a pure function of the source scan and the target listing."""

from __future__ import annotations

import os
from pathlib import Path

from tether.filters import Filter
from tether.rclone_mirror import _moved_on, plan_pass
from tether.rclone_scan import UNREAD, Entry, _shown, scan_source


def _same_within(precision: int):  # as RcloneTarget.same for a backend of that precision
    return lambda size, mtime, other_size, other_mtime: size == other_size and abs(mtime - other_mtime) < precision


def test_copies_replaces_removes_topmost_and_leaves_excluded_target_files_alone() -> None:
    src: dict[str, Entry] = {
        "a": ("f", 3, 10_400_000_000), "d": ("d", 0, 0), "d/b": ("f", 1, 5), "new": ("f", 7, 1),
        "clash": ("f", 2, 2), "empty": ("d", 0, 0),
    }  # fmt: skip
    dst: dict[str, Entry] = {
        "a": ("f", 3, 10_000_000_000), "d": ("d", 0, 0), "d/b": ("f", 2, 5), "gone": ("d", 0, 0),
        "gone/x": ("f", 1, 1), "clash": ("d", 0, 0), "clash/y": ("f", 1, 1), "keep.tmp": ("f", 1, 1),
    }  # fmt: skip
    flt = Filter.build(exclude=["*.tmp"])
    plan = plan_pass(src, dst, flt, _same_within(10**9), delete=True, empty_dirs=True)
    assert plan.remove == [("clash", "d"), ("gone", "d")]  # nothing below a removed dir, nothing excluded
    assert sorted(plan.copy) == ["clash", "d/b", "new"]  # `a` is the same within 1 s
    assert plan.replace == ["d/b"] and plan.mkdir == ["empty"] and plan.bytes == 10
    exact = plan_pass(src, dst, flt, _same_within(1), delete=True, empty_dirs=False)
    assert "a" in exact.replace and exact.mkdir == []


def test_keep_mode_never_removes_and_reports_a_type_clash() -> None:
    src: dict[str, Entry] = {"clash": ("f", 2, 2)}
    dst: dict[str, Entry] = {"clash": ("d", 0, 0), "extra": ("f", 1, 1)}
    plan = plan_pass(src, dst, Filter(), _same_within(1), delete=False, empty_dirs=True)
    assert plan.remove == [] and plan.copy == [] and len(plan.blocked) == 1


def test_the_fast_mtime_parse_agrees_with_the_exact_one() -> None:
    import datetime
    import random

    import pytest

    from tether.transport.rclone_agent import parse_mtime
    from tether.transport.rclone_target import _mtime

    for text in ("2026-12-06T08:27:01.500999911Z", "2023-11-14T22:13:20Z", "2023-11-14T22:13:20.1Z",
                 "2024-02-29T23:59:59.999999999Z", "2026-12-06T09:27:01.5+01:00", "1969-12-31T23:59:59.999999999Z",
                 "2026-12-06T09:27:01.500999911-05:30", "0001-01-01T00:00:00.000000001Z", "2026-12-06T09:27:01+01:00",
                 "2026-12-06t08:27:01.500999911z"):  # fmt: skip
        assert _mtime(text) == parse_mtime(text), text
    rng = random.Random(5)
    for _ in range(3000):  # RFC3339Nano drops a fraction's trailing zeros: any length from 0 to 9
        ns = rng.randrange(-(10**18), 4 * 10**18)
        zone = rng.choice([0, 3600, -19800])
        when = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone(datetime.timedelta(seconds=zone)))
        frac = str(ns % 10**9).rjust(9, "0").rstrip("0")[: rng.randint(0, 9)]
        text = when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + when.strftime("%z")
        text = text[:-5] + "Z" if zone == 0 else text[:-2] + ":" + text[-2:]
        assert _mtime(text) == parse_mtime(text), text
    for bad in ("2026-12-06T08:27:01.123456abcZ", "2026-12-06T08:27:01,500999911Z", "2026-12-06 08:27:01.500999911Z"):
        with pytest.raises(ValueError):  # datetime would take these (it ignores digits after the 6th)
            _mtime(bad)


def test_a_path_the_scan_could_not_read_is_neither_copied_nor_removed_below() -> None:
    src: dict[str, Entry] = {"d": ("d", 0, 0), "d/locked": UNREAD, "f": UNREAD, "new": ("f", 1, 1)}
    dst: dict[str, Entry] = {"d": ("d", 0, 0), "d/locked": ("d", 0, 0), "d/locked/x": ("f", 1, 1), "f": ("f", 2, 2)}
    plan = plan_pass(src, dst, Filter.build(), _same_within(1), delete=True, empty_dirs=True)
    assert plan.remove == [] and plan.copy == ["new"]  # what the target holds there stays


def test_the_scan_names_what_a_remote_cannot_hold_and_what_it_cannot_read(tmp_path: Path) -> None:
    """Special files and Unicode twins used to vanish without a word; an unreadable folder ended
    the pass with a traceback (as root the folder below is readable: chmod alone cannot show it)."""
    os.mkfifo(tmp_path / "fifo")
    for name in ("caf\u00e9", "cafe\u0301"):  # NFC, NFD
        (tmp_path / name).write_text(name)
    (tmp_path / "plain").write_text("x")
    entries, skipped = scan_source(str(tmp_path), Filter.build())
    assert sorted(entries) == ["caf\u00e9", "plain"]
    assert skipped[0].startswith("skipped fifo: not a regular file or directory")
    assert "once Unicode-normalised" in skipped[1] and len(skipped) == 2
    assert _shown("new\nline") == "new\\nline"  # one line per path, whatever the name


def test_after_a_failed_copy_each_file_that_changed_or_went_since_the_scan_is_named(tmp_path: Path) -> None:
    """rclone's copy job reports one error of many, and its words for a growing file do not name it."""
    for name in ("same", "grew", "gone", "touched"):
        (tmp_path / name).write_bytes(b"x")
    scanned = {n: ("f", 1, (tmp_path / n).stat().st_mtime_ns) for n in ("same", "grew", "gone", "touched")}
    (tmp_path / "grew").write_bytes(b"xx")
    (tmp_path / "gone").unlink()
    os.utime(tmp_path / "touched", ns=(0, 5))
    said = _moved_on(str(tmp_path), ["same", "grew", "gone", "touched"], scanned)
    assert said == [
        "grew: changed while it was sent; left for the next pass",
        "gone: vanished during the pass",
        "touched: changed while it was sent; left for the next pass",
    ]
