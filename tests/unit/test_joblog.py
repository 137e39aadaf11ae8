"""A running job's log: the JSON line, how `tether log` shows it, and reading across a rotation."""

from __future__ import annotations

import datetime
import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from tether.errors import ConfigError
from tether.events import Event, pass_end
from tether.jobkeys import LogSettings
from tether.jobs import load_job
from tether.service.joblog import follow, json_line, last_lines, readable

AT = 1_800_000_000.25


def test_a_json_line_has_time_level_job_message() -> None:
    doc = json.loads(json_line(AT, "WARNING", "site", "a message with \u00e9 and \\xff"))
    assert list(doc) == ["time", "level", "job", "message"]
    when = datetime.datetime.fromisoformat(doc["time"])
    assert when.timestamp() == AT and when.tzinfo is not None  # ISO 8601 with its offset
    assert doc["level"] == "warning" and doc["job"] == "site" and doc["message"] == "a message with \u00e9 and \\xff"


def test_a_line_that_tells_an_event_carries_its_fields() -> None:
    end = pass_end("site", "host:/srv", False, sent=3, errors=1)
    doc = json.loads(json_line(AT, "INFO", "site", end.text(), end))
    assert doc["kind"] == "pass-end" and doc["target"] == "host:/srv" and doc["ok"] is False
    assert doc["counts"]["sent"] == 3 and doc["counts"]["errors"] == 1
    assert doc["message"] == "pass-end (NOT ok) [host:/srv] - 3 sent, 1 errors"
    err = Event("error", "site", "host:/srv", "a b.txt", "Permission denied")
    doc = json.loads(json_line(AT, "ERROR", "site", err.text(), err, exc="Traceback: ..."))
    assert (doc["path"], doc["detail"], doc["exc"]) == ("a b.txt", "Permission denied", "Traceback: ...")
    assert "at" not in doc  # the line's time says it


def test_tether_log_shows_a_json_line_as_the_plain_format_would() -> None:
    line = json_line(AT, "ERROR", "site", "refused: empty source")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(AT))
    assert readable(line.encode()) == f"{when} ERROR refused: empty source"
    with_exc = json_line(AT, "ERROR", "site", "crashed", exc="Traceback (most recent call last):\n  x")
    assert readable(with_exc.encode()).splitlines()[1:] == ["Traceback (most recent call last):", "  x"]
    for other in (b"2026-01-01 00:00:00 INFO plain", b"{not json", b'{"a": 1}', b"rsync: \xff bad"):
        assert readable(other) == other.decode("utf-8", "backslashreplace")


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(ln + "\n" for ln in lines))


def test_the_newest_lines_come_from_the_rotated_files_when_the_current_is_short(tmp_path: Path) -> None:
    log = tmp_path / "j.log"
    assert last_lines(log, 5) == ([], None)
    _write(tmp_path / "j.log.2", ["1", "2"])
    _write(tmp_path / "j.log.1", ["3", "4"])
    _write(log, ["5"])
    lines, at = last_lines(log, 4)
    assert lines == [b"2", b"3", b"4", b"5"]
    assert at == (log.stat().st_ino, 2)
    assert last_lines(log, 1)[0] == [b"5"]
    log.unlink()  # between a rollover's rename and its new file
    assert last_lines(log, 3) == ([b"2", b"3", b"4"], None)


def test_following_goes_on_into_the_new_file_after_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "j.log"
    _write(log, ["shown already"])
    _, at = last_lines(log, 10)
    got: list[bytes] = []
    done = threading.Event()
    t = threading.Thread(target=follow, args=(log, at, got.append, done.is_set, 0.01))
    t.start()
    try:
        with open(log, "a") as f:
            f.write("before the rotation\nlast in the old file\n")
        log.rename(tmp_path / "j.log.1")
        _write(log, ["first in the new file"])
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        t.join(30)
    assert got == [b"before the rotation", b"last in the old file", b"first in the new file"]


@pytest.mark.parametrize(
    ("line", "wanted"),
    [('log_max_size = "2K"\nlog_keep = 3\njson_log = true', LogSettings(2048, 3, True)), ("", LogSettings())],
)
def test_the_log_keys_of_a_job(tmp_path: Path, line: str, wanted: LogSettings) -> None:
    f = tmp_path / "j.toml"
    f.write_text(f'kind = "bisync"\npath1 = "{tmp_path}/a"\npath2 = "{tmp_path}/b"\n{line}\n')
    assert load_job(f, "j").log == wanted


@pytest.mark.parametrize(
    "bad", ['log_max_size = "10"', 'log_max_size = "ten megs"', "log_keep = 0", "log_keep = 100", "json_log = 1"]
)
def test_a_bad_log_key_names_its_line(tmp_path: Path, bad: str) -> None:
    f = tmp_path / "j.toml"
    f.write_text(f'source = "{tmp_path}"\ntargets = ["/tmp/x"]\n{bad}\n')
    with pytest.raises(ConfigError, match=r"j\.toml:3"):
        load_job(f, "j")


def test_following_through_many_quick_rotations_never_repeats_or_reorders_a_line(tmp_path: Path) -> None:
    """A busy job rotates while the follower looks at which files exist; a look that ran during a
    rotation once read an older file again (a full suite beside a busy core: 65 lines told of 60)."""
    import logging.handlers

    path = tmp_path / "busy.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=120, backupCount=5)
    got: list[int] = []
    done = threading.Event()
    follower = threading.Thread(target=follow, args=(path, None, lambda ln: got.append(int(ln)), done.is_set, 0.0001))
    follower.start()
    try:
        for i in range(4000):
            handler.emit(logging.makeLogRecord({"msg": str(i)}))
        deadline = time.monotonic() + 30
        while (not got or got[-1] != 3999) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        follower.join(30)
        handler.close()
    assert got and got[-1] == 3999
    assert all(a < b for a, b in itertools.pairwise(got)), [(a, b) for a, b in itertools.pairwise(got) if a >= b][:5]
