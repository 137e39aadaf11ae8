"""The continuous mirror where it used to trust too much: same-second rewrites, guessed moves,
a source root swapped in, overwritten versions in trash mode. Real jobs, real inotify, real sshd."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.rig.live import running, wait_same, write_job
from tests.rig.run import tether
from tests.rig.sshd import SshServer

MIB = 1 << 20  # above apply.SMALL_FILE: such a file goes by rsync, not inside the agent channel


def _target(kind: str, path: Path, sshd: SshServer) -> str:
    return f"{sshd.alias}:{path}" if kind == "ssh" else str(path)


def _rewrite(path: Path, data: bytes, mtime_ns: int) -> None:
    """Rewrite in place, the time pinned before the file is closed: the watcher's first event
    comes when the bytes and the time are final, whatever the machine's speed."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.write(data)
        f.flush()
        os.utime(f.fileno(), ns=(mtime_ns, mtime_ns))


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_big_file_rewritten_twice_within_one_second_arrives_both_times(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, kind: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    big = src / "big.bin"
    second = (os.stat(src).st_mtime_ns // 10**9) * 10**9
    write_job(tether_ssh_env, "ss", src, [_target(kind, dst, sshd)], interval=0)
    with running(tether_ssh_env, "ss"):
        wait_same(src, dst)
        _rewrite(big, b"A" * MIB, second + 100_000_000)
        wait_same(src, dst)
        _rewrite(big, b"B" * MIB, second + 600_000_000)  # the same size, within the same second
        wait_same(src, dst)
    tether(["sync", "ss"], tether_ssh_env, check_rc=0)
    wait_same(src, dst, deadline=5)


def _tar_of(path: Path, arcname: str, files: dict[str, bytes], mtime: int) -> Path:
    """An archive as releases ship: whole-second mtimes."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{arcname}/{name}")
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_deleted_file_and_another_with_its_name_size_and_mtime_elsewhere_is_no_move(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, kind: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "old").mkdir(parents=True)
    second = 1_600_000_000
    (src / "old" / "app.js").write_bytes(b"version 1")
    os.utime(src / "old" / "app.js", (second, second))
    release = _tar_of(tmp_path / "release.tar", "new", {"app.js": b"version 2"}, second)
    # a wide window, so that the delete and the extraction surely land in one batch
    write_job(tether_ssh_env, "mv", src, [_target(kind, dst, sshd)], interval=0, delay=0.5)
    with running(tether_ssh_env, "mv"):
        wait_same(src, dst)
        (src / "old" / "app.js").unlink()
        subprocess.run(["tar", "-xf", str(release), "-C", str(src)], check=True)
        wait_same(src, dst)
        assert (dst / "new" / "app.js").read_bytes() == b"version 2"
