"""Continuous bisync as users run it: events on both sides, the job's filters where the watches
are placed, a lost watch that is said and polled, changes written while a pass runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.rig.live import running, status, wait_for
from tests.rig.live import write_job_text as _job
from tests.rig.run import tether_json
from tests.rig.sshd import SshServer
from tests.rig.trees import make_tree
from tether.agent_remote import Ops
from tether.bisync.replica import LOCK


def _replicas(
    tmp_path: Path, request: pytest.FixtureRequest | None, env: dict[str, str], remote: bool, files: int = 1
) -> tuple[Path, Path, str, dict[str, str]]:
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, files, seed=8, hostile=False)
    shutil.copytree(a, b, symlinks=True)  # equal replicas: a first run compares every file
    (a / "keep.txt").write_text("k\n")
    if request is None or not remote:
        return a, b, str(b), env
    server: SshServer = request.getfixturevalue("sshd")
    return a, b, f"{server.alias}:{b}", server.env(env)


def _target(env: dict[str, str], name: str) -> dict[str, Any]:
    """The job's one status row (none yet before the job has written its status)."""
    rows: list[dict[str, Any]] = status(env, name).get("targets") or [{"passes": 0, "state": None}]
    return rows[0]


def test_the_watch_reports_paths_and_leaves_out_excluded_ones(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    ops = Ops(str(tmp_path))
    rules = [[r"(?:.*/)?node_modules", False, True]]  # what `exclude = ["node_modules/"]` compiles to
    try:
        first = ops.watch(0, rules)
        assert first["paths"] == [] and first["lost"] == []
        (tmp_path / "node_modules").mkdir()
        for i in range(200):
            (tmp_path / "node_modules" / f"m{i}.js").write_text("x")
        (tmp_path / "src" / "app.py").write_text("print()\n")
        got: set[str] = set()

        def seen() -> bool:
            got.update(ops.watch(0.5)["paths"])
            return "src/app.py" in got

        wait_for(seen, 30, "the change in src/")
        assert got == {"src/app.py"}
    finally:
        ops.close()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "ssh"])
def test_churn_in_an_excluded_folder_starts_no_pass(
    tmp_path: Path, tether_env: dict[str, str], remote: bool, request: pytest.FixtureRequest
) -> None:
    a, b, path2, env = _replicas(tmp_path, request, tether_env, remote)
    (a / "node_modules").mkdir()  # there before the job starts: a watch there would see every file
    _job(env, "churn", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\nexclude = ["node_modules/"]\n')
    with running(env, "churn"):
        wait_for(lambda: (b / "keep.txt").exists() and _target(env, "churn")["passes"] >= 1, 60, "the first pass")
        before = _target(env, "churn")
        for i in range(1000):
            (a / "node_modules" / f"dep{i}.js").write_text(f"module {i}\n")
        (a / "sentinel.txt").write_text("after the churn\n")
        wait_for(lambda: (b / "sentinel.txt").exists(), 60, "a change after the churn")

        def recorded() -> bool:  # the file lands before the pass that carried it is on the board
            t = _target(env, "churn")
            return bool(t["state"] == "idle" and t["paths_looked"] > before["paths_looked"])

        wait_for(recorded, 60, "the pass that carried it recorded, the job idle")
        after = _target(env, "churn")
    assert after["full_passes"] == before["full_passes"]  # nothing asked for a full look
    # the narrow passes looked at the sentinel (on both sides, maybe in several event batches on
    # a busy machine, each echoed once), never at the 1,000 excluded paths
    looked = after["paths_looked"] - before["paths_looked"]
    assert 1 <= looked <= 20, f"{looked} paths looked at for 1,000 excluded files and one change"
    assert not (b / "node_modules").exists()


def test_a_watch_that_cannot_be_added_is_said_and_its_folder_polled(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """The watch limit lowered inside the test (a user namespace of its own, so nothing else on
    the machine is touched) to exactly what the tree needs: a folder made later cannot be
    watched, and its files still arrive."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-U", "-r", "true"]).returncode != 0:
        pytest.skip("user namespaces are not available here (unshare -U -r failed)")
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, 40, seed=3, hostile=False)
    shutil.copytree(a, b, symlinks=True)
    needed = sum(1 for _ in os.walk(a)) + sum(1 for _ in os.walk(b))
    _job(tether_env, "lim", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    log = tmp_path / "run.log"
    script = 'echo "$1" > /proc/sys/user/max_inotify_watches && shift && exec "$@"'
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-U", "-r", "sh", "-c", script, "sh", str(needed), sys.executable, "-m", "tether", "run",
             "lim"],
            env=tether_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: _target(tether_env, "lim")["passes"] >= 1, 60, "the first pass")
            (a / "later").mkdir()
            (a / "later" / "inside.txt").write_text("made where no watch could go\n")
            wait_for(lambda: (b / "later" / "inside.txt").exists(), 60, "a file in the unwatched folder")
            (a / "later" / "second.txt").write_text("and another\n")
            wait_for(lambda: (b / "later" / "second.txt").exists(), 60, "a later file in the unwatched folder")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text()
    assert "cannot watch later" in text and "watch limit" in text, text


def test_a_tree_over_the_watch_limit_is_refused_with_the_fix(tmp_path: Path, tether_env: dict[str, str]) -> None:
    if not shutil.which("unshare") or subprocess.run(["unshare", "-U", "-r", "true"]).returncode != 0:
        pytest.skip("user namespaces are not available here (unshare -U -r failed)")
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, 40, seed=3, hostile=False)
    b.mkdir()
    _job(tether_env, "over", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    script = 'echo 2 > /proc/sys/user/max_inotify_watches && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-U", "-r", "sh", "-c", script, "sh", sys.executable, "-m", "tether", "run", "over"],
        env=tether_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    # the namespace's own limit binds: the fix names that setting, and who can raise it
    assert "inotify watches" in proc.stderr and "sysctl -w user.max_inotify_watches=" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (b / "f0.txt").exists()  # refused before any pass


@pytest.mark.parametrize("remote", [False, True], ids=["local", "ssh"])
def test_files_written_during_the_first_pass_and_between_passes_arrive(
    tmp_path: Path, tether_env: dict[str, str], remote: bool, request: pytest.FixtureRequest
) -> None:
    """The first pass is held in its `after` command, past its scan, while the test writes on
    both sides: only watches placed before the scan can see those writes."""
    a, b, path2, env = _replicas(tmp_path, request, tether_env, remote, files=200)
    hold, inside = tmp_path / "hold", tmp_path / "inside"
    hold.touch()
    wait = f'touch "{inside}"; while [ -e "{hold}" ]; do sleep 0.02; done'
    after = json.dumps(["sh", "-c", wait])
    _job(env, "during", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\ninterval = 3600\nafter = {after}\n')
    with running(env, "during"):
        wait_for(inside.exists, 120, "the first pass to reach its after command")
        assert _target(env, "during")["passes"] == 0
        for k in range(20):
            ((a, b)[k % 2] / f"during-{k}.txt").write_text(f"written after the first scan {k}\n")
        hold.unlink()
        wait_for(
            lambda: all(((b, a)[k % 2] / f"during-{k}.txt").exists() for k in range(20)),
            120,
            "files written in the first pass",
        )
        for k in range(40):  # between passes, alternating sides, no pause
            ((a, b)[k % 2] / f"between-{k}.txt").write_text(f"between {k}\n")
        wait_for(
            lambda: all(((b, a)[k % 2] / f"between-{k}.txt").exists() for k in range(40)),
            120,
            "files written between passes",
        )
    doc = tether_json(["sync", "during", "--dry-run"], env)
    assert doc["_rc"] == 0 and doc["plan"] == [], doc


def test_a_replica_root_swapped_in_is_watched_from_then_on(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """`mv site site.old && mv site.new site`: the watches followed the old tree; the job must
    look at the new one, and later edits there must arrive."""
    a, b, path2, env = _replicas(tmp_path, None, tether_env, False, files=20)
    _job(env, "swap", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\ninterval = 3600\n')
    with running(env, "swap"):
        wait_for(lambda: (b / "keep.txt").exists() and _target(env, "swap")["passes"] >= 1, 60, "the first pass")
        new = tmp_path / "a.new"
        shutil.copytree(a, new, symlinks=True, ignore=shutil.ignore_patterns(".tether"))
        (new / "keep.txt").write_text("edited in the new tree\n")
        a.rename(tmp_path / "a.old")
        new.rename(a)
        wait_for(lambda: (b / "keep.txt").read_text() == "edited in the new tree\n", 60, "the swapped-in tree")
        (a / "after-swap.txt").write_text("written in the new tree\n")
        wait_for(lambda: (b / "after-swap.txt").exists(), 60, "an edit in the swapped-in tree")
        (tmp_path / "a.old" / "old-only.txt").write_text("the old tree is not the replica any more\n")
        (a / "sentinel.txt").write_text("x\n")
        wait_for(lambda: (b / "sentinel.txt").exists(), 60, "a later edit")
    assert not (b / "old-only.txt").exists()


def test_a_pass_that_failed_as_a_whole_is_tried_again(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """A pass refused at its start (a side locked by another run) took its paths from the feed:
    it is tried again once the lock is gone, not left to the next interval (an hour here)."""
    a, b, path2, env = _replicas(tmp_path, None, tether_env, remote=False)
    _job(env, "again", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\ninterval = 3600\n')
    with running(env, "again"):
        wait_for(lambda: (b / "keep.txt").exists() and _target(env, "again")["passes"] >= 1, 60, "the first pass")
        other = Ops(str(b))
        try:
            other.lock(LOCK, "another run")
            (a / "while-locked.txt").write_text("made while the other run held the lock\n")
            wait_for(lambda: "in use" in (_target(env, "again").get("last_error") or ""), 60, "the pass refused")
        finally:
            other.close()
        wait_for(lambda: (b / "while-locked.txt").exists(), 60, "the pass tried again")


def test_sync_of_a_running_job_follows_the_pass_it_is_in(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """`tether sync NAME` while NAME runs and its pass holds the replicas' lock: this pass is
    taken after that one, not refused with exit 4 (found in a busy-suite run). A lock held by
    anything else than the job's own service is still refused at once."""
    import threading

    a, b, path2, env = _replicas(tmp_path, None, tether_env, remote=False)
    _job(env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\ninterval = 3600\n')
    other = Ops(str(b))
    other.lock(LOCK, "another run")  # as the job's own pass would hold it
    try:
        proc = subprocess.run([sys.executable, "-m", "tether", "sync", "notes"], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 4 and "in use" in proc.stderr, proc.stderr  # no service: refused at once
    finally:
        other.close()
    with running(env, "notes"):
        wait_for(lambda: (b / "keep.txt").exists() and _target(env, "notes")["passes"] >= 1, 60, "the first pass")
        (a / "new.txt").write_text("for the sync\n")
        other = Ops(str(b))
        other.lock(LOCK, "the job's pass")
        release = threading.Timer(1.0, other.close)
        release.start()
        try:
            proc = subprocess.run([sys.executable, "-m", "tether", "sync", "notes"], env=env, capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
        finally:
            release.join()
        assert proc.returncode == 0, proc.stderr
        assert "in a pass: this one follows it" in proc.stderr and (b / "new.txt").exists()
