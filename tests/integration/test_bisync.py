"""bisync behaviour through the real command: guards, bad input, locks, jobs, commands, live mode."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.rig.kept import kept
from tests.rig.live import running, wait_for
from tests.rig.live import small_pair as _pair
from tests.rig.live import write_job_text as _job
from tests.rig.run import contents as _files
from tests.rig.run import tether, tether_json, tether_unprivileged
from tests.rig.sshd import SshServer
from tether.bisync.state import State
from tether.dirs import Dirs


def test_first_pass_unions_and_reports_counts(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    (b / "only-b.txt").write_text("b\n")
    doc = tether_json(["bisync", a, b], tether_env)
    assert doc["_rc"] == 0, doc["_stderr"]
    assert doc["first_run"] and doc["copied"] == {"to_path1": 1, "to_path2": 4}
    assert _files(a) == _files(b)
    again = tether_json(["bisync", a, b], tether_env)
    assert again["_rc"] == 0 and not again["first_run"] and again["plan"] == []


def test_a_file_saved_before_the_pass_is_recorded_clean_so_the_next_pass_reads_it_no_more(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """Racily clean starts 10 ms under the lock's stamp, touched as the scan starts, also when the
    scan runs in a forked child (which holds none of our descriptors): a file saved half a second
    before the pass is recorded clean on both sides, not re-hashed by the passes of the next 2 s."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    saved = a / "saved.txt"
    saved.write_text("saved\n")
    before = time.time_ns() - 500_000_000
    os.utime(saved, ns=(before, before))
    assert tether(["bisync", a, b], tether_env).returncode == 0
    (db,) = (Dirs.from_env(tether_env).state / "bisync").glob("pair-*.sqlite")
    state = State(db)
    try:
        e1, e2 = state.load()[b"saved.txt"]
    finally:
        state.close()
    assert e1 is not None and e2 is not None
    racy = (e1[4] < 0, e2[4] < 0)  # a negated inode: the floor was our clock less 2 s
    assert racy == (False, False)


def test_overlapping_replicas_are_refused(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, _ = _pair(tmp_path)
    (a / "inner").mkdir()
    proc = tether(["bisync", a, a / "inner"], tether_env, check_rc=2)
    assert "overlap" in proc.stderr and "inner" in proc.stderr
    assert not (a / ".tether").exists()


def test_two_remote_replicas_are_refused(tmp_path: Path, tether_env: dict[str, str]) -> None:
    proc = tether(["bisync", "h1:/x", "h2:/y"], tether_env, check_rc=2)
    assert "both remote" in proc.stderr


def test_a_vanished_replica_is_refused_not_read_as_deleted(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    tether(["bisync", a, b], tether_env, check_rc=0)
    shutil.rmtree(b)
    proc = tether(["bisync", a, b], tether_env, check_rc=1)
    assert "cannot be opened" in proc.stderr and str(b) in proc.stderr
    assert len(_files(a)) == 4 and not b.exists()


def test_an_emptied_replica_never_empties_the_other(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    tether(["bisync", a, b], tether_env, check_rc=0)
    for p in b.iterdir():  # what an unmounted disk looks like: the mount point, empty
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    proc = tether(["bisync", a, b], tether_env, check_rc=1)
    assert "is empty" in proc.stderr and "mounted" in proc.stderr
    assert len(_files(a)) == 4


def test_delete_guard_stops_before_deleting_and_force_overrides(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path, files=10)
    tether(["bisync", a, b], tether_env, check_rc=0)
    for i in range(6):
        (a / f"f{i}.txt").unlink()
    (a / "new.txt").write_text("new\n")
    proc = tether(["bisync", a, b], tether_env, check_rc=1)
    assert "would delete 6 of 10 files (60%)" in proc.stderr and "--force" in proc.stderr
    assert len(_files(b)) == 10 and not (b / "new.txt").exists()  # nothing at all was done
    doc = tether_json(["bisync", a, b, "--force"], tether_env)
    assert doc["_rc"] == 0 and doc["deleted"]["path2"] == 6
    assert _files(a) == _files(b)
    trashed = [p for p in kept(b, origin="deleted") if p.name.startswith("f0~")]
    assert trashed and trashed[0].read_text() == "file 0\n"


def test_a_live_lock_is_exit_4_naming_the_holder_and_a_stale_one_is_taken_over(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    a, b = _pair(tmp_path)
    lock = b / ".tether" / "lock"
    lock.parent.mkdir()
    lock.write_text("tether bisync elsewhere (host otherbox, pid 99999)\n")  # stale: nobody holds it
    tether(["bisync", a, b], tether_env, check_rc=0)
    with open(lock, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("tether bisync test (host testbox, pid 4242)\n")
        f.flush()
        (a / "late.txt").write_text("late\n")
        proc = tether(["bisync", a, b], tether_env, check_rc=4)
    assert "in use" in proc.stderr and "testbox" in proc.stderr and "4242" in proc.stderr
    assert not (b / "late.txt").exists()
    tether(["bisync", a, b], tether_env, check_rc=0)
    assert (b / "late.txt").exists()


def test_a_read_only_side_is_reported_and_the_other_direction_still_syncs(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    a, b = _pair(tmp_path)
    tether(["bisync", a, b], tether_env, check_rc=0)
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(b), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root and mount rights) to make a read-only replica")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True, capture_output=True)
        (a / "to-b.txt").write_text("cannot land\n")
        (b / "to-a.txt").write_text("lands\n")  # written through the writable path, read via ro
        proc = tether(["bisync", a, ro], tether_env, check_rc=1)
        assert "Read-only file system" in proc.stderr and "to-b.txt" in proc.stderr
        assert (a / "to-a.txt").read_text() == "lands\n"
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_an_unreadable_file_is_reported_and_the_rest_synced(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    secret = a / "secret.txt"
    secret.write_text("no")
    secret.chmod(0o000)
    proc = tether_unprivileged(["bisync", a, b], tether_env)
    assert proc.returncode == 1, proc.stderr
    assert "secret.txt" in proc.stderr and "Permission denied" in proc.stderr
    assert not (b / "secret.txt").exists()
    assert all((b / f"f{i}.txt").exists() for i in range(4))


def test_conflicts_keep_both_versions_and_are_listed(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    _job(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    listed_jobs = tether_json(["jobs"], tether_env)["jobs"]
    assert [(j["name"], j["kind"], j["targets"]) for j in listed_jobs] == [("notes", "bisync", [str(b)])]
    assert "ok (bisync" in tether(["check", "notes"], tether_env, check_rc=0).stdout
    tether(["sync", "notes"], tether_env, check_rc=0)
    (a / "f1.txt").write_text("edited on a\n")
    (b / "f1.txt").write_text("edited on b, later\n")
    os.utime(a / "f1.txt", (1_000_000, 1_000_000))
    doc = tether_json(["sync", "notes"], tether_env)
    assert doc["_rc"] == 0 and len(doc["conflicts"]) == 1
    copy = doc["conflicts"][0]["copy"]
    assert copy.startswith("f1.conflict-") and copy.endswith(".txt")
    for side in (a, b):
        assert (side / "f1.txt").read_text() == "edited on b, later\n"
        assert (side / copy).read_text() == "edited on a\n"
    listed = tether_json(["conflicts", "notes"], tether_env)
    assert [c["copy"] for c in listed["conflicts"]] == [copy]
    (a / copy).unlink()
    tether(["sync", "notes"], tether_env, check_rc=0)
    assert tether_json(["conflicts", "notes"], tether_env)["conflicts"] == []


def test_job_file_errors_name_the_line(tmp_path: Path, tether_env: dict[str, str]) -> None:
    _job(tether_env, "bad", 'kind = "bisync"\npath1 = "/tmp/x"\npath2 = "/tmp/y"\nconflict = "mine"\n')
    proc = tether(["check", "bad"], tether_env, check_rc=2)
    assert "bad.toml:4" in proc.stderr and "keep-both" in proc.stderr
    _job(tether_env, "bad2", 'kind = "bisync"\npath1 = "/tmp/x"\npath2 = "/tmp/x/y"\n')
    assert "overlap" in tether(["check", "bad2"], tether_env, check_rc=2).stderr


def test_before_failing_stops_the_pass_and_after_runs(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    marker = tmp_path / "after-ran"
    _job(tether_env, "cmd", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\nbefore = ["false"]\n')
    proc = tether(["sync", "cmd"], tether_env, check_rc=1)
    assert "before command 'false' failed" in proc.stderr
    assert not (b / "f0.txt").exists()
    _job(tether_env, "cmd", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\nafter = ["touch", "{marker}"]\n'
         'commands_on = "path2"\n')  # fmt: skip
    tether(["sync", "cmd"], tether_env, check_rc=0)
    assert marker.exists() and (b / "f0.txt").exists()


def test_max_time_hard_stops_cleanly_and_the_next_pass_finishes(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path, files=50)
    _job(tether_env, "slow", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\nmax_time_hard = 0.000001\n')
    proc = tether(["sync", "slow"], tether_env, check_rc=1)
    assert "max_time_hard" in proc.stderr and "next pass continues" in proc.stderr
    _job(tether_env, "slow", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    tether(["sync", "slow"], tether_env, check_rc=0)
    assert _files(a) == _files(b)


def test_case_only_rename_onto_a_case_insensitive_replica(tmp_path: Path, tether_env: dict[str, str]) -> None:
    img, mnt = tmp_path / "ci.img", tmp_path / "ci"
    mnt.mkdir()
    made = subprocess.run(["truncate", "-s", "16M", str(img)]).returncode == 0 and subprocess.run(
        ["mkfs.ext4", "-q", "-O", "casefold", "-E", "encoding=utf8", str(img)], capture_output=True
    ).returncode == 0  # fmt: skip
    if not made or subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True).returncode:
        pytest.skip("no case-insensitive filesystem can be mounted here (mkfs.ext4 casefold on a loop device)")
    try:
        b = mnt / "b"
        b.mkdir()
        subprocess.run(["chattr", "+F", str(b)], check=True)
        a = tmp_path / "a"
        a.mkdir()
        (a / "Readme.txt").write_text("x\n")
        tether(["bisync", a, b], tether_env, check_rc=0)
        (a / "Readme.txt").rename(a / "README.txt")
        tether(["bisync", a, b], tether_env, check_rc=0)
        assert os.listdir(b) == ["README.txt"] or sorted(os.listdir(b)) == [".tether", "README.txt"]
        assert (b / "README.txt").read_text() == "x\n"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "ssh"])
def test_continuous_mode_carries_changes_both_ways(
    tmp_path: Path, tether_env: dict[str, str], remote: bool, request: pytest.FixtureRequest
) -> None:
    a, b = _pair(tmp_path)
    env = tether_env
    path2 = str(b)
    if remote:
        server: SshServer = request.getfixturevalue("sshd")
        env = server.env(tether_env)
        path2 = f"{server.alias}:{b}"
    _job(env, "live", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\ninterval = 3600\n')
    with running(env, "live"):
        wait_for(lambda: (b / "f3.txt").exists(), 30, "the first pass")
        (a / "from-a.txt").write_text("a\n")
        wait_for(lambda: (b / "from-a.txt").exists(), 30, "a change on path1 to reach path2")
        (b / "from-b.txt").write_text("b\n")
        wait_for(lambda: (a / "from-b.txt").exists(), 30, "a change on path2 to reach path1")
        (a / "f0.txt").unlink()
        wait_for(lambda: not (b / "f0.txt").exists(), 30, "a delete on path1 to reach path2")
    status = tether_json(["status", "live"], env)
    assert status["_rc"] == 0


def test_a_corrupt_state_is_set_aside_and_the_pass_runs_as_a_first_run(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    a, b = _pair(tmp_path)
    tether(["bisync", a, b], tether_env, check_rc=0)
    (a / "f0.txt").unlink()  # a deletion the lost state can no longer tell from "new on b"
    states = list((Path(tether_env["TETHER_HOME"]) / "state" / "bisync").glob("*.sqlite"))
    assert len(states) == 1
    states[0].write_bytes(b"this is not a database" * 100)
    for extra in states[0].parent.glob("*.sqlite-*"):
        extra.unlink()
    doc = tether_json(["bisync", a, b], tether_env)
    assert doc["_rc"] == 0 and doc["first_run"], doc["_stderr"]
    assert any("set aside" in w for w in doc["warnings"])
    assert (a / "f0.txt").read_text() == "file 0\n"  # a first run never deletes: the file came back
    assert list(states[0].parent.glob("*.corrupt-*"))


def test_a_job_pointed_at_another_replica_sets_its_state_aside_and_deletes_nothing(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """Found by trying: a job file edited to name another path2 read its old state as the new
    replica's, and each file missing there was deleted from path1 (3 of 3, with max_delete = 100)."""
    a, b = _pair(tmp_path, files=3)
    other = tmp_path / "other"
    other.mkdir()
    (other / "theirs.txt").write_text("already there\n")
    _job(tether_env, "p", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\nmax_delete = 100\n')
    tether(["sync", "p"], tether_env, check_rc=0)
    _job(tether_env, "p", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{other}"\nmax_delete = 100\n')
    dry = tether_json(["sync", "p", "-n"], tether_env)
    assert dry["first_run"] and any("state was made for" in w for w in dry["warnings"])
    doc = tether_json(["sync", "p"], tether_env)
    assert doc["_rc"] == 0 and doc["first_run"] and doc["deleted"] == {"path1": 0, "path2": 0}
    assert any(f"now names {a} <-> {other}; set aside as p.sqlite.other-pair-" in w for w in doc["warnings"])
    assert _files(a) == _files(other) and set(_files(a)) == {"f0.txt", "f1.txt", "f2.txt", "theirs.txt"}
    again = tether_json(["sync", "p"], tether_env)
    assert again["_rc"] == 0 and not again["first_run"] and not again["warnings"]


def test_a_state_that_cannot_be_opened_is_an_error_not_a_first_run(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = _pair(tmp_path)
    tether(["bisync", a, b], tether_env, check_rc=0)
    (a / "f0.txt").unlink()
    state = next((Path(tether_env["TETHER_HOME"]) / "state" / "bisync").glob("*.sqlite"))
    state.rename(state.with_suffix(".moved"))
    state.mkdir()  # sqlite: "unable to open database file", as for an unwritable state dir
    proc = tether(["bisync", a, b], tether_env, check_rc=1)
    assert "cannot open the state" in proc.stderr and str(state) in proc.stderr
    assert (b / "f0.txt").exists() and not (a / "f0.txt").exists()  # nothing was done either way
    assert not list(state.parent.glob("*.corrupt-*"))
