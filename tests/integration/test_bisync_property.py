"""Property: random edits on both sides, crashes between any two actions, and still nothing lost.

Hypothesis drives sequences of rounds.  Each round edits both replicas (create, modify,
same-content rewrite, delete, rename, mkdir, rmdir, file<->dir type change), then runs a
pass that may be killed after k actions (the engine's crash seam), then a clean pass.
After the clean pass both replicas are equal, and every file version that existed on
either side when a pass began is still somewhere: a replica, its trash, its backups,
or a conflict copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rig.sshd import SshServer
from tether.bisync.config import BisyncJob
from tether.bisync.engine import Crash, Options
from tether.bisync.runner import one_pass
from tether.dirs import Dirs
from tether.endpoints import Local, Ssh

NAMES = ["a", "b.txt", "d/a", "d/c", "d/e/f", "e", "e/g"]
Op = tuple[Any, ...]

ops = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES)),
    st.tuples(st.just("same"), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.sampled_from([*NAMES, "d", "e", "d/e"])),
    st.tuples(st.just("rename"), st.sampled_from([*NAMES, "d"]), st.sampled_from([*NAMES, "x", "d/x"])),
    st.tuples(st.just("mkdir"), st.sampled_from([*NAMES, "m", "d/m"])),
    st.tuples(st.just("rmdir"), st.sampled_from(["d", "e", "m", "d/e", "d/m"])),
    st.tuples(st.just("retype"), st.sampled_from(NAMES)),
    st.tuples(st.just("link"), st.sampled_from(NAMES), st.sampled_from(["a", "../b.txt", "nowhere", "d"])),
)
rounds = st.lists(
    st.tuples(st.lists(ops, max_size=5), st.lists(ops, max_size=5), st.one_of(st.none(), st.integers(0, 8))),
    min_size=1,
    max_size=4,
)


class Versions:
    """Hands out unique contents, so 'is this version still somewhere' is a byte search."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        return b"version %d\n" % self.n


def _apply(root: Path, op: Op, versions: Versions) -> None:
    """One user edit; an edit that makes no sense in the current tree is simply not done."""
    kind, path = op[0], root / op[1]
    try:
        if kind == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_dir():
                path.write_bytes(versions.next())
        elif kind == "same" and path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            path.write_bytes(data)  # same bytes, new mtime
        elif kind == "delete":
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        elif kind == "rename" and path.exists():
            dst = root / op[2]
            if not dst.exists() and not str(dst).startswith(str(path) + "/"):
                dst.parent.mkdir(parents=True, exist_ok=True)
                path.rename(dst)
        elif kind == "mkdir" and not path.exists():
            path.mkdir(parents=True)
        elif kind == "rmdir" and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        elif kind == "link" and not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(op[2])
        elif kind == "retype" and path.exists():
            if path.is_dir():
                shutil.rmtree(path)
                path.write_bytes(versions.next())
            else:
                path.unlink()
                path.mkdir()
                (path / "in").write_bytes(versions.next())
    except OSError:
        pass  # a parent is a file now, and so on: the user could not have done it either


def _tree(root: Path, *, meta: bool = False) -> dict[str, Any]:
    """path -> ('d',) / ('f', bytes, mtime_ns); .tether only with meta=True."""
    out: dict[str, Any] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == "." and not meta and ".tether" in dirs:
            dirs.remove(".tether")
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d))] = ("d",)
        for d in list(dirs):
            if os.path.islink(os.path.join(dirpath, d)):  # a link to a dir: a link, never descended
                dirs.remove(d)
                out[os.path.normpath(os.path.join(rel, d))] = ("l", os.readlink(os.path.join(dirpath, d)))
        for f in files:
            full = os.path.join(dirpath, f)
            if f == "lock" and ".tether" in full:
                continue
            if os.path.islink(full):
                out[os.path.normpath(os.path.join(rel, f))] = ("l", os.readlink(full))
                continue
            with open(full, "rb") as fh:
                out[os.path.normpath(os.path.join(rel, f))] = ("f", fh.read(), os.lstat(full).st_mtime_ns)
    return out


def _contents(*roots: Path) -> set[bytes]:
    return {v[1] for r in roots for v in _tree(r, meta=True).values() if v[0] == "f"}


def _run(job: BisyncJob, dirs: Dirs, crash_after: int | None) -> bool:
    def tweak(o: Options) -> None:
        o.crash_after = crash_after
        o.backups_keep = 1000
        o.max_delete = 100

    try:
        rep = one_pass(job, dirs, tweak=tweak, force=True)
    except Crash:
        return False
    assert not rep.errors, rep.errors
    return True


def check_sequence(tmp: Path, job_for: Any, script: list[tuple[list[Op], list[Op], int | None]]) -> None:
    a, b = tmp / "a", tmp / "b"
    for p in (a, b):
        if p.exists():
            shutil.rmtree(p)
        p.mkdir()
    dirs = Dirs(tmp / "cfg", tmp / "state", tmp / "run")
    shutil.rmtree(tmp / "state", ignore_errors=True)
    job = job_for(a, b)
    versions = Versions()
    for p in (a, b):
        (p / "seed").write_bytes(versions.next())
    _run(job, dirs, None)
    for ops1, ops2, crash_after in script:
        for op in ops1:
            _apply(a, op, versions)
        for op in ops2:
            _apply(b, op, versions)
        before = _contents(a, b)
        if not _run(job, dirs, crash_after):
            _run(job, dirs, None)  # recovery after the crash
        ta, tb = _tree(a), _tree(b)
        diff = sorted(k for k in set(ta) | set(tb) if ta.get(k) != tb.get(k))
        assert not diff, f"replicas differ after the pass at {diff}: {[(ta.get(k), tb.get(k)) for k in diff]}"
        lost = before - _contents(a, b)
        assert not lost, f"versions lost: {sorted(lost)}"
        again = one_pass(job, dirs, dry_run=True)
        assert not again.plan, f"a second pass would still act: {again.plan}"


@settings(
    max_examples=int(os.environ.get("TETHER_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(script=rounds)
def test_local_local_random_edits_and_crashes(
    tmp_path: Path, script: list[tuple[list[Op], list[Op], int | None]]
) -> None:
    check_sequence(tmp_path, lambda a, b: BisyncJob("p", None, Local(str(a)), Local(str(b))), script)


@settings(
    max_examples=int(os.environ.get("TETHER_PROPERTY_EXAMPLES_SSH", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(script=rounds)
def test_local_ssh_random_edits_and_crashes(
    tmp_path: Path,
    sshd: SshServer,
    script: list[tuple[list[Op], list[Op], int | None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_SSH_CONFIG", str(sshd.ssh_config))
    check_sequence(tmp_path, lambda a, b: BisyncJob("p", None, Local(str(a)), Ssh(sshd.alias, str(b))), script)
