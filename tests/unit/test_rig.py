"""Tests of the test rig itself: if these lie, every integration test lies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.rig.compare import assert_same_tree, diff_trees
from tests.rig.sshd import SshServer
from tests.rig.trees import (
    EMPTY_DIRS_PARENT,
    HOSTILE_DIRS_PARENT,
    HOSTILE_EMPTY_DIR,
    HOSTILE_NAMES,
    make_tree,
    touch_files,
)


@pytest.fixture
def twin_trees(tmp_path: Path) -> tuple[Path, Path]:
    """Two trees from the same seed; tests mutate b and expect a difference."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, 300, seed=7, total_bytes=300_000)
    make_tree(b, 300, seed=7, total_bytes=300_000)
    return a, b


def _first_file(root: Path) -> bytes:
    """Deterministically pick a regular file deep in the tree (bytes path)."""
    for dirpath, _dirs, files in sorted(os.walk(os.fsencode(root))):
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 10:
                return p
    raise AssertionError("no file found")


def test_same_seed_same_tree(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    assert diff_trees(a, b) == []
    assert_same_tree(a, b)


def test_different_seed_differs(tmp_path: Path) -> None:
    make_tree(tmp_path / "a", 100, seed=1)
    make_tree(tmp_path / "b", 100, seed=2)
    assert diff_trees(tmp_path / "a", tmp_path / "b")


def test_tree_info_counts(tmp_path: Path) -> None:
    info = make_tree(tmp_path / "t", 1000, seed=3, total_bytes=2_000_000)
    n_hostile = len(HOSTILE_NAMES)
    assert info.files == 1000 + 2 * n_hostile
    assert 0.9 * 2_000_000 < info.bytes <= 2_000_000 + 2 * n_hostile * 3000
    assert info.symlinks >= 3
    on_disk = {"files": 0, "dirs": 0, "symlinks": 0}
    for dirpath, dirs, files in os.walk(os.fsencode(tmp_path / "t")):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            kind = "symlinks" if os.path.islink(p) else "dirs" if os.path.isdir(p) else "files"
            on_disk[kind] += 1
    assert on_disk == {"files": info.files, "dirs": info.dirs, "symlinks": info.symlinks}


def test_detects_changed_byte(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    p = _first_file(b)
    st = os.stat(p)
    with open(p, "r+b") as fh:
        fh.seek(5)
        c = fh.read(1)
        fh.seek(5)
        fh.write(bytes([c[0] ^ 0xFF]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    diffs = diff_trees(a, b)
    assert len(diffs) == 1 and diffs[0].startswith("content differs"), diffs
    with pytest.raises(AssertionError, match="content differs"):
        assert_same_tree(a, b)


def test_detects_changed_mode(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    p = _first_file(b)
    os.chmod(p, os.stat(p).st_mode ^ 0o001)
    diffs = diff_trees(a, b)
    assert len(diffs) == 1 and diffs[0].startswith("mode differs"), diffs


def test_detects_changed_mtime(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    p = _first_file(b)
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # 1 ns is enough
    diffs = diff_trees(a, b)
    assert len(diffs) == 1 and diffs[0].startswith("mtime differs"), diffs


def test_detects_dir_mtime_but_root_only_on_request(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    os.utime(b, ns=(0, 1))
    assert diff_trees(a, b) == []
    assert diff_trees(a, b, check_root_mtime=True)[0].startswith("mtime differs: <root>")


def test_detects_missing_empty_dir(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    parent = os.path.join(os.fsencode(b), EMPTY_DIRS_PARENT)
    st = os.stat(parent)
    os.rmdir(os.path.join(parent, b"e1"))
    os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the absence should show
    assert diff_trees(a, b) == [f"only in a: {os.path.join(EMPTY_DIRS_PARENT, b'e1')!r}"]


def test_detects_changed_symlink_target(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    link = os.path.join(os.fsencode(b), b"links", b"to-dir")
    st = os.lstat(link)
    target = os.readlink(link)
    os.unlink(link)
    os.symlink(target + b"/", link)
    os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    parent = os.path.dirname(link)
    os.utime(parent, ns=(os.stat(a / "links").st_atime_ns, os.stat(a / "links").st_mtime_ns))
    diffs = diff_trees(a, b)
    assert len(diffs) == 1 and diffs[0].startswith("symlink target differs"), diffs


def test_detects_type_change(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    link = os.path.join(os.fsencode(b), b"links", b"dangling")
    os.unlink(link)
    os.mkdir(link)
    assert any(d.startswith("type differs") for d in diff_trees(a, b))


def test_ignore_top(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    (b / ".tether").mkdir()
    os.utime(b, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns))
    assert diff_trees(a, b) == []
    assert diff_trees(a, b, ignore_top=()) == ["only in b: b'.tether'"]


def test_hostile_names_exist(tmp_path: Path) -> None:
    make_tree(tmp_path / "t", 10, seed=0)
    root = os.fsencode(tmp_path / "t")
    for name in HOSTILE_NAMES:
        assert os.path.isfile(os.path.join(root, name)), name
        sub = os.path.join(root, HOSTILE_DIRS_PARENT, name)
        assert os.path.isdir(sub) and os.path.isfile(os.path.join(sub, name)), name
    empty = os.path.join(root, EMPTY_DIRS_PARENT, HOSTILE_EMPTY_DIR)
    assert os.path.isdir(empty) and os.listdir(empty) == []
    assert b"caf\xc3\xa9" in HOSTILE_NAMES and b"cafe\xcc\x81" in HOSTILE_NAMES
    assert any(len(n) == 255 for n in HOSTILE_NAMES)
    assert not os.path.lexists(os.path.join(root, b"pwned"))
    links = os.path.join(root, b"links")
    assert os.path.isfile(os.path.join(links, b"to-file"))
    assert os.path.isdir(os.path.join(links, b"to-dir"))
    assert os.path.islink(os.path.join(links, b"dangling"))
    assert not Path(os.fsdecode(os.path.join(links, b"dangling"))).exists()


def test_touch_files(twin_trees: tuple[Path, Path]) -> None:
    a, b = twin_trees
    changed = touch_files(b, 5, seed=1)
    assert len(changed) == 5
    diffs = diff_trees(a, b)
    # each changed file shows a size and an mtime difference, nothing else
    assert len(diffs) == 10, diffs
    for p in changed:
        assert any(repr(os.fsencode(p.relative_to(b))) in d for d in diffs)
    assert touch_files(a, 5, seed=1) == [a / p.relative_to(b) for p in changed]
    assert diff_trees(a, b) == []


# ---------------------------------------------------------------------------- sshd


def _ssh(server: SshServer, alias: str) -> subprocess.CompletedProcess[str]:
    return server.run_ssh("true", alias=alias)


def test_sshd_accepts_authorized_key(sshd: SshServer) -> None:
    r = _ssh(sshd, "tether-test")
    assert r.returncode == 0, r.stderr
    r = sshd.run_ssh("printf", "%s", "$HOME")
    assert r.returncode == 0 and r.stdout.startswith("/"), r


def test_sshd_unknown_host_key(sshd: SshServer) -> None:
    r = _ssh(sshd, "tether-unknownkey")
    assert r.returncode == 255
    assert "Host key verification failed" in r.stderr, r.stderr


def test_sshd_bad_client_key(sshd: SshServer) -> None:
    r = _ssh(sshd, "tether-badkey")
    assert r.returncode == 255
    assert "Permission denied" in r.stderr, r.stderr


def test_sshd_down(sshd: SshServer) -> None:
    r = _ssh(sshd, "tether-down")
    assert r.returncode == 255
    assert "Connection refused" in r.stderr, r.stderr


def test_sshd_env_and_rsync(sshd: SshServer, tmp_path: Path) -> None:
    env = sshd.env({"PATH": os.environ["PATH"]})
    assert env["TETHER_SSH_CONFIG"] == str(sshd.ssh_config)
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 50, seed=5)
    r = subprocess.run(
        [
            "rsync",
            "-aHs",
            "-e",
            f"ssh -F {sshd.ssh_config}",
            "--",
            f"{src}/",
            f"{sshd.alias}:{dst}/",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert_same_tree(src, dst, check_root_mtime=True, check_root_mode=True)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_sshd_stop_is_idempotent(tmp_path: Path, sshd: SshServer) -> None:
    # depends on sshd only so it is skipped with the same reason when sshd is missing
    with SshServer.start(tmp_path / "own") as own:
        assert own.port != sshd.port and own.running
        assert own.run_ssh("true").returncode == 0
    assert not own.running
    own.stop()
    r = own.run_ssh("true")
    assert r.returncode == 255 and "Connection refused" in r.stderr
