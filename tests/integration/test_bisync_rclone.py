"""bisync between a local folder and an rclone remote, served for real on loopback (rclone serve sftp)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.rig.kept import kept as kept_versions
from tests.rig.rclone import REMOTE, RcloneServer
from tests.rig.run import contents as _files
from tests.rig.run import tether, tether_json
from tether.bisync.config import BisyncJob
from tether.bisync.engine import Options
from tether.bisync.runner import one_pass, opened, state_path
from tether.bisync.state import State
from tether.dirs import Dirs
from tether.endpoints import Local, Rclone
from tether.errors import EXIT_LOCKED, TetherError


def _env(tether_env: dict[str, str], server: RcloneServer) -> dict[str, str]:
    return tether_env | server.env()


def test_local_and_rclone_sync_both_ways_with_trash_conflicts_and_big_files(
    tmp_path: Path, tether_env: dict[str, str], rclone_sftp: RcloneServer
) -> None:
    env = _env(tether_env, rclone_sftp)
    name = f"pair-{secrets.token_hex(4)}"
    remote, far = f"{REMOTE}:{name}", rclone_sftp.root / name
    a = tmp_path / "a"
    (a / "d").mkdir(parents=True)
    (a / "one.txt").write_text("one\n")
    (a / "d" / "two words.txt").write_text("two\n")
    (a / "big.bin").write_bytes(os.urandom(5 << 20))  # above the in-message size: staged by rclone
    first = tether_json(["bisync", a, remote], env)
    assert first["_rc"] == 0, first["_stderr"]
    assert _files(far) == _files(a)

    (far / "from-remote.txt").write_text("remote\n")
    (far / "big-remote.bin").write_bytes(os.urandom(5 << 20))
    (a / "one.txt").unlink()
    doc = tether_json(["bisync", a, remote], env)
    assert doc["_rc"] == 0, doc["_stderr"]
    assert doc["copied"]["to_path1"] == 2 and doc["deleted"]["path2"] == 1
    assert _files(far) == _files(a)
    assert kept_versions(far, "one.txt", "deleted"), "the deleted file is kept in the remote's versions"

    (a / "d" / "two words.txt").write_text("local edit\n")
    (far / "d" / "two words.txt").write_text("remote edit\n")
    doc = tether_json(["bisync", a, remote], env)
    assert doc["_rc"] == 0 and len(doc["conflicts"]) == 1, doc
    assert _files(far) == _files(a)
    kept = sorted(v for k, v in _files(a).items() if k.startswith("d/"))
    assert kept == [b"local edit\n", b"remote edit\n"]
    assert tether_json(["bisync", a, remote, "--dry-run"], env)["plan"] == []


def test_rclone_pairs_only_with_a_local_folder(tether_env: dict[str, str], rclone_sftp: RcloneServer) -> None:
    env = _env(tether_env, rclone_sftp)
    proc = tether(["bisync", f"{REMOTE}:x", "somehost:/y"], env, check_rc=2)
    assert "local directory" in proc.stderr


def test_a_lock_taken_over_mid_pass_stops_the_pass_and_the_next_one_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rclone_sftp: RcloneServer
) -> None:
    """Another run takes the remote's lock while a pass holds it, and the lock refresher finds it
    taken: the pass writes nothing more there and stops, exit 4, naming the taker; the next pass
    (same open replicas, as a running job has) syncs once the taker is gone."""
    for k, v in rclone_sftp.env().items():
        monkeypatch.setenv(k, v)  # rcd inherits the environment: that is how it finds the remote
    name = f"pair-{secrets.token_hex(4)}"
    far = rclone_sftp.root / name
    a = tmp_path / "a"
    a.mkdir()
    (a / "one.txt").write_text("one\n")
    job = BisyncJob("taken", None, Local(str(a)), Rclone(REMOTE, name))
    dirs = Dirs(tmp_path / "cfg", tmp_path / "state", tmp_path / "run")
    thief = "thief (host elsewhere.example, pid 1)\n"
    state = State(state_path(dirs, job))
    try:
        with opened(job, dirs, state) as (r1, r2):

            def take_over(o: Options) -> None:
                def between_scan_and_actions() -> None:
                    (far / ".tether" / "lock").write_text(thief)  # fresh, from another host: alive
                    r2.agent._refresh_round()  # type: ignore[attr-defined]  # its round, due now

                o.after_scan = between_scan_and_actions

            with pytest.raises(TetherError, match=r"was taken over by thief .*; the pass stops, the next pass") as e:
                one_pass(job, dirs, replicas=(r1, r2), state=state, tweak=take_over)
            assert e.value.code == EXIT_LOCKED
            assert not (far / "one.txt").exists()
            assert (far / ".tether" / "lock").read_text() == thief
            (far / ".tether" / "lock").unlink()  # the other run is done
            rep = one_pass(job, dirs, replicas=(r1, r2), state=state)
            assert rep.ok, rep.to_json()
            assert (far / "one.txt").read_text() == "one\n"
    finally:
        state.close()


def test_a_file_replaces_a_remote_folder_that_holds_only_excluded_files(
    tmp_path: Path, tether_env: dict[str, str], rclone_sftp: RcloneServer
) -> None:
    """As on a local or ssh replica: path1 turns folder d into a file while the remote's d still
    holds an excluded cache file; the folder goes whole into the remote's versions, the file
    takes its place (before, every pass failed with "Directory not empty")."""
    env = _env(tether_env, rclone_sftp)
    name = f"pair-{secrets.token_hex(4)}"
    remote, far = f"{REMOTE}:{name}", rclone_sftp.root / name
    a = tmp_path / "a"
    (a / "d").mkdir(parents=True)
    (a / "d" / "x.txt").write_text("x\n")
    for n in ("one", "two", "three"):  # so that one delete stays under max_delete
        (a / n).write_text(n)
    args: list[str | Path | bytes] = ["bisync", a, remote, "--exclude", "*.tmp"]
    assert tether_json(args, env)["_rc"] == 0
    (far / "d" / "cache.tmp").write_text("excluded\n")
    import shutil

    shutil.rmtree(a / "d")
    (a / "d").write_text("now a file\n")
    doc = tether_json(args, env)
    assert doc["_rc"] == 0 and any("held only files this job excludes" in w for w in doc["warnings"]), str(doc)
    assert (far / "d").read_text() == "now a file\n"
    assert [p.read_text() for p in (far / ".tether" / "versions").rglob("cache.tmp")] == ["excluded\n"]
    assert tether_json(args, env)["plan"] == []
