"""`preserve = [...]`: owners, groups, ACLs, xattrs and hard links kept by every path that writes
a file (rsync passes, the agent's small files, moves, metadata-only changes), for the one-shot
and the continuous mirror and for bisync, local and over ssh.  Compared with the real tools
(`getfacl`, `getfattr`, stat) after each step, as a user would check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rig.live import running, status, wait_for, wait_same, write_job, write_job_text
from tests.rig.run import contents, tether
from tests.rig.sshd import SshServer

ALL = ["owner", "group", "acl", "xattr", "hardlinks"]
UID = GID = 1234  # an owner this host has no name for: travels as the number
BIG = 300 * 1024  # above the agent's small-file limit: goes by rsync

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("setfacl") and shutil.which("setfattr")),
    reason="needs root (chown) and the acl and attr tools (bash scripts/setup --dev)",
)


def sh(*argv: str | Path) -> None:
    subprocess.run([os.fspath(a) for a in argv], check=True, capture_output=True)


def entries(root: Path) -> list[str]:
    """Relative paths below root (its .tether left out), sorted."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d != ".tether"]
        out += [os.path.normpath(os.path.join(rel, n)) for n in dirs + files]
    return sorted(out)


def _tool(root: Path, argv: list[str], paths: list[str]) -> str:
    if not paths:
        return ""
    return subprocess.run([*argv, "--", *paths], cwd=root, capture_output=True, text=True, check=True).stdout


def meta_view(root: Path, links: bool) -> dict[str, object]:
    """What `getfacl`, `getfattr -d -m -` and stat say of every entry (paths relative to root)."""
    paths = entries(root)
    real = [p for p in paths if not os.path.islink(root / p)]  # the tools would follow a link
    view: dict[str, object] = {
        "stat": {p: (st.st_uid, st.st_gid, st.st_mode) for p in paths for st in [os.lstat(root / p)]},
        "getfacl": _tool(root, ["getfacl", "-p"], real),
        "getfattr": _tool(root, ["getfattr", "-h", "-d", "-m", "-"], real),
    }
    if links:  # which names are one file
        groups: dict[int, list[str]] = {}
        for p in real:
            st = os.lstat(root / p)
            if not os.path.isdir(root / p) and st.st_nlink > 1:
                groups.setdefault(st.st_ino, []).append(p)
        view["linked"] = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    return view


def meta_diff(src: Path, dst: Path, links: bool = True) -> list[str]:
    a, b = meta_view(src, links), meta_view(dst, links)
    out = []
    for key in a:
        if a[key] != b[key]:
            if isinstance(a[key], dict):
                da, db = a[key], b[key]
                assert isinstance(da, dict) and isinstance(db, dict)
                out += [
                    f"{key} {p}: {da.get(p)} != {db.get(p)}"
                    for p in sorted(set(da) | set(db))
                    if da.get(p) != db.get(p)
                ]
            else:
                out.append(f"{key}:\n{a[key]}\n  !=\n{b[key]}")
    return out


def wait_meta(src: Path, dst: Path, links: bool = True, deadline: float = 60.0, bisync: bool = False) -> None:
    if bisync:  # bisync keeps no directory mtimes: the bytes of every file, then the metadata
        assert contents(src) == contents(dst)
    else:
        wait_same(src, dst, deadline)
    last: list[str] = []

    def same() -> bool:
        nonlocal last
        try:
            last = meta_diff(src, dst, links)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            last = [str(e)]
        return not last

    try:
        wait_for(same, deadline, f"{dst} to keep the source's owners, ACLs and xattrs")
    except AssertionError as e:
        raise AssertionError(f"{e}:\n" + "\n".join(last[:20])) from None


def dressed(path: Path, acl: str = "u:nobody:rw", color: str = "blue") -> None:
    """Another owner, a named-user ACL entry and a user xattr, as a user would set them."""
    os.chown(path, UID, GID)
    sh("setfacl", "-m", acl, path)
    sh("setfattr", "-n", "user.color", "-v", color, path)


def make_source(src: Path) -> None:
    (src / "d").mkdir(parents=True)
    (src / "acl.txt").write_text("one\n")
    dressed(src / "acl.txt")
    (src / "big.bin").write_bytes(os.urandom(BIG))
    dressed(src / "big.bin", "g:nogroup:r")
    (src / "d" / "inner.txt").write_text("inner\n")
    dressed(src / "d" / "inner.txt", "u:nobody:r")
    os.chown(src / "d", UID, GID)
    sh("setfacl", "-d", "-m", "u:nobody:rx", src / "d")  # a default ACL: new files below inherit it
    sh("setfattr", "-n", "user.dir", "-v", "yes", src / "d")
    (src / "plain.txt").write_text("no extras\n")
    (src / "h1").write_text("linked\n")
    os.link(src / "h1", src / "d" / "h2")
    os.symlink("acl.txt", src / "link")
    os.chown(src / "link", UID, GID, follow_symlinks=False)


@pytest.fixture
def targets(tmp_path: Path, sshd: SshServer) -> Iterator[tuple[Path, list[Path], list[str]]]:
    """The source, the target dirs, and how a job names them (one local, one over ssh)."""
    src, local, remote = tmp_path / "src", tmp_path / "local", tmp_path / "remote"
    make_source(src)
    yield src, [local, remote], [str(local), f"{sshd.alias}:{remote}"]


def test_continuous_mirror_keeps_metadata_through_every_step(targets, tether_ssh_env) -> None:
    src, dsts, specs = targets
    write_job(tether_ssh_env, "p", src, specs, preserve=ALL, interval=0)

    def check(passes: int = 1) -> None:
        for d in dsts:
            wait_meta(src, d)

        # each change arrived by itself (agent or a batch's rsync), not by a full pass; a pass's end
        # is counted a moment after its files arrive
        def counted() -> list[int]:
            return [int(t["full_passes"]) for t in status(tether_ssh_env, "p")["targets"]]

        wait_for(lambda: min(counted()) >= passes, 30, f"{passes} full passes counted")
        assert counted() == [passes, passes]

    with running(tether_ssh_env, "p"):
        check()  # after the first full pass
        new = src / "new.txt"  # create
        new.write_text("new\n")
        dressed(new, "u:nobody:r", "green")
        (src / "d" / "child.txt").write_text("inherits d's default ACL\n")
        check()
        with open(src / "acl.txt", "a") as f:  # edit in place
            f.write("two\n")
        with open(src / "big.bin", "r+b") as fb:
            fb.write(b"edited")
        check()
        tmp = src / ".acl.txt.swp"  # save by rename, the editor copying owner and ACL to the new file
        tmp.write_text("saved by rename\n")
        dressed(tmp, "u:nobody:r", "red")
        os.rename(tmp, src / "acl.txt")
        check()
        os.chmod(src / "plain.txt", 0o640)  # metadata only
        os.chmod(src / "big.bin", 0o600)
        os.chown(src / "plain.txt", UID, 0)
        check()
        sh("setfacl", "-m", "u:nobody:---", src / "new.txt")  # ACLs and xattrs changed, added, removed
        sh("setfacl", "-b", src / "d" / "inner.txt")
        sh("setfacl", "-m", "g:nogroup:rwx", src / "d")
        sh("setfattr", "-x", "user.color", src / "acl.txt")
        sh("setfattr", "-n", "user.added", "-v", "1", src / "plain.txt")
        check()
        os.rename(src / "new.txt", src / "d" / "moved.txt")  # renames: moved on the target
        os.rename(src / "d", src / "e")
        check()
        with open(src / "h1", "a") as f:  # hard links: an edit through one name shows in both
            f.write("more\n")
        os.link(src / "plain.txt", src / "e" / "plain-link")
        check()
        for t in status(tether_ssh_env, "p")["targets"]:
            assert t["last_error"] is None, t
    # changed while stopped: the full pass at start carries it, the periodic ones keep it
    sh("setfacl", "-m", "u:nobody:rwx", src / "acl.txt")
    os.chown(src / "e" / "h2", 0, GID)
    write_job(tether_ssh_env, "p", src, specs, preserve=ALL, interval=1)
    with running(tether_ssh_env, "p"):
        wait_for(
            lambda: min(t["full_passes"] for t in status(tether_ssh_env, "p")["targets"]) >= 3, 60, "periodic passes"
        )
        for d in dsts:
            wait_meta(src, d)


def test_one_shot_sync_keeps_metadata(targets, tether_ssh_env) -> None:
    src, dsts, specs = targets
    write_job(tether_ssh_env, "once", src, specs, preserve=ALL)
    tether(["sync", "once"], tether_ssh_env, check_rc=0)
    for d in dsts:
        wait_meta(src, d, deadline=5)
    sh("setfacl", "-m", "u:nobody:r", src / "plain.txt")  # a change of metadata alone
    os.chown(src / "h1", UID, GID)
    tether(["sync", "once"], tether_ssh_env, check_rc=0)
    for d in dsts:
        wait_meta(src, d, deadline=5)


def test_without_preserve_nothing_extra_is_kept_by_the_agent(tmp_path: Path, tether_env) -> None:
    """The default stays what it was: the small-file path carries modes and mtimes only."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_source(src)
    write_job(tether_env, "plain", src, [str(dst)], interval=0)
    with running(tether_env, "plain"):
        wait_same(src, dst)
        (src / "late.txt").write_text("x\n")
        dressed(src / "late.txt")
        wait_same(src, dst)
        wait_for(lambda: (dst / "late.txt").exists(), 30, "late.txt")
    assert os.getxattr(src / "late.txt", "user.color") == b"blue"
    assert "user.color" not in os.listxattr(dst / "late.txt")


def _target(env: dict[str, str], name: str) -> dict[str, Any]:
    """The job's first target in `tether status` ({} before the job has written it)."""
    try:
        targets = status(env, name)["targets"]
    except (AssertionError, KeyError, IndexError, ValueError):
        return {}
    return targets[0] if targets else {}


def test_a_target_that_may_not_chown_says_so_per_file(tmp_path: Path, tether_env) -> None:
    """Without the chown capability the owner cannot be kept: an error naming the file, the
    rest arrives; never a traceback, never a silent drop (rsync passes and the agent alike)."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop root's chown capability")
    drop = ["setpriv", "--bounding-set", "-chown,-fowner", sys.executable, "-m", "tether"]
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "owned.txt").write_text("x\n")
    os.chown(src / "owned.txt", UID, GID)
    write_job(tether_env, "nochown", src, [str(dst)], preserve=["owner", "group"], interval=0)
    once = subprocess.run([*drop, "sync", "nochown"], env=tether_env, capture_output=True, text=True)
    assert "Traceback" not in once.stderr
    said = once.stdout + once.stderr
    assert once.returncode == 1 and "owned.txt" in said and "Operation not permitted" in said, said
    assert (dst / "owned.txt").read_text() == "x\n"  # the bytes arrived

    src2, dst2 = tmp_path / "src2", tmp_path / "dst2"
    src2.mkdir()
    write_job(tether_env, "live", src2, [str(dst2)], preserve=["owner", "group"], interval=0)
    proc = subprocess.Popen([*drop, "run", "live"], env=tether_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        wait_for(lambda: _target(tether_env, "live").get("full_passes", 0) >= 1, 60, "the first pass")
        (src2 / "later.txt").write_text("y\n")
        os.chown(src2 / "later.txt", UID, GID)

        def refused() -> bool:
            err = _target(tether_env, "live").get("last_error") or ""
            return "later.txt" in err and "cannot set owner 1234:1234" in err

        wait_for(refused, 60, "the refused owner of later.txt in the status")
        assert (dst2 / "later.txt").read_text() == "y\n"
        assert _target(tether_env, "live")["state"] == "idle"  # said, not retried forever
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err


def test_bad_preserve_values_and_endpoints_that_cannot_keep_them_are_refused(tmp_path: Path, tether_env) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_job(tether_env, "typo", src, [str(tmp_path / "t")], preserve=["owners"])
    bad = tether(["check", "typo"], tether_env, check_rc=2)
    assert "typo.toml:3" in bad.stderr and "preserve" in bad.stderr
    env = {**tether_env, "RCLONE_CONFIG_CLOUD_TYPE": "local"}
    job = f'kind = "bisync"\npath1 = "{src}"\npath2 = "cloud:{tmp_path / "c"}"\npreserve = ["acl"]\n'
    write_job_text(env, "cloudy", job)
    out = tether(["check", "cloudy"], env, check_rc=2)
    assert "cloudy.toml:4" in out.stderr and "cloud:" in out.stderr and "rclone remote" in out.stderr
    job = f'kind = "bisync"\npath1 = "{src}"\npath2 = "{tmp_path / "b"}"\npreserve = ["hardlinks"]\n'
    write_job_text(env, "linky", job)
    out = tether(["check", "linky"], env, check_rc=2)
    assert "linky.toml:4" in out.stderr and "hard links" in out.stderr


BISYNC_BIG = (4 << 20) + 1  # above bisync's small-file limit: goes by rsync


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_bisync_keeps_metadata_both_ways(kind: str, tmp_path: Path, sshd: SshServer, tether_ssh_env) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_source(a)
    os.unlink(a / "d" / "h2")  # bisync keeps no hard links
    (a / "huge.bin").write_bytes(os.urandom(BISYNC_BIG))
    dressed(a / "huge.bin", "u:nobody:r")
    b.mkdir()
    path2 = str(b) if kind == "local" else f"{sshd.alias}:{b}"
    body = f'kind = "bisync"\npath1 = "{a}"\npath2 = "{path2}"\npreserve = ["owner", "group", "acl", "xattr"]\n'
    write_job_text(tether_ssh_env, "two", body)
    tether(["sync", "two"], tether_ssh_env, check_rc=0)
    wait_meta(a, b, links=False, deadline=5, bisync=True)
    # the other way: changes made on path2, metadata only and with new bytes
    sh("setfacl", "-m", "u:nobody:rwx", b / "plain.txt")
    os.chown(b / "acl.txt", 0, GID)
    sh("setfattr", "-n", "user.from", "-v", "b", b / "d" / "inner.txt")
    (b / "fromb.txt").write_text("made on b\n")
    dressed(b / "fromb.txt", "g:nogroup:rw", "purple")
    with open(b / "huge.bin", "r+b") as f:
        f.write(b"edited on b")
    sh("setfacl", "-m", "u:nobody:rw", b / "huge.bin")
    tether(["sync", "two"], tether_ssh_env, check_rc=0)
    wait_meta(b, a, links=False, deadline=5, bisync=True)


def test_a_metadata_change_just_before_a_rename_is_not_lost_with_the_move(tmp_path: Path) -> None:
    """The worker took `write a` (a setfattr) before the rename happened, and runs it after:
    a is gone, so the write finds nothing; the move then carries the target's older a. The
    batches are replayed here in that order, on a real agent and real files."""
    from tether.apply import Applier
    from tether.config import LiveOptions
    from tether.endpoints import Local
    from tether.mirror import Mirror, MirrorSpec
    from tether.ssh import SshOptions
    from tether.state import KnownTargets
    from tether.transport.rsync import Rsync
    from tether.watch import Change

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_text("same bytes\n")
    dressed(src / "a")
    spec = MirrorSpec(source=Local(str(src)), targets=(Local(str(dst)),), preserve=frozenset(ALL))
    ssh = SshOptions(str(tmp_path))
    applier = Applier(Local(str(dst)), spec, LiveOptions(), Mirror(Rsync(ssh), KnownTargets(tmp_path)), ssh)
    try:
        applier.apply([Change("write", "a")])
        assert meta_diff(src, dst) == []
        sh("setfattr", "-n", "user.color", "-v", "red", src / "a")
        sh("setfacl", "-m", "u:nobody:r", src / "a")
        os.chmod(src / "a", 0o600)
        os.rename(src / "a", src / "b")
        applier.apply([Change("write", "a")])  # taken before the rename, run after it
        applier.apply([Change("move", "b", old="a")])
        assert meta_diff(src, dst) == []
    finally:
        applier.close()
