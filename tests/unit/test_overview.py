"""The overview as data: events and a status file in, rows, table, JSON and metrics out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.events import Event, EventLog, pass_end
from tether.service.metrics import escape_label, exposition
from tether.service.overview import (
    StreamFollower,
    Tally,
    build,
    read_tally,
    table,
    to_json,
    window_rate,
)
from tether.watchlimit import max_user_watches

NOW = 1_700_000_000.0


def _status(**target: Any) -> dict[str, Any]:
    t = {"target": "/dst", "state": "idle", "last_success": NOW - 5, "pending": 0, "bytes_sent": 100,
         "files_sent": 2, "last_error": None, "last_error_at": None, "full_passes": 1} | target  # fmt: skip
    return {"job": "m", "pid": 42, "source": "/src", "started": NOW - 60, "state": "running", "watches": 7,
            "targets": [t], "message": None}  # fmt: skip


def _events() -> list[Event]:
    return [
        Event("pass-begin", "m", "/dst", at=NOW - 30),
        Event("sent", "m", "/dst", "a", at=NOW - 29),
        Event("error", "m", "/dst", "b", "permission denied", at=NOW - 28),
        Event("pass-end", "m", "/dst", counts={"sent": 1, "bytes": 4000}, ok=True, at=NOW - 26),
        Event("refused", "m", "/dst", detail="the source is empty", at=NOW - 10),
        Event("conflict", "m", "/dst", "c", "keep-both", at=NOW - 9),
    ]


def test_a_running_target_that_is_caught_up_has_no_lag_and_its_events_counted() -> None:
    v = build("m", 42, _status(), Tally().add_all(_events()), NOW, limit=8192)
    [r] = v.rows
    assert (r.state, r.up, r.lag_seconds, r.pending, r.files_sent, r.bytes_sent) == (
        "running/idle",
        True,
        0.0,
        0,
        2,
        100,
    )
    assert (r.errors, r.conflicts, v.errors, v.conflicts) == (2, 1, 2, 1)
    assert r.last_success == NOW - 5  # the job's own word, later than the stream's last ok pass
    assert (r.rate_bps, r.rate_basis) == (1000.0, "last-pass")  # 4000 bytes in the pass's 4 s
    assert [e["kind"] for e in v.recent_errors] == ["error", "refused"]
    assert (v.watches, v.watch_limit, v.pid, v.state) == (7, 8192, 42, "running")


def test_a_run_that_has_not_written_its_status_yet_is_starting_not_the_last_runs_idle() -> None:
    """The pid lock is taken before the status file is written: until then the file is the last
    run's (found: a test read "idle" from it and stopped the new run before its first pass)."""
    v = build("m", 43, _status(), Tally().add_all(_events()), NOW)
    assert v.state == "starting" and v.status_targets == [] and v.watches == 0
    assert [(r.target, r.target_state) for r in v.rows] == [("/dst", None)]


@pytest.mark.parametrize(
    ("target", "lag"),
    [
        ({"pending": 3}, 5.0),  # since the last success
        ({"state": "down", "pending": 0}, 5.0),  # failing: behind by whatever came since
        ({"pending": 3, "last_success": None}, 60.0),  # never yet: since the job started
        ({"state": "waiting", "pending": 0}, 0.0),  # the source is gone: nothing to carry
        ({"pending": 3, "behind_since": NOW - 2}, 2.0),  # since it fell behind, when the job says
    ],
)
def test_lag_is_the_time_since_the_last_success_while_anything_is_pending(target: dict[str, Any], lag: float) -> None:
    [r] = build("m", 42, _status(**target), Tally(), NOW).rows
    assert r.lag_seconds == lag
    assert r.up == (target.get("state") != "down")


def test_a_stopped_job_shows_its_targets_from_the_event_stream_and_the_window_rate_wins() -> None:
    v = build("m", None, _status(), Tally().add_all(_events()), NOW)
    [r] = v.rows
    assert (v.running, v.state, r.state, r.pending, r.lag_seconds, r.files_sent) == (
        False, "stopped", "stopped", None, None, None)  # fmt: skip
    assert (r.last_success, r.last_error, r.last_error_at) == (NOW - 26, "the source is empty", NOW - 10)
    assert v.status_targets == [] and v.last_passes[0]["counts"]["bytes"] == 4000
    failed = build("m", None, {"state": "failed"}, Tally(), NOW)
    assert failed.state == "failed" and [(r.target, r.state) for r in failed.rows] == [("", "failed")]
    [live] = build("m", 42, _status(), Tally().add_all(_events()), NOW, rates={"/dst": 12.5}).rows
    assert (live.rate_bps, live.rate_basis) == (12.5, "window")


def test_a_bisync_jobs_whole_job_events_are_its_one_targets() -> None:
    said = [Event("pass-begin", "b", at=NOW - 3), Event("conflict", "b", "", "x", at=NOW - 2),
            pass_end("b", "", True, conflicts=1)]  # fmt: skip
    said[-1].at = NOW - 1
    [r] = build("b", 42, _status(target="host:/b"), Tally().add_all(said), NOW).rows
    assert (r.target, r.conflicts, r.last_pass and r.last_pass["ok"]) == ("host:/b", 1, True)
    [stopped] = build("b", None, None, Tally().add_all(said), NOW).rows
    assert (stopped.target, stopped.conflicts, stopped.last_success) == ("", 1, NOW - 1)


def test_window_rate_needs_two_samples_and_starts_again_after_a_restart() -> None:
    assert window_rate([(NOW, 10)], NOW) is None
    assert window_rate([(NOW - 20, 0), (NOW - 4, 100), (NOW, 500)], NOW) == 100.0  # the 20 s old one is out
    assert window_rate([(NOW - 4, 900), (NOW - 2, 0), (NOW, 300)], NOW) == 150.0  # the counter went down


def test_the_table_has_a_row_per_target_a_line_per_job_and_the_recent_errors() -> None:
    views = [build("m", 42, _status(), Tally().add_all(_events()), NOW, limit=8192), build("idle", None, None,
             Tally(), NOW)]  # fmt: skip
    text = table(views, NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["JOB", "TARGET", "STATE", "LAST", "OK", "LAG", "PENDING", "RATE", "ERRORS"]
    assert lines[1].split() == ["m", "/dst", "running/idle", "5s", "ago", "0s", "0", "1.0", "KB/s", "2"]
    assert lines[2].split() == ["idle", "-", "stopped", "never", "-", "-", "-", "0"]
    assert "m: running (pid 42, 7 of 8192 watches); 1 conflicts, 2 errors in its events" in text
    assert "idle: stopped" in text
    assert text.index("recent errors:") > text.index("idle: stopped")
    # a job past the inotify limit says what watches it instead of a count of 0
    fan = table([build("f", 42, {**_status(), "watches": 0, "watcher": "fanotify"}, Tally(), NOW, limit=8192)], NOW)
    assert "f: running (pid 42, fanotify, one filesystem mark)" in fan
    none = table([build("p", 42, {**_status(), "watches": 0, "watcher": "none"}, Tally(), NOW, limit=8192)], NOW)
    assert "p: running (pid 42, no watcher: its full passes only)" in none
    assert "m error [/dst] b - permission denied" in text and "m refused [/dst] - the source is empty" in text


def test_the_json_keeps_the_keys_status_always_had_and_adds_the_overview() -> None:
    doc = json.loads(json.dumps(to_json(build("m", 42, _status(), Tally().add_all(_events()), NOW))))
    for key in ("job", "running", "pid", "state", "message", "watches", "targets", "last_passes"):
        assert key in doc
    assert doc["targets"][0]["full_passes"] == 1  # the running job's own words, as before
    assert doc["rows"][0]["lag_seconds"] == 0.0 and doc["recent_errors"][0]["path"] == "b"


def test_metrics_escape_label_values_and_parse() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    odd = 'a "quoted"\\path\nwith a newline'
    assert escape_label(odd) == 'a \\"quoted\\"\\\\path\\nwith a newline'
    text = exposition([build("m", 42, _status(target=odd), Tally(), NOW)], 8192)
    samples = {(s.name, s.labels.get("target")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert samples[("tether_target_bytes_sent_total", odd)] == 100
    assert samples[("tether_target_up", odd)] == 1 and samples[("tether_watch_limit", None)] == 8192
    assert "# TYPE tether_target_files_sent_total counter" in text and "# HELP tether_job_running " in text


def test_the_follower_reads_only_what_was_appended_and_starts_again_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    log = EventLog(path, max_bytes=400)
    follow = StreamFollower(path)
    assert follow.poll().targets == {}
    log.emit(Event("error", "m", "/dst", "x", "one"))
    assert follow.poll().targets["/dst"].errors == 1
    with open(path, "ab") as f:
        f.write(b'{"at": 1, "job": "m", "kind": "err')  # a line being written is read when whole
    assert follow.poll().targets["/dst"].errors == 1
    with open(path, "ab") as f:
        f.write(b'or", "target": "/dst"}\n')
    assert follow.poll().targets["/dst"].errors == 2
    for i in range(8):  # past max_bytes: the file becomes .1 and a new one starts
        log.emit(Event("conflict", "m", "/dst", f"c{i}"))
    assert path.with_name("m.jsonl.1").exists()
    t, fresh = follow.poll().targets["/dst"], read_tally(path).targets["/dst"]
    assert (t.errors, t.conflicts) == (fresh.errors, fresh.conflicts) and t.conflicts > 0


def test_the_watch_limit_is_the_lower_of_the_two(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("65536\n")
    b.write_text("1000\n")
    assert max_user_watches((str(a), str(b))) == 1000
    assert max_user_watches((str(a), str(tmp_path / "missing"))) == 65536
    assert max_user_watches((str(tmp_path / "missing"),)) is None


def test_the_board_keeps_since_when_a_target_is_behind(tmp_path: Path) -> None:
    from tether.service.status import JobStatus, StatusBoard, TargetStatus

    t = TargetStatus("/dst")
    board = StatusBoard(tmp_path / "s.json", JobStatus("m", 1, "/src", NOW, targets=[t]))
    board.update(t, pending=2)
    since = t.behind_since
    assert since is not None
    board.update(t, state="syncing", pending=1)
    assert t.behind_since == since  # still behind the first change
    board.update(t, state="idle", pending=0, force=True)
    assert t.behind_since is None
    assert json.loads((tmp_path / "s.json").read_text())["targets"][0]["behind_since"] is None


def test_the_sampler_gives_the_rate_over_its_window() -> None:
    from tether.service.overview import RateSampler

    sampler = RateSampler(window=10)
    assert sampler.rates("m", _status(bytes_sent=0), True, NOW) == {}
    assert sampler.rates("m", _status(bytes_sent=5000), True, NOW + 2) == {"/dst": 2500.0}
    assert sampler.rates("m", _status(bytes_sent=5000), False, NOW + 3) == {}  # stopped: no rate
    assert sampler.rates("m", _status(bytes_sent=5000), True, NOW + 20) == {}  # the old samples are out


def test_a_job_file_written_after_the_job_started_is_said_with_the_fix() -> None:
    assert not build("m", 42, _status(), Tally(), NOW, edited_at=NOW - 120).edited  # before its start
    edited = build("m", 42, _status(), Tally(), NOW, edited_at=NOW - 10)
    assert edited.edited and to_json(edited)["job_file_changed"] is True
    assert "its job file changed since it started; it runs as it was: `tether restart m` applies it" in table(
        [edited], NOW
    )
    assert not build("m", None, _status(), Tally(), NOW, edited_at=NOW - 10).edited  # not running: nothing stale
