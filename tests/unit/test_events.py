"""The one event stream: its records, its file, and how each job kind's results map onto it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tether.bisync.config import BisyncJob
from tether.bisync.engine import Report
from tether.bisync.runner import report_events
from tether.cli.locations import plan_events
from tether.coalesce import Change
from tether.endpoints import Local
from tether.events import COUNTS, Event, EventLog, last_passes, pass_end, read, shown_path
from tether.live import batch_events
from tether.locations.execute import Outcome
from tether.locations.plan import Action, Entry, Op, Plan


def test_an_event_survives_its_json_and_reads_as_a_line() -> None:
    ev = Event("deleted", "site", "host:/srv", "a b/\\xff.txt", "kept in .tether/trash", at=1_800_000_000.5)
    assert Event.from_json(json.loads(json.dumps(ev.to_json()))) == ev
    line = ev.line()
    assert "site deleted [host:/srv] a b/\\xff.txt - kept in .tether/trash" in line
    end = pass_end("site", "", False, sent=3, errors=1)
    assert end.counts == dict.fromkeys(COUNTS, 0) | {"sent": 3, "errors": 1}
    assert "pass-end (NOT ok)" in end.line() and "3 sent, 1 errors" in end.line()
    with pytest.raises(ValueError, match="unknown event kind"):
        Event("copied", "site")


def test_paths_that_are_not_utf8_are_shown_not_raised() -> None:
    assert shown_path(b"caf\xe9\n.txt") == "caf\\xe9\n.txt"
    assert shown_path(b"caf\xe9".decode("utf-8", "surrogateescape")) == "caf\\xe9"


def test_threads_appending_at_once_never_tear_a_line(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events" / "j.jsonl")

    def writer(i: int) -> None:
        for n in range(300):
            log.emit(Event("sent", "j", f"t{i}", f"f{n}", "x" * (n % 50)), Event("moved", "j", f"t{i}", f"g{n}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = list(read(log.path))
    assert len(got) == 8 * 300 * 2
    for i in range(8):
        mine = [e.path for e in got if e.target == f"t{i}" and e.kind == "sent"]
        assert mine == [f"f{n}" for n in range(300)]  # one writer's order is kept


def test_the_file_is_rotated_by_size_and_read_oldest_first(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "j.jsonl", max_bytes=2000)
    for n in range(100):
        log.emit(Event("sent", "j", path=f"f{n:03d}", at=1_800_000_000 + n))
    assert (tmp_path / "j.jsonl.1").exists()
    got = [e.path for e in read(log.path)]
    assert got == sorted(got) and got[-1] == "f099" and len(got) < 100  # the oldest were dropped
    (tmp_path / "j.jsonl").open("a").write('{"kind": "sent", "jo')  # a crash mid-line
    assert [e.path for e in read(log.path)] == got


def test_the_last_pass_of_each_target_is_read_from_the_end_of_the_stream(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "j.jsonl", max_bytes=3000)
    assert last_passes(log.path) == []
    for n in range(40):
        log.emit(Event("sent", "j", "t1", path=f"f{n}", at=1_800_000_000 + n))
        log.emit(Event("pass-end", "j", f"t{1 + n % 2}", counts={"sent": n}, ok=n != 38, at=1_800_000_000 + n))
    log.emit(Event("pass-begin", "j", "t1", at=1_800_000_100))  # a pass under way: the last ended one counts
    got = last_passes(log.path, tail=400)  # a tail that cuts a line: that line is not read
    assert [(e.target, e.counts["sent"], e.ok) for e in got] == [("t1", 38, False), ("t2", 39, True)]
    (tmp_path / "j.jsonl").write_text("")  # just rotated: the older file still tells
    assert [e.target for e in last_passes(log.path)] == ["t1", "t2"]


def test_in_background_events_are_written_in_order_and_flush_waits_for_them(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "j.jsonl")
    log.emit(Event("pass-begin", "j", at=1))
    log.in_background()
    gate = threading.Event()

    def slow() -> list[Event]:
        gate.wait(5)
        return [Event("sent", "j", path=f"f{n}", at=2 + n) for n in range(3)]

    log.later(slow)
    log.emit(Event("pass-end", "j", ok=True, at=9))  # after the slow batch, though ready first
    assert [e.kind for e in read(log.path)] == ["pass-begin"]  # not written by the caller's thread
    gate.set()
    log.flush()
    assert [(e.kind, e.path) for e in read(log.path)] == [
        ("pass-begin", ""), ("sent", "f0"), ("sent", "f1"), ("sent", "f2"), ("pass-end", "")]  # fmt: skip


def test_an_unwritable_log_never_fails_the_job(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "events").write_text("a file where the folder should be")
    log = EventLog(tmp_path / "events" / "j.jsonl")
    log.emit(Event("sent", "j"))
    log.emit(Event("sent", "j"))
    assert caplog.text.count("cannot write events") == 1


def test_a_continuous_mirror_batch_as_events() -> None:
    work = [Change("move", "new", old="old"), Change("delete", "gone")]
    work += [Change("write", "d", True), Change("write", "f")]
    got = [(e.kind, e.path, e.detail) for e in batch_events("j", "t", work, delete=True, trash=True)]
    assert got == [
        ("moved", "new", "from old"),
        ("deleted", "gone", "kept in .tether/versions"),
        ("sent", "d", "a new directory, whole"),
        ("sent", "f", ""),
    ]
    kept = [e.kind for e in batch_events("j", "t", work, delete=False, trash=False)]
    assert kept == ["moved", "sent", "sent"]  # without delete, nothing is deleted


def test_a_bisync_report_as_events() -> None:
    job = BisyncJob("pair", None, Local("/a"), Local("/b"))
    rep = Report("/a", "/b")
    rep.plan = [
        {"action": "copy", "to": "path2", "path": "x.txt"},
        {"action": "delete", "to": "path1", "path": "y.txt"},
        {"action": "conflict", "to": "path1", "path": "z.txt", "copy": "z.conflict.txt"},
    ]
    rep.copied["to_path2"], rep.deleted["path1"] = 1, 1
    rep.conflicts = [{"path": "z.txt", "copy": "z.conflict.txt", "policy": "keep-both"}]
    got = report_events(job, rep)
    assert [(e.kind, e.target, e.path) for e in got] == [
        ("sent", "/b", "x.txt"),
        ("deleted", "/a", "y.txt"),
        ("conflict", "", "z.txt"),
        ("pass-end", "", ""),
    ]
    assert "z.conflict.txt" in got[2].detail
    assert got[-1].ok is True and got[-1].counts["conflicts"] == 1
    refused = Report("/a", "/b", refused="path2 is empty")
    assert [e.kind for e in report_events(job, refused)] == ["refused"]


def test_a_locations_plan_as_events() -> None:
    f = Entry("file", 3, 1)
    acts = (Action(Op.CREATE, b"n", f, None), Action(Op.OVERWRITE, b"m", f, f), Action(Op.DELETE, b"d", None, f))
    plan = Plan("backup", "photos", "/w", "/b", acts, keep_versions=5, stamp="s")
    got = plan_events("locations.photos", plan, Outcome("/b", copied=2, removed=1))
    said = [(e.kind, e.path) for e in got]
    assert said == [("sent", "n"), ("sent", "m"), ("kept", "m"), ("deleted", "d"), ("pass-end", "")]
    assert got[2].detail.startswith("kept in ") and got[3].detail.startswith("kept in ")
    failed = plan_events("locations.photos", plan, Outcome("/b", copied=1, errors=["disk full"]))
    assert [e.kind for e in failed] == ["error", "pass-end"] and failed[-1].ok is False
