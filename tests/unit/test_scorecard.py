"""The scorecard's table, from outcomes and records as data."""

from __future__ import annotations

from typing import Any

from tests.rig.scorecard import table

CRASH = "tests/integration/test_crash_points.py::test_bisync[{}]"
RACE = "tests/integration/test_watch_races.py::test_{}"


def test_rows_per_suite_totals_and_the_reasons_of_skips() -> None:
    outcomes = {CRASH.format(1): "passed", CRASH.format(2): "failed", RACE.format("a"): "skipped"}
    records = [
        {"nodeid": CRASH.format(1), "files": 10, "bytes": 1000, "lost": 0, "divergent": 0},
        {"nodeid": CRASH.format(2), "files": 5, "bytes": 50, "lost": 2, "divergent": 1},
    ]
    lines = table(outcomes, records, {RACE.format("a"): "no inotify here"})
    crash = next(x for x in lines if x.strip().startswith("crash points"))
    assert crash.split()[-8:] == ["2", "1", "1", "0", "15", "1050", "2", "1"]
    races = next(x for x in lines if x.strip().startswith("watch races"))
    assert races.split()[-8:] == ["1", "0", "0", "1", "0", "0", "0", "0"]
    total = next(x for x in lines if x.strip().startswith("total"))
    assert total.split()[1:] == ["3", "1", "1", "1", "15", "1050", "2", "1"]
    assert lines[-1] == f"  skipped {RACE.format('a')}: no inotify here"


def test_a_note_is_said_once_under_the_table_and_counts_nothing() -> None:
    net = "tests/integration/test_netns.py::test_{}"
    outcomes = {net.format("a"): "passed", net.format("b"): "passed"}
    records: list[dict[str, Any]] = [
        {"nodeid": net.format("a"), "note": "delay by a relay"},
        {"nodeid": net.format("b"), "note": "delay by a relay"},
        {"nodeid": net.format("b"), "files": 3, "bytes": 30, "lost": 0, "divergent": 0},
    ]
    lines = table(outcomes, records, {})
    row = next(x for x in lines if x.strip().startswith("network namespaces"))
    assert row.split()[-8:] == ["2", "2", "0", "0", "3", "30", "0", "0"]
    assert [x for x in lines if "relay" in x] == ["  note, network namespaces (delay, loss, cut): delay by a relay"]
