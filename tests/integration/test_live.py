"""The continuous mirror as a user runs it: `tether start`, real inotify, real sshd, real faults."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig.kept import kept
from tests.rig.live import running, status, wait_for, wait_same, write_job
from tests.rig.run import find_named, tether
from tests.rig.sshd import SshServer
from tests.rig.trees import HOSTILE_NAMES, make_tree


def test_changes_reach_local_and_ssh_targets_hostile_names_included(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    src, local, remote = tmp_path / "src", tmp_path / "local", tmp_path / "remote"
    make_tree(src, 300, seed=21)
    write_job(tether_ssh_env, "j", src, [str(local), f"{sshd.alias}:{remote}"], interval=0)
    with running(tether_ssh_env, "j"):
        wait_same(src, local)
        wait_same(src, remote)
        bsrc = os.fsencode(src)
        n = len(HOSTILE_NAMES)
        for i, name in enumerate(HOSTILE_NAMES):  # create, modify, rename (to another hostile name), delete
            a, b = os.path.join(bsrc, b"live-a%d" % i), os.path.join(bsrc, b"live-b%d" % i)
            os.mkdir(a)
            os.mkdir(b)
            with open(os.path.join(a, name), "wb") as f:
                f.write(b"one")
            with open(os.path.join(a, name), "ab") as f:
                f.write(b" two")
            os.rename(os.path.join(a, name), os.path.join(b, HOSTILE_NAMES[(i + 1) % n]))
        os.unlink(os.path.join(bsrc, b"live-b0", HOSTILE_NAMES[1]))
        os.mkdir(os.path.join(bsrc, b"new dir \n"))
        with open(os.path.join(bsrc, b"new dir \n", b"$(touch pwned)"), "wb") as f:
            f.write(b"x")
        wait_same(src, local)
        wait_same(src, remote)
        # the files are there before the batch that sent them has ended and said so
        wait_for(lambda: [t["state"] for t in status(tether_ssh_env, "j")["targets"]] == ["idle", "idle"],
                 60, "both targets idle")  # fmt: skip
        assert status(tether_ssh_env, "j")["running"]
    assert find_named(tmp_path, b"pwned") == []
    assert status(tether_ssh_env, "j")["running"] is False


def _inode(p: Path) -> int:
    return p.stat().st_ino


def test_event_races_that_lost_data_elsewhere(tmp_path: Path, tether_env) -> None:
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    outside.mkdir()
    (src / "old").mkdir(parents=True)
    (src / "a").write_text("chain")
    (src / "old" / "file").write_text("moved, not re-sent")
    (src / "keep").mkdir()
    (src / "keep" / "precious").write_text("must survive")
    (src / "data").mkdir()
    (src / "data" / "x").write_text("x")
    (src / "leaving").write_text("bye")
    write_job(tether_env, "r", src, [str(dst)], interval=0)
    with running(tether_env, "r"):
        wait_same(src, dst)
        ino_a, ino_file = _inode(dst / "a"), _inode(dst / "old" / "file")

        # a -> b -> c in one window arrives as one move to c
        os.rename(src / "a", src / "b")
        os.rename(src / "b", src / "c")
        # mkdir new && mv old/file new/ moves the file
        (src / "new").mkdir()
        os.rename(src / "old" / "file", src / "new" / "file")
        # a directory replaced at once by a symlink of the same name never deletes what it points to
        shutil.rmtree(src / "data")
        (src / "data").symlink_to("keep")
        # a file moved out of the tree is deleted on the target
        os.rename(src / "leaving", outside / "leaving")
        wait_same(src, dst)
        assert _inode(dst / "c") == ino_a and not (dst / "b").exists()
        assert _inode(dst / "new" / "file") == ino_file
        assert (dst / "keep" / "precious").read_text() == "must survive"
        assert (dst / "data").is_symlink() and not (dst / "leaving").exists()


def test_a_file_deleted_on_the_target_by_hand_comes_back_at_the_next_full_pass(tmp_path: Path, tether_env) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 50, seed=22, hostile=False)
    write_job(tether_env, "fp", src, [str(dst)], interval=1)
    with running(tether_env, "fp"):
        wait_same(src, dst)
        victim = sorted(p for p in dst.rglob("*.dat"))[0]
        victim.unlink()
        wait_for(victim.exists, 30, "the periodic full pass to restore the file")
        wait_same(src, dst)


def test_a_renamed_directory_is_moved_on_an_ssh_target_not_resent(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    big = src / "big"
    big.mkdir(parents=True)
    for i in range(2000):
        (big / f"f{i:04d}").write_bytes(os.urandom(512))
    write_job(tether_ssh_env, "mv", src, [f"{sshd.alias}:{dst}"], interval=0)
    with running(tether_ssh_env, "mv"):
        wait_same(src, dst)
        wait_for(lambda: status(tether_ssh_env, "mv")["targets"][0]["full_passes"] == 1, 30, "the first pass")
        before = status(tether_ssh_env, "mv")["targets"][0]["bytes_sent"]
        ino = _inode(dst / "big")
        os.rename(big, src / "renamed")
        wait_same(src, dst)
        assert _inode(dst / "renamed") == ino  # the same directory, moved
        assert status(tether_ssh_env, "mv")["targets"][0]["bytes_sent"] == before  # no file data sent


def test_start_stop_status_and_conflicting_jobs(tmp_path: Path, tether_env) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 20, seed=23, hostile=False)
    write_job(tether_env, "one", src, [str(dst)], interval=0)
    (tmp_path / "other").mkdir()
    write_job(tether_env, "two", tmp_path / "other", [str(dst / "inner")], interval=0)
    with running(tether_env, "one"):
        again = tether(["start", "one"], tether_env, check_rc=0)
        assert "already running" in again.stdout
        clash = tether(["start", "two"], tether_env, check_rc=2)
        assert "'two' and 'one' would both write" in clash.stderr
        run = tether(["run", "one"], tether_env, check_rc=4)
        assert "already running" in run.stderr
        text = tether(["status"], tether_env, check_rc=0).stdout
        assert "one: running" in text and "two: stopped" in text
        assert re.search(rf"^one +{re.escape(str(dst))} +running/", text, re.M), text  # the table's row
        wait_same(src, dst)
    assert "stopped" in tether(["status", "one"], tether_env, check_rc=0).stdout
    log = tether(["log", "one"], tether_env, check_rc=0).stdout
    assert "full pass done" in log and "stopped" in log


def test_kill_9_during_a_burst_then_start_converges(tmp_path: Path, tether_env) -> None:
    src, dst, stage = tmp_path / "src", tmp_path / "dst", tmp_path / "stage"
    src.mkdir()
    make_tree(stage, 4000, seed=24, hostile=False)
    archive = tmp_path / "burst.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(stage, arcname="burst")
    write_job(tether_env, "k", src, [str(dst)], interval=0)
    tether(["start", "k"], tether_env, check_rc=0)
    pid = status(tether_env, "k")["pid"]
    subprocess.run(["tar", "-xf", str(archive), "-C", str(src)], check=True)
    wait_for(lambda: (dst / "burst").exists(), 30, "the burst to start arriving")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not status(tether_env, "k")["running"], 30, "the job to be dead")
    with running(tether_env, "k"):
        wait_same(src, dst)


def test_an_ssh_outage_of_30_s_converges_without_user_action(tmp_path: Path, tmp_path_factory, tether_env) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 100, seed=25, hostile=False)
    with SshServer.start(tmp_path_factory.mktemp("outage")) as server:
        env = server.env(tether_env)
        write_job(env, "o", src, [f"{server.alias}:{dst}"], interval=0)
        with running(env, "o"):
            wait_same(src, dst)
            outage_end = time.monotonic() + 30
            server.stop()
            make_tree(src / "during", 50, seed=26, hostile=False)
            (src / "during-edit.txt").write_text("written while the target was down")
            wait_for(lambda: status(env, "o")["targets"][0]["state"] in ("down", "retrying"), 60, "target down")
            assert status(env, "o")["targets"][0]["last_error"]
            time.sleep(max(0.0, outage_end - time.monotonic()))  # the scenario: 30 s without sshd
            server.restart()
            wait_same(src, dst, deadline=90)
            wait_for(lambda: status(env, "o")["targets"][0]["state"] == "idle", 30, "target idle")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_target_is_a_clear_error_then_converges_when_space_is_freed(
    tmp_path: Path, tiny_tmpfs: Path, tether_env
) -> None:
    src, dst = tmp_path / "src", tiny_tmpfs / "dst"
    src.mkdir()
    (src / "small.txt").write_text("fits")
    write_job(tether_env, "full", src, [str(dst)], interval=0)
    with running(tether_env, "full"):
        wait_same(src, dst)
        # saved by rename: the source never holds a shorter big.bin that would fit (an event
        # between open and write could send that, and it would rightly land)
        (tmp_path / "big.tmp").write_bytes(os.urandom(3_000_000))  # more than the 2 MB target
        os.replace(tmp_path / "big.tmp", src / "big.bin")
        (src / "small2.txt").write_text("also fits")
        wait_for(
            lambda: "space" in (status(tether_env, "full")["targets"][0]["last_error"] or ""), 60, "a disk-full error"
        )
        assert not (dst / "big.bin").exists()  # never a half-written file under its name
        assert "space" in tether(["log", "full"], tether_env, check_rc=0).stdout
        subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
        wait_same(src, dst)
        assert not [p for p in dst.rglob("*") if p.name.startswith(".") and p.name != ".tether"]


def test_delete_modes_keep_and_trash(tmp_path: Path, tether_env) -> None:
    src = tmp_path / "src"
    make_tree(src, 20, seed=27, hostile=False)
    keep, trash = tmp_path / "keep", tmp_path / "trash"
    write_job(tether_env, "keep", src, [str(keep)], interval=0, delete="keep")
    write_job(tether_env, "trash", src, [str(trash)], interval=0, delete="trash", trash_days=7)
    victim = sorted(p for p in src.rglob("*.dat"))[0]
    rel = victim.relative_to(src)
    with running(tether_env, "keep"), running(tether_env, "trash"):
        wait_same(src, keep)
        wait_same(src, trash)
        victim.unlink()
        (src / "marker.txt").write_text("after the delete")
        wait_for(lambda: (keep / "marker.txt").exists() and (trash / "marker.txt").exists(), 30, "the marker")
        wait_for(lambda: not (trash / rel).exists(), 30, "the delete on the trash target")
        assert (keep / rel).exists()  # delete = "keep": the target keeps it
        trashed = kept(trash, str(rel), "deleted")
        assert len(trashed) == 1 and trashed[0].read_bytes() == (keep / rel).read_bytes()


def test_one_target_down_never_delays_the_others(tmp_path: Path, sshd: SshServer, tether_ssh_env) -> None:
    src, ok = tmp_path / "src", tmp_path / "ok"
    make_tree(src, 30, seed=28, hostile=False)
    write_job(tether_ssh_env, "fan", src, [str(ok), "tether-down:/nowhere", f"{sshd.alias}:{tmp_path / 'ok2'}"],
              interval=0)  # fmt: skip
    with running(tether_ssh_env, "fan"):
        wait_same(src, ok)
        (src / "new.txt").write_text("still flowing")
        wait_same(src, ok)
        wait_same(src, tmp_path / "ok2")

        def both_idle() -> bool:  # the files arrive a moment before their worker says it is idle
            states = [t["state"] for t in status(tether_ssh_env, "fan")["targets"]]
            return bool(states[0] == "idle" and states[2] == "idle")

        wait_for(both_idle, 30, "the two reachable targets to be idle")
        # the down target alternates between a retry in flight ("syncing") and waiting: catch the wait
        wait_for(lambda: status(tether_ssh_env, "fan")["targets"][1]["state"] in ("down", "retrying"), 60,
                 "the down target to be reported down")  # fmt: skip
        assert "connection refused" in status(tether_ssh_env, "fan")["targets"][1]["last_error"]


def test_mirror_watch_runs_in_the_foreground_and_stops_cleanly_on_sigterm(tmp_path: Path, tether_env) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 20, seed=29)
    proc = subprocess.Popen([sys.executable, "-m", "tether", "mirror", "--watch", str(src), str(dst)],
                            env=tether_env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_same(src, dst)
        (src / "later.txt").write_text("seen by the watcher")
        wait_same(src, dst)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err


def test_restart_and_owner_and_acl_housekeeping(tmp_path: Path, tether_env) -> None:
    if not shutil.which("setfacl"):
        pytest.skip("setfacl (package acl) is not installed")
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 10, seed=30, hostile=False)
    write_job(tether_env, "own", src, [str(dst)], interval=0, permissions="u:nobody:rX",
              sync_owner="nobody", final_owner="root:root")  # fmt: skip
    names = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    with running(tether_env, "own"):
        # an ACL changes the group bits (its mask), so modes are not compared here, names are
        wait_for(lambda: sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == names, 60, "the first pass")
        wait_for(lambda: dst.stat().st_uid == pwd.getpwnam("nobody").pw_uid, 30, "sync_owner on the target")
        (src / "new.txt").write_text("n")
        wait_for(lambda: (dst / "new.txt").exists() and (dst / "new.txt").stat().st_uid != 0, 30, "owner of new file")

        def acl() -> str:  # a busy machine may split the create and the close into two puts: wait
            return subprocess.run(["getfacl", "-p", str(dst / "new.txt")], capture_output=True, text=True).stdout

        wait_for(lambda: "user:nobody:r" in acl(), 30, "the ACL on the new file")
        first = status(tether_env, "own")["pid"]
        tether(["restart", "own"], tether_env, check_rc=0)
        assert status(tether_env, "own")["pid"] != first
    wait_for(lambda: (dst / "new.txt").stat().st_uid == 0, 30, "final_owner when the job stopped")


def test_stop_kills_a_transfer_that_outlives_the_timeout_and_the_next_start_converges(
    tmp_path: Path, tether_env
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 10, seed=31, hostile=False)
    write_job(tether_env, "slow", src, [str(dst)], interval=0, bwlimit="100")
    tether(["start", "slow"], tether_env, check_rc=0)
    wait_same(src, dst)

    def first_pass_over() -> bool:  # the tree can be equal before the pass that made it says so
        t = status(tether_env, "slow")["targets"][0]
        return bool(t["full_passes"] >= 1 and t["state"] == "idle")

    wait_for(first_pass_over, 60, "the first pass to end")
    (tmp_path / "big.bin").write_bytes(os.urandom(4_000_000))  # 40 s at 100 KB/s
    (tmp_path / "big.bin").rename(src / "big.bin")  # whole at once: no half-written state to mirror

    def in_flight() -> bool:  # rsync's temp file of big.bin: its transfer, not the first pass, is running
        return status(tether_env, "slow")["targets"][0]["state"] == "syncing" and any(
            p.name.startswith(".big.bin.") for p in dst.iterdir()
        )

    wait_for(in_flight, 30, "the transfer to start")
    out = tether(["stop", "--timeout", "1", "slow"], tether_env, check_rc=0).stdout
    assert "was killed" in out
    assert not (dst / "big.bin").exists()  # never a half-written file under its name
    write_job(tether_env, "slow", src, [str(dst)], interval=0)
    with running(tether_env, "slow"):
        wait_same(src, dst)


@pytest.fixture
def unprivileged_user() -> Iterator[str]:
    if not (shutil.which("useradd") and shutil.which("sudo")):
        pytest.skip("useradd and sudo are needed (scripts/setup --dev installs sudo)")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("the far side needs /usr/bin/python3 on the unprivileged user's PATH")
    name = "tethernopw"
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-p", "*", name], check=True)  # "*": not locked, no password
    yield name
    subprocess.run(["userdel", name], capture_output=True)


def test_sudo_that_would_ask_for_a_password_is_a_clear_error(
    tmp_path: Path, tether_env, unprivileged_user: str
) -> None:
    user = unprivileged_user
    # sshd reads authorized_keys as the user: everything here must be reachable by that user
    base = Path(tempfile.mkdtemp(prefix="tether-nopw-", dir="/tmp"))
    try:
        base.chmod(0o755)
        src, dst = tmp_path / "src", base / "dst"
        make_tree(src, 5, seed=32, hostile=False)
        dst.mkdir()
        shutil.chown(dst, user)
        with SshServer.start(base / "sshd") as server:
            (base / "sshd").chmod(0o755)
            server.authorized_keys.chmod(0o644)  # public keys only
            theirs = server.ssh_config.read_text()
            mine = theirs.replace(f"Host {server.alias}\n", "Host as-user\n", 1).replace(
                f"User {server.user}\n", f"User {user}\n", 1
            )
            config = tmp_path / "ssh_config"
            config.write_text(mine)
            env = dict(tether_env, TETHER_SSH_CONFIG=str(config))
            write_job(env, "nopw", src, [f"as-user:{dst}"], interval=0, sync_owner="root", sudo=True)
            with running(env, "nopw"):
                try:
                    wait_for(
                        lambda: "sudo asks for a password" in (status(env, "nopw")["targets"][0]["last_error"] or ""),
                        60, "the sudo error",
                    )  # fmt: skip
                except AssertionError as e:
                    raise AssertionError(f"{e}\n{tether(['log', 'nopw'], env).stdout}") from None
                # it alternates between a retry in flight ("syncing") and the wait: catch the wait
                wait_for(lambda: status(env, "nopw")["targets"][0]["state"] == "retrying", 60, "the retry wait")
    finally:
        shutil.rmtree(base, ignore_errors=True)
