"""tether under cron, through the real command: --quiet says nothing but errors, --summary one
paragraph per run, whatever the job kind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

from tests.rig.live import running, small_pair, status, wait_for, write_job, write_job_text
from tests.rig.run import tether

KEPT = "(kept in .tether/versions)"


def _fill(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _foreign(tmp_path: Path) -> Path:
    """A target holding a file tether never wrote: a mirror refuses it (without --force)."""
    t = tmp_path / "foreign"
    _fill(t, {"mine.txt": "not tether's"})
    return t


def test_quiet_says_nothing_when_all_is_well_and_the_error_when_not(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"a.txt": "a", "d/b.txt": "b"})
    write_job(tether_env, "ok", src, [str(dst)])
    runs: list[list[str | Path]] = [["sync", "ok", "-q"], ["mirror", src, tmp_path / "dst2", "--quiet"]]
    runs.append(["sync", "--all", "-q"])
    for args in runs:
        proc = tether(args, tether_env, check_rc=0)
        assert (proc.stdout, proc.stderr) == ("", ""), args
    assert (dst / "d" / "b.txt").read_text() == "b" and (tmp_path / "dst2" / "a.txt").exists()
    a, b = small_pair(tmp_path)
    bisync = tether(["bisync", a, b, "-q"], tether_env, check_rc=0)
    assert (bisync.stdout, bisync.stderr) == ("", "") and (b / "f0.txt").exists()

    write_job(tether_env, "bad", src, [str(tmp_path / "dst3"), str(_foreign(tmp_path))])
    proc = tether(["sync", "bad", "-q"], tether_env, check_rc=1)  # the exit code is the one without -q
    assert proc.stdout == ""
    assert "FAIL" in proc.stderr and "foreign" in proc.stderr and "refused" in proc.stderr
    assert "dst3" not in proc.stderr  # the target that went well is not said
    every = tether(["sync", "--all", "-q"], tether_env, check_rc=1)
    assert every.stdout == "" and "==" not in every.stderr
    assert "foreign" in every.stderr and "2 jobs: 1 ok, failed: bad (exit 1)" in every.stderr
    assert "--quiet and -v" in tether(["sync", "ok", "-q", "-v"], tether_env, check_rc=2).stderr


def test_quiet_locations_ask_nothing_and_a_question_is_the_error(tmp_path: Path, tether_env: dict[str, str]) -> None:
    work, backup = tmp_path / "work", tmp_path / "backup"
    _fill(work, {"p/a.jpg": "a", "p/b.jpg": "b"})
    backup.mkdir()
    cfg = Path(tether_env["TETHER_HOME"]) / "config" / "locations.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[sets.photos]\nworking = ["{work}"]\nbackup = ["{backup}"]\n')
    proc = tether(["backup", work / "p", "-q"], tether_env, check_rc=0)
    assert (proc.stdout, proc.stderr) == ("", "") and (backup / "p" / "b.jpg").read_text() == "b"
    (work / "p" / "a.jpg").write_text("changed")
    asked = tether(["backup", work / "p", "-q"], tether_env, check_rc=2)
    assert asked.stdout == "" and "--quiet asks nothing" in asked.stderr and "-m" in asked.stderr
    assert (backup / "p" / "a.jpg").read_text() == "a"  # nothing was changed
    said = tether(["backup", work / "p", "-m", "--summary"], tether_env, check_rc=0)
    assert said.stderr == ""
    assert re.fullmatch(
        rf"tether backup {work}/p: 1 target, 1 ok, 0 failed; 1 file sent, 0 deleted, 0 conflicts, [\d.]+ s\.\n",
        said.stdout,
    )


def test_summary_of_a_mirror_job_with_a_failed_target(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src = tmp_path / "src"
    _fill(src, {"a.txt": "12345", "d/b.txt": "abc", "gone.txt": "x"})
    good = tmp_path / "good"
    write_job(tether_env, "photos", src, [str(good), str(_foreign(tmp_path))], delete="trash")
    start = time.monotonic()
    proc = tether(["sync", "photos", "--summary"], tether_env, check_rc=1)
    took = time.monotonic() - start
    paragraph = proc.stdout.strip()
    m = re.fullmatch(
        r"tether sync photos: 2 targets, 1 ok, 1 failed; 3 files sent \(9 B\), 0 deleted, 0 conflicts, "
        rf"([\d.]+) s\. Failed: {tmp_path}/foreign: refused: tether never wrote this target[^\n]*\.",
        paragraph,
    )
    assert m, paragraph
    assert float(m.group(1)) <= took
    assert "FAIL" in proc.stderr and "hint:" in proc.stderr  # the error's detail, as with --quiet
    (src / "gone.txt").unlink()
    write_job(tether_env, "photos", src, [str(good)], delete="trash")
    again = tether(["sync", "photos", "--summary"], tether_env, check_rc=0)
    assert f"1 target, 1 ok, 0 failed; 0 files sent, 1 deleted {KEPT}, 0 conflicts" in again.stdout
    assert again.stderr == ""
    every = tether(["sync", "--all", "--summary"], tether_env, check_rc=0)
    assert every.stdout.startswith("tether sync photos: 1 target, 1 ok") and every.stdout.endswith("1 jobs: 1 ok\n")
    assert "--summary and --json" in tether(["sync", "photos", "--summary", "--json"], tether_env, check_rc=2).stderr


def test_summary_of_a_bisync_job_and_of_an_ad_hoc_pair(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = small_pair(tmp_path)
    write_job_text(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    first = tether(["sync", "notes", "--summary"], tether_env, check_rc=0)
    assert re.fullmatch(
        r"tether sync notes: 1 target, 1 ok, 0 failed; 4 files sent, 0 deleted, 0 conflicts, [\d.]+ s\.\n",
        first.stdout,
    ), first.stdout
    (a / "f0.txt").write_text("path1's edit\n")
    (b / "f0.txt").write_text("path2's edit, longer\n")
    (b / "f1.txt").unlink()
    second = tether(["sync", "notes", "--summary"], tether_env, check_rc=0)
    assert f"1 target, 1 ok, 0 failed; 2 files sent, 1 deleted {KEPT}, 1 conflict," in second.stdout, second.stdout
    assert not (a / "f1.txt").exists()  # the conflict: the newer under the name, the other as a copy, each way

    tether(["bisync", a, b, "-q"], tether_env, check_rc=0)  # an ad hoc pair keeps a state of its own
    (b / "f2.txt").unlink()
    (b / "f3.txt").unlink()
    (b / "f0.txt").unlink()
    guarded = tether(["bisync", a, b, "--summary", "--max-delete", "10"], tether_env, check_rc=1)
    assert guarded.stdout.startswith(f"tether bisync {a} {b}: 1 target, 0 ok, 1 failed; 0 files sent")
    assert f"Failed: {a} <-> {b}: " in guarded.stdout and "refused" in guarded.stderr


def test_a_running_jobs_log_rotates_by_size_and_tether_log_reads_across(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write_job(tether_env, "busy", src, [str(dst)], interval=0, log_max_size="1K", log_keep=5, json_log=True)
    logs = Path(tether_env["TETHER_HOME"]) / "state" / "logs"
    # every line from the log's start: with -n 0 a follower slower to start than the job (a busy
    # machine) skipped the lines written before it looked, the first full pass's among them
    follower = subprocess.Popen(
        [sys.executable, "-m", "tether", "log", "busy", "-f", "-n", "1000"], env=tether_env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    followed: list[str] = []
    reader = threading.Thread(target=lambda: followed.extend(iter(follower.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        with running(tether_env, "busy"):
            wait_for(lambda: any("full pass done" in ln for ln in followed), 30, "the first full pass")
            for i in range(60):  # a log line for (nearly) each
                name = f"f{i:03d}"
                (src / name).write_text(str(i))
                wait_for(partial(os.path.exists, dst / name), 30, f"{name} on the target")
            wait_for(lambda: (logs / "busy.log.5").exists(), 30, "a fifth rotation")

            def counts() -> tuple[int, int]:  # files sent as the follower's lines say, and as the job says
                told = re.findall(r"(?:changes: sent |full pass done \()(\d+) files", "".join(followed))
                return sum(map(int, told)), status(tether_env, "busy")["targets"][0]["files_sent"]

            # -f read on through every rotation (several between two of its looks), nothing lost or repeated
            try:
                wait_for(lambda: counts()[0] == counts()[1] >= 60, 30, "the follower to have read every batch's line")
            except AssertionError:
                raise AssertionError(f"{counts()}:\n{''.join(followed)}") from None
            newest = (logs / "busy.log").read_text().splitlines()[-1]
            assert json.loads(newest)["job"] == "busy"  # one JSON object per line
            assert len((logs / "busy.log").read_text().splitlines()) < 10  # the ten newest span a rotation
            shown = tether(["log", "busy", "-n", "10"], tether_env, check_rc=0).stdout.splitlines()
            assert len(shown) == 10 and not any(s.startswith("{") for s in shown)
            assert shown[-1].endswith(json.loads(newest)["message"])
        wait_for(lambda: bool(followed) and followed[-1].endswith("INFO stopped\n"), 30, "the follower's last line")
    finally:
        follower.terminate()
        follower.wait(30)
        reader.join(30)
    assert sorted(p.name for p in logs.iterdir()) == ["busy.log", *(f"busy.log.{n}" for n in range(1, 6))]  # capped
    assert all(p.stat().st_size <= 1024 for p in logs.iterdir())
    assert not any(ln.startswith("{") for ln in followed)


def _run_until_idle(env: dict[str, str], name: str, *flags: str) -> str:
    """`tether run NAME FLAGS` in the foreground until its first pass is done, then SIGTERM: its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "run", name, *flags], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def idle() -> bool:  # this run's status, not the last words of the run before it
            doc = status(env, name)
            return bool(doc["pid"] == proc.pid and doc["rows"][0]["target_state"] == "idle")

        wait_for(idle, 60, "the first pass")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "", (out, err)
    return err


def test_run_in_the_foreground_quiet_or_as_json_lines(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src = tmp_path / "src"
    _fill(src, {"a.txt": "a"})
    write_job(tether_env, "fg", src, [str(tmp_path / "dst")], interval=0)
    assert _run_until_idle(tether_env, "fg", "-q") == ""  # a clean run: not a line
    lines = _run_until_idle(tether_env, "fg", "--json-log").splitlines()
    docs = [json.loads(ln) for ln in lines]  # every line is one JSON object, on stderr for journald
    assert {d["job"] for d in docs} == {"fg"} and docs[-1]["message"] == "stopped"
    ends = [d for d in docs if d.get("kind") == "pass-end"]
    assert ends and ends[0]["ok"] is True and ends[0]["target"] == str(tmp_path / "dst")
    assert not (Path(tether_env["TETHER_HOME"]) / "state" / "logs").exists()  # the foreground keeps no file


STRAY = """
import logging, sys
from pathlib import Path
from tether.jobkeys import LogSettings
from tether.service import joblog
joblog.setup("j", LogSettings(max_bytes=1024, keep=5), file=Path(sys.argv[1]))
print("stray before", file=sys.stderr, flush=True)
for i in range(30):
    logging.getLogger("tether").info("line %d %s", i, "x" * 60)
print("stray after", file=sys.stderr, flush=True)
print("out after", flush=True)
"""


def test_what_a_started_job_prints_follows_its_log_into_the_new_file(tmp_path: Path) -> None:
    """As `tether start` leaves it: stdout and stderr are the log file (a tool's words, a crash)."""
    log = tmp_path / "j.log"
    with open(log, "ab") as f:
        subprocess.run([sys.executable, "-c", STRAY, str(log)], stdout=f, stderr=f, check=True, timeout=60)
    current = log.read_text()
    assert "line 29" in current and "stray after" in current and "out after" in current
    rotated = [p.read_text() for p in tmp_path.glob("j.log.*")]
    assert len(rotated) >= 2 and any("stray before" in r for r in rotated)


def test_json_for_every_command_that_says_what_it_did(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """check, start/stop/restart, service install and the locations actions print one JSON
    document with --json (the other commands that print a result had it already)."""
    src, dst = small_pair(tmp_path)
    write_job(tether_env, "j", src, [str(dst)])
    checked = json.loads(tether(["check", "j", "--json"], tether_env, check_rc=0).stdout)
    assert (checked["ok"], checked["kind"], checked["source"], checked["targets"]) == (
        True,
        "mirror",
        str(src),
        [str(dst)],
    )
    started = json.loads(tether(["start", "j", "--json"], tether_env, check_rc=0).stdout)["jobs"]
    assert [(d["job"], d["state"]) for d in started] == [("j", "started")] and started[0]["pid"] > 0
    again = json.loads(tether(["restart", "j", "--json"], tether_env, check_rc=0).stdout)["jobs"]
    assert [d["state"] for d in again] == ["stopped", "started"] and again[0]["pid"] == started[0]["pid"]
    stopped = json.loads(tether(["stop", "j", "--json"], tether_env, check_rc=0).stdout)["jobs"]
    assert [(d["state"], d["pid"]) for d in stopped] == [("stopped", again[1]["pid"])]
    unit = json.loads(tether(["service", "install", "j", "--user", "--print", "--json"], tether_env, check_rc=0).stdout)
    assert unit["unit"] == "tether-j.service" and "ExecStart=" in unit["text"]

    work, backup = tmp_path / "work", tmp_path / "backup"
    _fill(work, {"p/a.jpg": "a", "p/b.jpg": "b"})
    _fill(backup, {"p/a.jpg": "old"})
    cfg = Path(tether_env["TETHER_HOME"]) / "config" / "locations.toml"
    cfg.write_text(f'[sets.photos]\nworking = ["{work}"]\nbackup = ["{backup}"]\n')
    refused = tether(["backup", work / "p", "--json"], tether_env, check_rc=2)  # a question: refused, named
    assert "--json asks nothing" in refused.stderr and "-m" in refused.stderr
    doc = json.loads(refused.stdout)
    assert doc["ok"] is False and {c["path"] for c in doc["plans"][0]["changes"] if not c["dir"]} == {
        "p/a.jpg",
        "p/b.jpg",
    }
    done = json.loads(tether(["backup", work / "p", "-m", "--json"], tether_env, check_rc=0).stdout)
    assert done["ok"] and done["plans"][0]["dest"] == str(backup)
    files = {(c["op"], c["path"]) for c in done["plans"][0]["changes"] if not c["dir"]}
    assert files == {("modified", "p/a.jpg"), ("new", "p/b.jpg")}
    assert [e["kind"] for e in done["events"] if e["kind"] == "pass-end"] == ["pass-end"]
    assert (backup / "p" / "a.jpg").read_text() == "a"
