"""One-shot mirror against real rsync, a real sshd and hostile trees."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig.bisync_oracle import rsync_temps
from tests.rig.bisync_pair import slow_rsync
from tests.rig.compare import assert_same_tree, diff_trees
from tests.rig.kept import kept
from tests.rig.live import wait_for
from tests.rig.run import find_named, tether, tether_json
from tests.rig.sshd import SshServer
from tests.rig.trees import HOSTILE_NAMES, make_tree


def test_hostile_20k_tree_mirrors_exactly_to_local_and_ssh(tmp_path: Path, sshd: SshServer, tether_ssh_env) -> None:
    src, local, remote = tmp_path / "src", tmp_path / "local", tmp_path / "remote"
    info = make_tree(src, 20_000, seed=3, total_bytes=40_000_000)
    assert info.files > 20_000 and info.symlinks > 0
    ssh_target = f"{sshd.alias}:{remote}"

    doc = tether_json(["mirror", src, local, ssh_target], tether_ssh_env, check_rc=0)
    assert [t["ok"] for t in doc["targets"]] == [True, True]
    assert all(t["files"] == info.files for t in doc["targets"]), doc
    assert_same_tree(src, local, check_root_mtime=True)
    assert_same_tree(src, remote, check_root_mtime=True)

    again = tether_json(["mirror", src, local, ssh_target], tether_ssh_env, check_rc=0)
    assert [(t["files"], t["deleted"], t["bytes"]) for t in again["targets"]] == [(0, 0, 0)] * 2

    for name in HOSTILE_NAMES:  # every hostile name arrived on both targets
        assert os.path.lexists(os.path.join(os.fsencode(remote), name)), name
    for place in (tmp_path, Path.cwd(), Path.home()):
        assert find_named(place, b"pwned") == [], place


def test_no_delete_keeps_extra_files_and_delete_removes_them(tmp_path: Path, sshd: SshServer, tether_ssh_env) -> None:
    src, local, remote = tmp_path / "src", tmp_path / "local", tmp_path / "remote"
    make_tree(src, 200, seed=1, hostile=False)
    targets: list[str | Path] = [local, f"{sshd.alias}:{remote}"]
    tether(["mirror", src, *targets], tether_ssh_env, check_rc=0)
    for t in (local, remote):
        (t / "extra file").write_text("only on the target")

    tether(["mirror", "--no-delete", src, *targets], tether_ssh_env, check_rc=0)
    assert (local / "extra file").exists() and (remote / "extra file").exists()

    doc = tether_json(["mirror", src, *targets], tether_ssh_env, check_rc=0)
    assert [t["deleted"] for t in doc["targets"]] == [1, 1]
    assert_same_tree(src, local)
    assert_same_tree(src, remote)


@pytest.mark.parametrize("over_ssh", [False, True], ids=["local", "ssh"])
def test_foreign_target_is_never_wiped_silently(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, over_ssh: bool
) -> None:
    src, dst = tmp_path / "src", tmp_path / "home-dir"
    make_tree(src, 50, seed=2, hostile=False)
    make_tree(dst, 30, seed=9, hostile=False)
    (dst / "precious.txt").write_text("keep me")
    same_name = sorted(p for p in src.rglob("*.dat") if p.is_file())[0]
    clash = dst / same_name.relative_to(src)
    clash.parent.mkdir(parents=True, exist_ok=True)
    clash.write_bytes(b"x" * same_name.stat().st_size)  # same size, other bytes and mtime
    before = tmp_path / "before"
    shutil.copytree(dst, before, symlinks=True)
    target = f"{sshd.alias}:{dst}" if over_ssh else str(dst)

    proc = tether(["mirror", src, target], tether_ssh_env, check_rc=1)
    assert "refused: tether never wrote this target" in proc.stderr
    assert "would delete: precious.txt" in proc.stderr
    assert f"would overwrite: {same_name.relative_to(src)}" in proc.stderr
    assert "--force" in proc.stderr
    if over_ssh:  # one pass added what was missing; nothing that was there is gone or different
        assert "nothing there was deleted or overwritten" in proc.stderr
        assert_kept(before, dst)
    else:  # a local target is checked before anything is written
        assert "nothing was changed" in proc.stderr
        assert diff_trees(before, dst) == []

    tether(["mirror", "--force", src, target], tether_ssh_env, check_rc=0)
    assert_same_tree(src, dst)
    # once written by tether, the target is known: no --force needed any more
    (src / "new.txt").write_text("x")
    (dst / "stray.txt").write_text("y")
    tether(["mirror", src, target], tether_ssh_env, check_rc=0)
    assert_same_tree(src, dst)


def test_a_target_kept_for_another_source_is_guarded_again(tmp_path: Path, tether_env) -> None:
    """Found by trying: a job edited to push another folder to its target wiped what the first
    source had put there, as if it were the new source's to delete."""
    first, second, dst = tmp_path / "first", tmp_path / "second", tmp_path / "dst"
    make_tree(first, 20, seed=4, hostile=False)
    make_tree(second, 5, seed=5, hostile=False)
    tether(["mirror", first, dst], tether_env, check_rc=0)
    before = tmp_path / "before"
    shutil.copytree(dst, before, symlinks=True)
    proc = tether(["mirror", second, dst], tether_env, check_rc=1)
    assert f"refused: tether kept this target for another source, {first}, and mirroring would delete" in proc.stderr
    assert diff_trees(before, dst) == []  # nothing changed
    tether(["mirror", "--force", second, dst], tether_env, check_rc=0)
    assert_same_tree(second, dst)
    tether(["mirror", second, dst], tether_env, check_rc=0)  # the second source's now


def assert_kept(before: Path, after: Path) -> None:
    """Every file and symlink of `before` is in `after`, same bytes or same link target."""
    for dirpath, _dirs, files in os.walk(before):
        for name in files:
            old = Path(dirpath) / name
            new = after / old.relative_to(before)
            if old.is_symlink():
                assert os.readlink(new) == os.readlink(old), new
            else:
                assert new.read_bytes() == old.read_bytes(), new


def test_a_target_tether_never_wrote_but_that_holds_only_what_the_source_has_is_fine(
    tmp_path: Path, tether_env
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 30, seed=4, hostile=False)
    shutil.copytree(src, dst, symlinks=True)
    tether(["mirror", src, dst], tether_env, check_rc=0)
    assert_same_tree(src, dst)


def test_dry_run_changes_nothing_and_lists_the_plan(tmp_path: Path, sshd: SshServer, tether_ssh_env) -> None:
    src, local, remote = tmp_path / "src", tmp_path / "local", tmp_path / "remote"
    make_tree(src, 100, seed=5)
    targets: list[str | Path] = [local, f"{sshd.alias}:{remote}"]
    tether(["mirror", src, *targets], tether_ssh_env, check_rc=0)
    (src / "added.txt").write_text("new")
    (local / "stale.txt").write_text("old")
    (remote / "stale.txt").write_text("old")
    snap = tmp_path / "snap"
    for name, tree in (("src", src), ("local", local), ("remote", remote)):
        shutil.copytree(tree, snap / name, symlinks=True)

    proc = tether(["mirror", "--dry-run", src, *targets], tether_ssh_env, check_rc=0)
    assert proc.stdout.count("added.txt") == 2 and proc.stdout.count("*deleting   stale.txt") == 2
    assert "nothing changed" in proc.stdout
    for name, tree in (("src", src), ("local", local), ("remote", remote)):
        assert diff_trees(snap / name, tree, check_root_mtime=True) == [], name


def test_exclude_and_include_agree_with_the_python_matcher(tmp_path: Path, tether_env) -> None:
    """The same rules drive rsync and the scanner/watcher: compare their verdicts on one tree."""
    from tether.filters import Filter

    src, dst = tmp_path / "src", tmp_path / "dst"
    names = [
        "a.log", "keep.log", "b.txt", "build/x.o", "build/keep.o", "sub/build/y", "docs/a.md",
        "docs/deep/b.md", "x/docs/c.md", "a/b", "a/q/r/b", "node_modules/m/i.js", "cache.tmp",
        "-rf.log", "sp ace/f.txt",
    ]  # fmt: skip
    for n in names:
        p = src / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)
    (tmp_path / "ignore").write_text("# comment\nnode_modules/\n*.tmp\n")
    rules = ["--exclude", "*.log", "--include", "keep.log", "--exclude", "build/", "--exclude",
             "docs/*.md", "--exclude", "a/**/b", "--exclude-from", str(tmp_path / "ignore")]  # fmt: skip
    tether(["mirror", *rules, src, dst], tether_env, check_rc=0)

    flt = Filter.build(
        exclude_from=[tmp_path / "ignore"],
        ordered=[
            (False, "*.log"),
            (True, "keep.log"),
            (False, "build/"),
            (False, "docs/*.md"),
            (False, "a/**/b"),
        ],
    )
    expected = sorted(n for n in names if not flt.path_excluded(n, False))
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert got == expected
    assert "keep.log" in got and "docs/deep/b.md" in got and "a.log" not in got


def test_targets_are_independent_and_each_failure_is_one_clear_line(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    src, ok1, ok2 = tmp_path / "src", tmp_path / "ok1", tmp_path / "ok2"
    make_tree(src, 100, seed=6, hostile=False)
    proc = tether(["mirror", src, ok1, "tether-down:/x", f"{sshd.alias}:{ok2}"], tether_ssh_env, check_rc=1)
    assert_same_tree(src, ok1)
    assert_same_tree(src, ok2)
    fails = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAIL")]
    assert fails == ["FAIL  tether-down:/x: tether-down: connection refused (no ssh server listening)"]


def test_progress_on_a_terminal_and_verbose_shows_rsync_commands(tmp_path: Path, tether_env) -> None:
    import pexpect

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 50, seed=12, total_bytes=6_000_000, hostile=False)
    # a bandwidth limit keeps the transfer going long enough to show progress
    child = pexpect.spawn(
        sys.executable, ["-m", "tether", "mirror", "--bwlimit", "3M", str(src), str(dst)],
        env=tether_env, timeout=60, encoding="utf-8",
    )  # fmt: skip
    child.expect(r"\d+% ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert_same_tree(src, dst)

    (src / "new.txt").write_text("n")
    proc = tether(["mirror", "-v", "--bwlimit", "500", src, dst], tether_env, check_rc=0)
    assert "+ rsync --secluded-args" in proc.stderr and "--bwlimit=500" in proc.stderr
    assert "%" not in proc.stderr  # no progress line when not on a terminal


def test_ssh_connections_are_shared_through_a_socket_in_the_runtime_dir(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    src = tmp_path / "src"
    make_tree(src, 10, seed=13, hostile=False)
    env = dict(tether_ssh_env, TETHER_HOME="/tmp/tth-" + tmp_path.name[-8:])  # short: socket under runtime dir
    sockets: list[Path] = []
    try:
        tether(["mirror", src, f"{sshd.alias}:{tmp_path / 'dst'}"], env, check_rc=0)
        sockets = list((Path(env["TETHER_HOME"]) / "run" / "ssh").iterdir())
        assert len(sockets) == 1 and sockets[0].is_socket()
    finally:
        for sock in sockets:
            subprocess.run(["ssh", "-F", str(sshd.ssh_config), "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                           capture_output=True)  # fmt: skip
        shutil.rmtree(env["TETHER_HOME"], ignore_errors=True)


def test_an_empty_source_never_empties_a_target(tmp_path: Path, tether_env) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 20, seed=14, hostile=False)
    tether(["mirror", src, dst], tether_env, check_rc=0)
    shutil.rmtree(src)
    src.mkdir()  # what an unmounted disk leaves behind: an empty mount point
    proc = tether(["mirror", src, dst], tether_env, check_rc=1)
    assert "the source is empty" in proc.stderr and "--force" in proc.stderr
    assert any(dst.iterdir())
    tether(["mirror", "--force", src, dst], tether_env, check_rc=0)
    assert not any(dst.iterdir())


def _pin_mtime(p: Path, ns: int) -> None:
    os.utime(p, ns=(ns, ns))


@pytest.mark.parametrize("over_ssh", [False, True], ids=["local", "ssh"])
def test_a_target_file_differing_only_below_the_second_is_sent_again(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, over_ssh: bool
) -> None:
    """rsync's quick check compares whole seconds: same size, same second, other bytes and
    nanoseconds on the target must still count as different (git's racy-clean problem)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    second = 1_700_000_000 * 10**9
    (src / "f.bin").write_bytes(b"new" * 1000)
    _pin_mtime(src / "f.bin", second + 700_000_000)
    target = f"{sshd.alias}:{dst}" if over_ssh else str(dst)
    tether(["mirror", src, target], tether_ssh_env, check_rc=0)
    assert_same_tree(src, dst)
    (dst / "f.bin").write_bytes(b"old" * 1000)  # what an earlier save within that second left
    _pin_mtime(dst / "f.bin", second + 200_000_000)

    doc = tether_json(["mirror", src, target], tether_ssh_env, check_rc=0)
    assert doc["targets"][0]["files"] == 1
    assert_same_tree(src, dst)
    again = tether_json(["mirror", src, target], tether_ssh_env, check_rc=0)
    assert again["targets"][0]["files"] == 0  # equal nanoseconds: nothing to send, nothing read


@pytest.mark.parametrize("over_ssh", [False, True], ids=["local", "ssh"])
def test_trash_keeps_every_version_that_one_shot_passes_replace_the_same_day(
    tmp_path: Path, sshd: SshServer, tether_ssh_env, over_ssh: bool
) -> None:
    from tests.rig.live import write_job

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    target = f"{sshd.alias}:{dst}" if over_ssh else str(dst)
    write_job(tether_ssh_env, "t", src, [target], delete="trash")
    for n in range(1, 4):
        (src / "report.txt").write_text(f"version {n}")
        (src / "sub").mkdir(exist_ok=True)
        (src / "sub" / "old.txt").write_text(f"old {n}")
        tether(["sync", "t"], tether_ssh_env, check_rc=0)
        if n < 3:
            (src / "sub" / "old.txt").unlink()  # deleted by the next pass
    assert_same_tree(src, dst)
    assert [p.read_text() for p in kept(dst, "report.txt", "replaced")] == ["version 1", "version 2"]
    assert [p.read_text() for p in kept(dst, "sub/old.txt", "replaced")] == ["old 1", "old 2"]
    (src / "sub" / "old.txt").unlink()
    tether(["sync", "t"], tether_ssh_env, check_rc=0)
    assert [p.read_text() for p in kept(dst, "sub/old.txt", "deleted")] == ["old 3"]
    assert len(kept(dst)) == 5
    assert not [p for p in (dst / ".tether" / "incoming").rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_first_pass_killed_halfway_leaves_a_target_the_next_run_finishes(
    tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str], kind: str
) -> None:
    """An empty target is tether's from its first file: a first pass killed mid-copy must not
    leave a target the next run refuses as a stranger's (found by the mirror stress test: a kill
    during a job's first full pass, on a loaded machine, and the job refused the target forever)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a.txt").write_text("small, first")
    (src / "z.bin").write_bytes(os.urandom(4 << 20))  # at 256 KiB/s: long enough to be caught
    jobs = Path(tether_ssh_env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    target = f"{sshd.alias}:{dst}" if kind == "ssh" else str(dst)
    (jobs / "first.toml").write_text(f'source = "{src}"\ntargets = ["{target}"]\n')
    env = {**tether_ssh_env, **slow_rsync(tmp_path / "slow-bin", 256)}
    proc = subprocess.Popen([sys.executable, "-m", "tether", "sync", "first"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: bool(rsync_temps(dst, everywhere=True)) or proc.poll() is not None, 60, "the copy")
        assert proc.poll() is None, "the pass ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (dst / "z.bin").exists()  # cut short: the big file never took its name
    tether(["sync", "first"], tether_ssh_env, check_rc=0)
    assert (dst / "z.bin").read_bytes() == (src / "z.bin").read_bytes()


def test_a_trash_pass_that_replaces_and_deletes_at_once_never_fails(tmp_path: Path, tether_env) -> None:
    """rsync's generator (deleting) and receiver (replacing) both make the backup dir's folders
    when both keep a version during the transfer, and one lost the race in 1 of 3 passes to a
    target without .tether/incoming ("make_backup(d/b.txt) failed: File exists", exit 23 or 11).
    40 such passes to 4 targets that replace a file at the top and in a folder and delete one
    beside it: none may fail."""
    from tests.rig.live import write_job

    src = tmp_path / "src"
    dsts = [tmp_path / f"dst{i}" for i in range(4)]
    (src / "d").mkdir(parents=True)
    write_job(tether_env, "t", src, [str(d) for d in dsts], delete="trash")
    for n in range(40):
        for rel in ("top.txt", "d/a.txt", "d/b.txt"):
            (src / rel).write_text(f"{rel} {n}")
        tether(["sync", "t"], tether_env, check_rc=0)
        for rel in ("top.txt", "d/a.txt"):
            (src / rel).write_text(f"{rel} {n}, longer")  # replaced and ...
        (src / "d" / "b.txt").unlink()  # ... deleted, in one pass
        for dst in dsts:  # as on a target's first such pass: the folders the two race to make
            with contextlib.suppress(FileNotFoundError):  # start higher up
                (dst / ".tether" / "incoming").rmdir()
        tether(["sync", "t"], tether_env, check_rc=0)
    assert [len(kept(dst, "d/b.txt", "deleted")) for dst in dsts] == [40] * 4
