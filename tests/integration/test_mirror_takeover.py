"""Taking over a target another tool kept in sync (lsyncd, a cron'd rsync): a file tether itself
put there during its first pass is tether's, a file the source never had is not."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.rig.compare import assert_same_tree
from tests.rig.live import running, wait_for, write_job
from tests.rig.run import tether
from tests.rig.sshd import SshServer
from tests.rig.trees import make_tree
from tether.apply import Applier
from tether.config import LiveOptions
from tether.dirs import Dirs
from tether.endpoints import Local, Ssh
from tether.errors import TetherError
from tether.mirror import Mirror, MirrorSpec
from tether.ssh import SshOptions
from tether.state import KnownTargets
from tether.transport.rsync import Rsync, RsyncResult


class SourceChangesDuringFirstPass(Mirror):
    """A real Mirror; the source loses a file right after the pass that only adds what is missing
    (as when a user deletes a file they had just made while the job starts)."""

    def __init__(self, *args: object, gone: Path, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.gone = gone

    def _run(self, argv: list[str], target: object, input: bytes | None = None, clock: object = None) -> RsyncResult:
        res = super()._run(argv, target, input, clock)  # type: ignore[arg-type]
        if "--ignore-existing" in argv and self.gone.exists():
            self.gone.unlink()
        return res


def _setup(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> tuple[Path, Path, MirrorSpec, Ssh, Rsync, KnownTargets]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 60, seed=4, hostile=False)
    subprocess.run(
        ["rsync", "-a", "-e", f"ssh -F {sshd.ssh_config}", "--", f"{src}/", f"{sshd.alias}:{dst}/"], check=True
    )  # made identical by another tool
    dirs = Dirs(tether_home / "config", tether_home / "state", tether_home / "run")
    ssh = SshOptions(tempfile.mkdtemp(prefix="ts-", dir="/tmp"), str(sshd.ssh_config))  # a socket path fits 108 bytes
    target = Ssh(sshd.alias, str(dst))
    spec = MirrorSpec(source=Local(str(src)), targets=(target,))
    return src, dst, spec, target, Rsync(ssh), KnownTargets(dirs.state)


def test_a_file_tether_put_there_in_its_first_pass_is_tethers(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    brief = src / "made-and-deleted-during-the-first-pass.txt"
    brief.write_text("here for a moment\n")
    mirror = SourceChangesDuringFirstPass(rsync, known, gone=brief)
    out = mirror.sync_target(spec, target, dry_run=False, force=False)
    assert out.ok and not out.refused, out.errors
    assert not (dst / brief.name).exists()
    assert known.has(target.key(), str(spec.source))  # tether's from then on


def test_a_file_the_source_never_had_is_still_refused_and_listed(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    (dst / "only-on-the-target.txt").write_text("not tether's\n")
    brief = src / "made-and-deleted-during-the-first-pass.txt"
    brief.write_text("here for a moment\n")
    out = SourceChangesDuringFirstPass(rsync, known, gone=brief).sync_target(spec, target, dry_run=False, force=False)
    assert out.refused and any("only-on-the-target.txt" in e for e in out.errors), out.errors
    assert (dst / "only-on-the-target.txt").exists()
    assert not known.has(target.key(), str(spec.source))


def test_a_target_another_rsync_made_identical_is_taken_over_by_the_first_pass_alone(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    """A continuous mirror (its watcher carries what changes meanwhile): the add-only pass
    showed that each file there is the source's, attributes included, so it was the mirror."""
    src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    runs: list[str] = []
    mirror = Mirror(rsync, known, verbose=runs.append)
    out = mirror.sync_target(spec, target, dry_run=False, force=False, watched=True)
    assert out.ok and not out.refused, out.errors
    assert len(runs) == 1, runs
    assert known.has(target.key(), str(spec.source))
    assert_same_tree(src, dst)


def test_attributes_changed_on_such_a_target_take_one_ordinary_pass_more(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    """No closer look (a dry run, then the pass) when only attributes differ: the ordinary
    pass after the add-only one sets them (here a mode changed on the target by hand)."""
    src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    some = sorted(p for p in dst.rglob("*") if p.is_file() and not p.is_symlink())[0]
    some.chmod(0o600)
    runs: list[str] = []
    out = Mirror(rsync, known, verbose=runs.append).sync_target(spec, target, dry_run=False, force=False)
    assert out.ok and not out.refused, out.errors
    assert len(runs) == 2 and not any("--dry-run" in r for r in runs), runs
    assert known.has(target.key(), str(spec.source))
    assert_same_tree(src, dst)


def test_a_file_that_differs_is_still_refused_and_listed(tmp_path: Path, sshd: SshServer, tether_home: Path) -> None:
    """Nothing extra on the target, but one file is not the source's: the add-only pass
    proves nothing, the closer look refuses."""
    _src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    theirs = sorted(p for p in dst.rglob("*") if p.is_file() and not p.is_symlink())[0]
    rel = str(theirs.relative_to(dst))
    theirs.write_bytes(b"y" * theirs.stat().st_size)  # same size, other bytes and mtime
    os.utime(theirs, (1_000_000_000, 1_000_000_000))
    out = Mirror(rsync, known).sync_target(spec, target, dry_run=False, force=False)
    assert out.refused and f"would overwrite: {rel}" in out.errors, out.errors
    assert theirs.read_bytes() == b"y" * theirs.stat().st_size
    assert not known.has(target.key(), str(spec.source))


def _live_first_pass(
    rsync: Rsync, known: KnownTargets, spec: MirrorSpec, target: Ssh
) -> tuple[list[str], TetherError | None]:
    """A continuous mirror's first full pass to the target (its agent asked whether the target is
    empty): the rsync runs it made, and what it raised."""
    runs: list[str] = []
    applier = Applier(target, spec, LiveOptions(), Mirror(rsync, known, verbose=runs.append), rsync.ssh)
    try:
        applier.full_pass()
    except TetherError as e:
        return runs, e
    finally:
        applier.close()
    return runs, None


def test_a_continuous_mirror_takes_over_a_matching_ssh_target_by_one_look(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    """No add-only pass with its line per file (1.7x a bare rsync at a million files): the
    agent says the target holds something, and a dry run that lists nothing is the pass."""
    src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    runs, failed = _live_first_pass(rsync, known, spec, target)
    assert failed is None and len(runs) == 1 and "--dry-run" in runs[0], (failed, runs)
    assert known.has(target.key(), str(spec.source))
    assert_same_tree(src, dst)


def test_a_continuous_mirror_fills_an_empty_ssh_target_by_one_plain_pass(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    src, _dst, spec, _target, rsync, known = _setup(tmp_path, sshd, tether_home)
    fresh = tmp_path / "fresh"
    target = Ssh(sshd.alias, str(fresh))
    spec = MirrorSpec(source=spec.source, targets=(target,))
    runs, failed = _live_first_pass(rsync, known, spec, target)
    assert failed is None and len(runs) == 1 and "--dry-run" not in runs[0], (failed, runs)
    assert not any("--ignore-existing" in r for r in runs), runs
    assert known.has(target.key(), str(spec.source))
    assert_same_tree(src, fresh)


def test_a_continuous_mirror_refuses_a_strangers_ssh_target_before_writing_to_it(
    tmp_path: Path, sshd: SshServer, tether_home: Path
) -> None:
    """Refused as the one-shot pass refuses, naming the file; and nothing there changed, not
    even a file added (the look comes before any write)."""
    src, dst, spec, target, rsync, known = _setup(tmp_path, sshd, tether_home)
    (dst / "only-on-the-target.txt").write_text("not tether's\n")
    (src / "new in the source.txt").write_text("new\n")
    runs, failed = _live_first_pass(rsync, known, spec, target)
    assert failed is not None and "only-on-the-target.txt" in str(failed), (failed, runs)
    assert (dst / "only-on-the-target.txt").read_text() == "not tether's\n"
    assert not (dst / "new in the source.txt").exists()
    assert not known.has(target.key(), str(spec.source))


def test_the_add_only_pass_tells_how_each_existing_file_compares_and_what_it_did_not_delete(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in ("same.txt", "changed.txt", "new.txt"):
        (src / name).write_text(f"{name}\n")
    subprocess.run(["rsync", "-a", "--", f"{src}/", f"{dst}/"], check=True)
    (dst / "new.txt").unlink()
    (dst / "changed.txt").write_text("CHANGED.TXT\n")
    os.utime(dst / "changed.txt", (1_000_000_000, 1_000_000_000))
    (dst / "extra.txt").write_text("theirs\n")
    rsync = Rsync(SshOptions(str(tmp_path)))
    spec = MirrorSpec(source=Local(str(src)), targets=(Local(str(dst)),))
    argv = Mirror(rsync, KnownTargets(tmp_path / "state"))._argv(spec, Local(str(dst)), first_contact=True)
    res = rsync.run(argv)
    assert sorted(res.kept) == [("changed.txt", "file change"), ("same.txt", "uptodate")]
    assert res.deletes_held == 1 and (dst / "extra.txt").exists()
    assert (dst / "new.txt").exists() and (dst / "changed.txt").read_text() == "CHANGED.TXT\n"


def _rsync_runs(said: str) -> list[str]:
    return [ln for ln in said.splitlines() if ln.startswith("+ rsync ")]


def test_a_local_copy_another_tool_made_is_taken_over_by_one_look(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """A target that already holds the source (cp -a, lsyncd, a cron'd rsync): the look that
    shows nothing to send, set or delete is the whole first pass (a million files: one rsync
    pass, not two), and the target is tether's from then on, so a deletion goes through."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 40, seed=9, hostile=False)
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)
    first = tether(["mirror", "-v", src, dst], tether_env, check_rc=0)
    runs = _rsync_runs(first.stderr)
    assert len(runs) == 1 and "--dry-run" in runs[0], first.stderr
    gone = next(p for p in sorted(src.rglob("*")) if p.is_file())
    gone.unlink()
    again = tether(["mirror", "-v", src, dst], tether_env, check_rc=0)
    assert [r for r in _rsync_runs(again.stderr) if "--dry-run" in r] == [], "the target is tether's now"
    assert_same_tree(src, dst)


def test_a_local_copy_that_differs_is_looked_at_then_mirrored(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """The other way: one file newer in the source, so the look shows a change (not a loss) and
    the pass that follows sends it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 40, seed=10, hostile=False)
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)
    (src / "added later.txt").write_text("new\n")
    out = tether(["mirror", "-v", src, dst], tether_env, check_rc=0)
    runs = _rsync_runs(out.stderr)
    assert len(runs) == 2 and "--dry-run" in runs[0] and "--dry-run" not in runs[1], out.stderr
    assert (dst / "added later.txt").read_text() == "new\n"
    assert_same_tree(src, dst)


def test_a_running_job_refused_by_a_strangers_target_logs_the_way_out_once(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """The refusal is retried with backoff (the target may be cleaned up meanwhile), each retry
    logged; the hint (--force, --no-delete) comes with the first refusal, not with every retry."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a.txt").write_text("a\n")
    (dst / "only-on-the-target.txt").write_text("not tether's\n")
    write_job(tether_env, "stranger", src, [str(dst)])
    log = Path(tether_env["TETHER_HOME"]) / "state" / "logs" / "stranger.log"

    def refusals() -> int:
        return log.read_text().count("only-on-the-target.txt") if log.exists() else 0

    with running(tether_env, "stranger"):
        wait_for(lambda: refusals() >= 2, what="the refusal, retried")
    text = log.read_text()
    assert text.count("hint: ") == 1 and "--force" in text and "--no-delete" in text, text
    assert (dst / "only-on-the-target.txt").read_text() == "not tether's\n"
