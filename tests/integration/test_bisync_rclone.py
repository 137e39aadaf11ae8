"""bisync between a local folder and an rclone remote, served for real on loopback (rclone serve sftp)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tests.rig.rclone import REMOTE, RcloneServer
from tests.rig.run import contents as _files
from tests.rig.run import tether, tether_json


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
    assert list((far / ".tether" / "trash").rglob("one.txt")), "the deleted file is in the remote's trash"

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
