"""Taking over a target another tool kept in sync (lsyncd, a cron'd rsync): a file tether itself
put there during its first pass is tether's, a file the source never had is not."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.rig.sshd import SshServer
from tests.rig.trees import make_tree
from tether.dirs import Dirs
from tether.endpoints import Local, Ssh
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
    assert known.has(target.key())  # tether's from then on


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
    assert not known.has(target.key())
