"""One loader for every job kind, through the real `tether` command: the kind read from the
parsed table, TOML errors with their line for bisync jobs too, the shared keys working in both
kinds (before/after and max_time_* on mirror jobs; exclude_from, rsync, rsync_args on bisync
jobs), and a mirror and a bisync job that would write one folder refused with both names."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.rig.compare import assert_same_tree
from tests.rig.live import running, wait_for
from tests.rig.live import small_pair as _pair
from tests.rig.live import write_job_text as _job
from tests.rig.run import tether


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tether" not in p.parts}


def test_a_quoted_kind_key_runs_as_a_bisync_job(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    (b / "from-b.txt").write_text("b's\n")  # a mirror a -> b would delete this; bisync brings it to a
    _job(tether_env, "notes", f'"kind" = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    assert "ok (bisync" in tether(["check", "notes"], tether_env, check_rc=0).stdout
    tether(["sync", "notes"], tether_env, check_rc=0)
    assert (a / "from-b.txt").read_text() == "b's\n"
    assert _files(a) == _files(b) == {"from-b.txt", "f0.txt", "f1.txt", "f2.txt", "f3.txt"}


def test_a_bisync_job_with_a_toml_error_names_its_line(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    f = _job(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\n\npath2 = "{b}\nconflict = "newer"\n')
    for cmd in (["check", "notes"], ["sync", "notes"], ["start", "notes"], ["conflicts", "notes"]):
        proc = tether(cmd, tether_env, check_rc=2)
        assert f"{f}:4: invalid TOML" in proc.stderr, (cmd, proc.stderr)
    assert not _files(b)
    assert f"{f}:4: invalid TOML" in tether(["jobs"], tether_env, check_rc=2).stdout


def test_before_and_after_around_a_one_shot_mirror(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = _pair(tmp_path)
    seen = tmp_path / "after-saw.txt"
    before = ["sh", "-c", 'echo made > "$0"/made-by-before.txt', str(src)]  # $0: a path as data, not code
    after = ["cp", str(dst / "made-by-before.txt"), str(seen)]  # only there once the pass has run
    _job(
        tether_env,
        "web",
        f'source = "{src}"\ntargets = ["{dst}"]\nbefore = {json.dumps(before)}\nafter = {json.dumps(after)}\n',
    )
    tether(["sync", "web"], tether_env, check_rc=0)
    assert seen.read_text() == "made\n"
    assert_same_tree(src, dst)

    (src / "new.txt").write_text("new\n")
    _job(tether_env, "web", f'source = "{src}"\ntargets = ["{dst}"]\nbefore = ["false"]\nafter = {json.dumps(after)}\n')
    seen.unlink()
    proc = tether(["sync", "web"], tether_env, check_rc=1)
    assert "before command 'false' failed (exit 1)" in proc.stderr
    assert not (dst / "new.txt").exists() and not seen.exists()  # no pass, no after
    assert tether(["sync", "web", "-n"], tether_env, check_rc=0).returncode == 0  # a dry run runs no command

    _job(tether_env, "web", f'source = "{src}"\ntargets = ["{dst}"]\nafter = ["sh", "-c", "exit 3"]\n')
    proc = tether(["sync", "web"], tether_env, check_rc=1)
    assert "after command 'sh' failed (exit 3)" in proc.stderr
    assert (dst / "new.txt").exists()


def test_max_time_on_a_one_shot_mirror(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = _pair(tmp_path)
    (src / "big.bin").write_bytes(os.urandom(3 << 20))  # 3 MB at 100 KiB/s: half a minute
    slow = f'source = "{src}"\ntargets = ["{dst}"]\nbwlimit = 100\n'
    _job(tether_env, "web", slow + "max_time_soft = 0.5\nmax_time_hard = 1.5\n")
    began = time.monotonic()
    proc = tether(["sync", "web"], tether_env, check_rc=1)
    took = time.monotonic() - began
    assert took < 15, took  # stopped, not run to the end
    assert "max_time_hard=1.5" in proc.stderr and "the next pass continues" in proc.stderr
    assert "past max_time_soft=0.5" in proc.stderr
    assert not (dst / "big.bin").exists()
    assert not [n for n in os.listdir(dst) if n.startswith(".big.bin.")]  # rsync took its temp file away

    _job(tether_env, "web", f'source = "{src}"\ntargets = ["{dst}"]\nmax_time_soft = 0.000001\n')
    proc = tether(["sync", "web"], tether_env, check_rc=0)  # the next pass finishes; soft only warns
    assert "warning: the pass has run" in proc.stderr
    assert_same_tree(src, dst)


def test_before_after_and_max_time_hard_on_each_full_pass_of_a_running_mirror(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    src, dst = _pair(tmp_path)
    log = tmp_path / "hooks.log"
    before = ["sh", "-c", 'echo before >> "$0"', str(log)]
    after = ["sh", "-c", 'echo after >> "$0"', str(log)]
    _job(tether_env, "live", f'source = "{src}"\ntargets = ["{dst}"]\nbefore = {json.dumps(before)}\n'
         f'after = {json.dumps(after)}\ninterval = 1\n')  # fmt: skip
    with running(tether_env, "live"):
        wait_for(lambda: log.exists() and log.read_text().count("after") >= 2, what="two full passes, hooked")
        (src / "one.txt").write_text("1\n")
        wait_for(lambda: (dst / "one.txt").exists(), what="a change carried")
    lines = log.read_text().split()
    assert lines[:4] == ["before", "after", "before", "after"], lines

    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    _job(tether_env, "live", f'source = "{src}"\ntargets = ["{dst}"]\nbwlimit = 100\nmax_time_hard = 1\n')
    logfile = Path(tether_env["TETHER_HOME"]) / "state" / "logs" / "live.log"
    with running(tether_env, "live"):
        wait_for(lambda: "max_time_hard=1)" in logfile.read_text(), what="the full pass stopped at max_time_hard")
    assert not (dst / "big.bin").exists()


def test_exclude_from_rsync_and_rsync_args_on_a_bisync_job(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    (a / "big.bin").write_bytes(os.urandom(5 << 20))  # bigger than an agent message: it goes by rsync
    (a / "noise.log").write_text("x\n")
    jobs = Path(tether_env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "notes.ignore").write_text("*.log\n")
    rsync_log = tmp_path / "rsync.log"
    body = f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\nexclude_from = "notes.ignore"\n'

    _job(tether_env, "notes", body + 'rsync = "/nonexistent/rsync"\n')
    proc = tether(["sync", "notes"], tether_env, check_rc=1)
    assert "cannot run rsync '/nonexistent/rsync'" in proc.stderr
    assert not (b / "big.bin").exists()

    _job(tether_env, "notes", body + f'rsync_args = ["--log-file={rsync_log}"]\n')
    tether(["sync", "notes"], tether_env, check_rc=0)
    assert (b / "big.bin").read_bytes() == (a / "big.bin").read_bytes()
    assert "big.bin" in rsync_log.read_text()  # the job's option reached bisync's rsync run
    assert not (b / "noise.log").exists()  # left out by the exclude file
    assert _files(b) == _files(a) - {"noise.log"}

    _job(tether_env, "notes", body + 'rsync_args = ["--remove-source-files"]\n')
    proc = tether(["check", "notes"], tether_env, check_rc=2)
    assert "notes.toml:5: rsync_args may not contain '--remove-source-files'" in proc.stderr


def test_a_mirror_and_a_bisync_job_writing_one_folder_are_refused(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    src, outer = tmp_path / "src", tmp_path / "outer"
    src.mkdir()
    _job(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    _job(tether_env, "web", f'source = "{src}"\ntargets = ["{b}/site"]\n')  # inside a bisync replica
    with running(tether_env, "notes"):
        for cmd in (["start", "web"], ["run", "web"], ["sync", "web"]):
            proc = tether(cmd, tether_env, check_rc=2)
            assert f"jobs 'web' and 'notes' would both write {b}" in proc.stderr, (cmd, proc.stderr)
        assert not (b / "site").exists()
    _job(tether_env, "web", f'source = "{src}"\ntargets = ["{outer}"]\n')
    _job(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{outer}/notes"\n')  # inside the target
    with running(tether_env, "web"):
        for cmd in (["start", "notes"], ["sync", "notes"]):
            proc = tether(cmd, tether_env, check_rc=2)
            assert f"jobs 'notes' and 'web' would both write {outer}" in proc.stderr, (cmd, proc.stderr)
        assert not (outer / "notes").exists()
    _job(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')  # separate folders
    with running(tether_env, "web"), running(tether_env, "notes"):
        assert tether(["sync", "notes"], tether_env, check_rc=0).returncode == 0
