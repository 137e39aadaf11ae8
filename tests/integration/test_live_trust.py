"""The continuous mirror where it used to trust too much: same-second rewrites, guessed moves,
a source root swapped in, overwritten versions in trash mode. Real jobs, real inotify, real sshd."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.rig.compare import assert_same_tree
from tests.rig.kept import kept, kept_bytes
from tests.rig.live import running, status, wait_for, wait_same, write_job
from tests.rig.run import tether
from tests.rig.sshd import SshServer
from tether.apply import Applier
from tether.coalesce import Change, coalesce
from tether.config import LiveOptions
from tether.endpoints import Local
from tether.mirror import Mirror, MirrorSpec
from tether.ssh import SshOptions
from tether.state import KnownTargets
from tether.transport.rsync import Rsync

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


def _fill(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _settled(env: dict[str, str], name: str) -> bool:
    st = status(env, name)
    return st["state"] == "running" and all(t["state"] == "idle" and t["pending"] == 0 for t in st["targets"])


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_source_root_swapped_in_by_two_renames_is_followed(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, kind: str
) -> None:
    site, dst = tmp_path / "site", tmp_path / "dst"
    _fill(site, {"index.html": "old", "only-old.txt": "old", "css/a.css": "old", "shared.txt": "old"})
    write_job(tether_ssh_env, "swap", site, [_target(kind, dst, sshd)], interval=0)
    with running(tether_ssh_env, "swap"):
        wait_same(site, dst)
        staged = _fill(tmp_path / "site.new", {"index.html": "new!", "css/a.css": "new", "shared.txt": "new"})
        os.rename(site, tmp_path / "site.old")  # the deploy: mv site site.old && mv site.new site
        os.rename(staged, site)
        wait_same(site, dst)
        # the old tree lives on elsewhere: what happens there is none of the target's business
        (tmp_path / "site.old" / "shared.txt").unlink()
        (tmp_path / "site.old" / "index.html").write_text("edited in the old tree")
        (site / "later.txt").write_text("written in the new tree")
        (site / "css" / "a.css").write_text("edited in the new tree")
        wait_same(site, dst)
        wait_for(lambda: _settled(tether_ssh_env, "swap"), 30, "the job to be idle")
        assert "source" in tether(["log", "swap"], tether_ssh_env, check_rc=0).stdout


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_swapped_in_tree_whose_file_has_the_target_s_size_and_mtime_is_sent(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, kind: str
) -> None:
    """The new tree's `a` has other bytes but the size and the nanosecond mtime of the target's
    copy (built by cp -p from the old tree, then restored from a backup, say). The queued events
    describe the old tree and are dropped; the full pass that stands in for them compares
    content (found by the mirror stress test: "content differs: a" after a swap)."""
    site, dst = tmp_path / "site", tmp_path / "dst"
    site.mkdir()
    old = 1_600_000_000 * 10**9 + 987_654_321
    _rewrite(site / "a", b"A" * 64, old)
    write_job(tether_ssh_env, "swap2", site, [_target(kind, dst, sshd)], interval=0)
    with running(tether_ssh_env, "swap2"):
        wait_same(site, dst)
        staged = tmp_path / "site.new"
        staged.mkdir()
        _rewrite(staged / "a", b"B" * 64, old)
        os.rename(site, tmp_path / "site.old")
        os.rename(staged, site)
        wait_same(site, dst)
    assert (dst / "a").read_bytes() == b"B" * 64


def test_a_source_root_that_is_gone_for_a_while_is_waited_for(tmp_path: Path, tether_env) -> None:
    site, dst = tmp_path / "site", tmp_path / "dst"
    _fill(site, {"index.html": "old", "only-old.txt": "old"})
    write_job(tether_env, "gap", site, [str(dst)], interval=0)
    with running(tether_env, "gap"):
        wait_same(site, dst)
        os.rename(site, tmp_path / "site.old")
        wait_for(lambda: status(tether_env, "gap")["state"] == "waiting", 30, "the job to wait for its source")
        shown = tether(["status", "gap"], tether_env, check_rc=0).stdout
        assert "waiting" in shown and str(site) in shown, shown
        (tmp_path / "site.old" / "index.html").write_text("edited in the old tree")
        _fill(tmp_path / "site.new", {"index.html": "new", "extra/x.txt": "new"}).rename(site)
        wait_same(site, dst)
        (site / "extra" / "y.txt").write_text("after the wait")
        wait_same(site, dst)
        wait_for(lambda: _settled(tether_env, "gap"), 30, "the job to be idle")


def test_a_source_that_is_a_symlink_is_watched_and_followed_when_it_is_pointed_elsewhere(
    tmp_path: Path, tether_env
) -> None:
    """The deploy pattern with a link: current -> releases/1, then ln -sfn releases/2 current."""
    rel1 = _fill(tmp_path / "releases" / "1", {"index.html": "one", "only-1.txt": "1"})
    rel2 = _fill(tmp_path / "releases" / "2", {"index.html": "two"})
    current, dst = tmp_path / "current", tmp_path / "dst"
    os.symlink("releases/1", current)
    write_job(tether_env, "link", current, [str(dst)], interval=0)
    with running(tether_env, "link"):
        wait_same(rel1, dst)
        (rel1 / "edited.txt").write_text("edited in release 1")  # seen through the link
        wait_same(rel1, dst)
        os.symlink("releases/2", tmp_path / "current.new")
        os.rename(tmp_path / "current.new", current)
        wait_same(rel2, dst)
        (rel1 / "index.html").unlink()  # the old release is no source any more
        (rel2 / "later.txt").write_text("edited in release 2")
        wait_same(rel2, dst)
        wait_for(lambda: _settled(tether_env, "link"), 30, "the job to be idle")


def _trashed(dst: Path) -> list[bytes]:
    """The bytes of every version kept on the target."""
    return sorted(kept_bytes(dst))


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_trash_mode_keeps_every_overwritten_version(tmp_path: Path, sshd: SshServer, tether_ssh_env, kind: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"notes.txt": "note 1", "doc/a.txt": "a 1", "doc/b.txt": "b 1"})
    (src / "big.bin").write_bytes(b"1" * MIB)
    write_job(tether_ssh_env, "tr", src, [_target(kind, dst, sshd)], interval=0, delete="trash")
    with running(tether_ssh_env, "tr"):
        wait_same(src, dst)
        (src / "notes.txt").write_text("note 2")  # a small file: the agent's put
        wait_same(src, dst)
        (src / "notes.txt.swp").write_text("note 3")  # an editor's save: write aside, rename over
        (src / "notes.txt.swp").rename(src / "notes.txt")
        wait_same(src, dst)
        (src / "doc" / "a.txt").rename(src / "doc" / "b.txt")  # a move onto an existing name
        wait_same(src, dst)
        for n in (2, 3):  # a big file, by rsync, twice the same day
            (src / "big.bin").write_bytes(str(n).encode() * MIB)
            wait_same(src, dst)
        (src / "notes.txt").unlink()
        wait_same(src, dst)
    got = _trashed(dst)
    for version in (b"note 1", b"note 2", b"note 3", b"b 1", b"1" * MIB, b"2" * MIB):
        assert version in got, (version[:10], [k[:10] for k in got])
    # each a version of its own path, oldest first (a busy machine may show the target one more
    # state, a save half-written, and that is kept too); the last one went by a deletion
    notes = kept_bytes(dst, "notes.txt")
    assert notes[0] == b"note 1" and len(notes) >= 3
    assert kept_bytes(dst, "doc/b.txt", "replaced") == [b"b 1"]
    assert kept_bytes(dst, "big.bin", "replaced")[:2] == [b"1" * MIB, b"2" * MIB]
    assert kept(dst, "notes.txt", "deleted")[-1].read_bytes() == notes[-1]


def test_without_trash_an_overwrite_keeps_nothing(tmp_path: Path, tether_env) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"notes.txt": "note 1", "a.txt": "a"})
    write_job(tether_env, "plain", src, [str(dst)], interval=0)
    with running(tether_env, "plain"):
        wait_same(src, dst)
        (src / "notes.txt").write_text("note 2")
        (src / "a.txt").rename(src / "notes.txt")
        wait_same(src, dst)
    assert not (dst / ".tether").exists()


def _applier(tmp_path: Path, src: Path, dst: Path, trash: bool = False) -> Applier:
    """One target's applier as the job builds it (real rsync, the agent in-process)."""
    rsync = Rsync(SshOptions(str(tmp_path / "sockets")))
    spec = MirrorSpec(Local(str(src)), (Local(str(dst)),), trash=trash)
    return Applier(Local(str(dst)), spec, LiveOptions(), Mirror(rsync, KnownTargets(tmp_path / "state")), rsync.ssh)


def test_a_move_replayed_after_a_late_write_does_not_carry_the_newer_entry(tmp_path: Path) -> None:
    """Writes copy the source as it is when they run. A batch that runs late (or a full pass
    running while the changes happen) already put the new `app.log` and the new `site` under
    the old names; the moves that follow must not carry those to the rotated names."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"app.log": "yesterday's log", "site/index.html": "old site", "site/v1/a.css": "old"})
    applier = _applier(tmp_path, src, dst)
    try:
        applier.full_pass()
        os.rename(src / "app.log", src / "app.log.1")  # log rotation
        (src / "app.log").write_text("today's log!!!")
        os.rename(src / "site", src / "site.old")  # a deploy
        _fill(src / "site", {"index.html": "new site", "v2/b.css": "new"})
        applier.apply([Change("write", "app.log"), Change("write", "site", True)])  # late: sees the new ones
        rotated = [Change("move", "app.log.1", old="app.log"), Change("write", "app.log", created=True)]
        deployed = [Change("move", "site.old", True, old="site"), Change("write", "site", True, created=True)]
        applier.apply(coalesce(rotated + deployed))
    finally:
        applier.close()
    assert_same_tree(src, dst)


def test_a_move_re_sent_inside_a_new_folder_is_sent_once_and_its_old_version_kept(tmp_path: Path) -> None:
    """The target moved x/g to d/big2.bin, but the source has another file there by now (found
    by the stress test): the new folder's run sends it, the run for changed files not again."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"x/g": "version 7"})
    (src / "big1.bin").write_bytes(b"1" * MIB)
    applier = _applier(tmp_path, src, dst, trash=True)
    try:
        applier.full_pass()
        (src / "d").mkdir()
        os.rename(src / "x" / "g", src / "d" / "big2.bin")
        shutil.copy2(src / "big1.bin", src / "d" / "big2.bin")
        applier.apply(coalesce([Change("write", "d", True, created=True), Change("move", "d/big2.bin", old="x/g"),
                                Change("write", "d/big2.bin")]))  # fmt: skip
    finally:
        applier.close()
    assert_same_tree(src, dst)
    assert _trashed(dst) == [b"version 7"]


def test_versions_an_rsync_run_kept_but_never_filed_survive_the_next_run(tmp_path: Path) -> None:
    """A job killed between an rsync run and filing what the run kept leaves those versions in
    the trash's incoming folder: the next run must not replace them (rsync's --backup-dir would)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "big.bin").parent.mkdir()
    (src / "big.bin").write_bytes(b"1" * MIB)
    applier = _applier(tmp_path, src, dst, trash=True)
    try:
        applier.full_pass()
        (src / "big.bin").write_bytes(b"2" * MIB)
        applier.mirror.send_paths(applier.spec, applier.target, ["big.bin"], changed=True)  # killed before filing
        (src / "big.bin").write_bytes(b"3" * MIB)
        applier.apply([Change("write", "big.bin")])
    finally:
        applier.close()
    assert_same_tree(src, dst)
    assert _trashed(dst) == [b"1" * MIB, b"2" * MIB]


def test_a_job_survives_many_swaps_in_a_row(tmp_path: Path, tether_env) -> None:
    """Deploys swapping the source in back to back: each re-watch may find the path empty (between
    the two renames) and then a directory again by the time it looks why. The job must wait and
    follow, never stop with "not a directory" (the stress test caught it once in 68 swaps)."""
    site, dst = tmp_path / "site", tmp_path / "dst"
    _fill(site, {"n.txt": "0"})
    write_job(tether_env, "swaps", site, [str(dst)], interval=0)
    with running(tether_env, "swaps"):
        wait_same(site, dst)
        spare = tmp_path / "site.new"
        _fill(spare, {"n.txt": "spare"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            os.rename(site, tmp_path / "site.old")
            os.rename(spare, site)
            os.rename(tmp_path / "site.old", spare)
        (site / "n.txt").write_text("after the swaps")
        assert status(tether_env, "swaps")["state"] != "failed", tether(["log", "swaps"], tether_env).stdout
        wait_same(site, dst)
        assert status(tether_env, "swaps")["pid"], "the job is still running"


def test_a_big_file_rewritten_with_its_old_mtime_put_back_arrives(tmp_path: Path) -> None:
    """Other bytes, the same size, the old (nanosecond) mtime restored, as `cp -p` or a restore
    from an archive leave it: the watcher said it changed, so it is sent, whatever rsync's quick
    check would say (an earlier optimisation skipped it, and the mirror stress test lost the edit)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    big = src / "big.bin"
    old = 1_600_000_000 * 10**9 + 123_456_789
    _rewrite(big, b"A" * MIB, old)
    applier = _applier(tmp_path, src, dst)
    try:
        applier.full_pass()
        _rewrite(big, b"B" * MIB, old)
        applier.apply([Change("write", "big.bin")])
    finally:
        applier.close()
    assert (dst / "big.bin").read_bytes() == b"B" * MIB
    assert_same_tree(src, dst)
