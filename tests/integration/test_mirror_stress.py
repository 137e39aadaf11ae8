"""Stress: random user actions against a running continuous mirror, checked by an outside model.

Hypothesis draws rounds of actions users do and sync tools get wrong, done back to back (well
within one second): in-place rewrites of small and big (> SMALL_FILE, sent by rsync) files,
editor saves (write aside, rename over), copies that keep mtimes and rewrites that restore the
old mtime (same size, same nanoseconds, other bytes), deletes with a file of the same name, size
and whole-second mtime created elsewhere in a new folder, archives with whole-second mtimes,
directory renames; and, less often, a source root swapped in (`mv src src.old && mv src.new src`,
then edits in the old tree) or the job killed with -9, edits made while it is down, and restarted.

After every round the checker waits (polling, generous deadline) until the target equals the
source: entry types, bytes, modes, mtimes to the nanosecond (dirs and links too). With
delete = "trash" it also counts what was lost: every version seen on the target at an earlier
check, if no longer in the source, must still be on the target (in its .tether/trash, or
elsewhere). Each example ends with a one-shot `tether sync`, which must find nothing to send.

Faults not injected: a crash between a rewrite that keeps size and mtime to the nanosecond and
its transfer (no mtime-based sync can see such a change afterwards, so fault rounds leave those
rewrites out), target-side edits, full disks, lost connections (see test_live.py).

Rounds per target kind: TETHER_STRESS_MIRROR_ROUNDS (default 24 local, 16 ssh).
"""

from __future__ import annotations

import collections
import itertools
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.rig.live import status, wait_for, wait_same, write_job
from tests.rig.run import tether, tether_json
from tests.rig.sshd import SshServer
from tether.agent_remote import Ops
from tether.apply import SMALL_FILE

SMALL, BIG = 64, SMALL_FILE + 40_000
FILES = ["a", "b.txt", "d/c", "d/e/f", "x/g", "big1.bin", "d/big2.bin"]
DIRS = ["d", "d/e", "x", "y"]
FRESH = ["n1", "d/n2", "y/n3"]  # folders that appear whole, from an archive or a staging area
ROUNDS_PER_EXAMPLE = 8
# In a round with a fault these would make a change no pass can see afterwards (see above).
SAME_STAMP = ("same_mtime", "copy2")

Step = tuple[Any, ...]
Round = tuple[list[Step], str | None, list[Step]]

_file = st.sampled_from(FILES)
_any = st.sampled_from(FILES + DIRS)
steps = st.one_of(
    st.tuples(st.just("write"), _file),
    st.tuples(st.just("save"), _file),
    st.tuples(st.just("same_mtime"), _file),
    st.tuples(st.just("copy2"), _file, _file),
    st.tuples(st.just("delete"), _any),
    st.tuples(st.just("rename"), _any, st.sampled_from(FILES + DIRS + FRESH)),
    st.tuples(st.just("elsewhere"), _file, st.sampled_from(FRESH)),
    st.tuples(st.just("archive"), st.sampled_from(FRESH)),
    st.tuples(st.just("mkdir"), st.sampled_from(DIRS + FRESH)),
)
rounds = st.tuples(
    st.lists(steps, min_size=1, max_size=5),
    st.sampled_from([None, None, None, None, None, None, "swap", "kill"]),
    st.lists(steps, max_size=3),
)
COUNTS: collections.Counter[str] = collections.Counter()


class Versions:
    """Every file body the test writes is a new version: a tag, then filler up to its size, so
    a body found anywhere on the target names the version it is."""

    def __init__(self) -> None:
        self.n = 0

    def new(self, size: int) -> bytes:
        self.n += 1
        return self.body(b"V%07d|" % self.n, size)

    @staticmethod
    def body(tag: bytes, size: int) -> bytes:
        return (tag * (size // len(tag) + 1))[:size]

    def tag_of(self, data: bytes) -> bytes | None:
        """The version this body is, or None if it is not one the test wrote whole."""
        tag = data[:9]
        if len(tag) == 9 and tag[:1] == b"V" and tag[8:] == b"|" and self.body(tag, len(data)) == data:
            return tag
        return None


def _size_for(rel: str) -> int:
    return BIG if rel.rpartition("/")[2].startswith("big") else SMALL


def _write(path: Path, data: bytes) -> None:
    """In place, as a program rewriting its output does (same inode, truncated, written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.is_file() else "wb") as f:
        f.truncate(0)
        f.write(data)


def _whole_second(path: Path) -> int:
    return path.stat().st_mtime_ns // 10**9 * 10**9


def do(root: Path, step: Step, v: Versions, stage: Path) -> None:
    """One user action in root; an action that makes no sense in the current tree is not done."""
    kind, rel = step[0], step[1]
    path = root / rel
    try:
        if kind == "write" and not path.is_dir():
            _write(path, v.new(_size_for(rel)))
        elif kind == "save" and not path.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            aside = path.with_name(f".{path.name}.swp")
            aside.write_bytes(v.new(_size_for(rel)))
            aside.rename(path)
        elif kind == "same_mtime" and path.is_file() and not path.is_symlink():
            before = path.stat()
            _write(path, v.new(before.st_size))  # other bytes, same size, then the old mtime back
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        elif kind == "copy2" and path.is_file() and not (root / step[2]).is_dir():
            (root / step[2]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, root / step[2])
        elif kind == "delete" and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif kind == "delete" and path.exists():
            path.unlink()
        elif kind == "rename" and path.exists():
            to = root / step[2]
            if not to.exists() and not str(to).startswith(str(path) + "/"):
                to.parent.mkdir(parents=True, exist_ok=True)
                path.rename(to)
        elif kind == "elsewhere" and path.is_file() and not (root / step[2]).exists():
            # the old file goes; a new folder brings a file of the same name, size and
            # whole-second mtime (as archives have) but other bytes
            size, mtime = path.stat().st_size, _whole_second(path)
            staged = stage / "elsewhere"
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True)
            os.utime(path, ns=(mtime, mtime))  # the deleted one had a whole-second mtime too
            (staged / path.name).write_bytes(v.new(size))
            os.utime(staged / path.name, ns=(mtime, mtime))
            path.unlink()
            (root / step[2]).parent.mkdir(parents=True, exist_ok=True)
            staged.rename(root / step[2])
        elif kind == "archive" and not path.exists():
            staged = stage / "archive"
            shutil.rmtree(staged, ignore_errors=True)
            (staged / "sub").mkdir(parents=True)
            second = int(time.time()) * 10**9
            for name, size in (("f", SMALL), ("sub/big.bin", BIG)):
                (staged / name).write_bytes(v.new(size))
                os.utime(staged / name, ns=(second, second))
            path.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(path)
        elif kind == "mkdir" and not path.exists():
            path.mkdir(parents=True)
        else:
            return
    except OSError:
        return  # a parent is a file now, and so on: the user could not have done it either
    COUNTS[kind] += 1


def _walk_bodies(root: Path, skip: Path | None = None) -> Iterator[bytes]:
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) != str(skip)]
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with open(p, "rb") as f:
                    yield f.read()


def bodies_on_target(dst: Path) -> Iterator[bytes]:
    """Every file body on the target, walked in the order versions move there: the tree, then the
    runs rsync kept versions in (.tether/incoming), then the rest of .tether (the versions). The
    job files a run's versions in the versions tree (fold_trash) after the transfer that made the
    target equal the source, so during a check; a walk that lists the versions before the
    incoming runs meets a version moved between the two nowhere."""
    meta = dst / ".tether"
    incoming = meta / "incoming"
    yield from _walk_bodies(dst, skip=meta)
    yield from _walk_bodies(incoming)
    yield from _walk_bodies(meta, skip=incoming)


class Example:
    """One running job, its source and target, and what the checker has seen on the target."""

    def __init__(self, base: Path, env: dict[str, str], target_of: Any, trash: bool) -> None:
        self.base, self.env, self.trash = base, env, trash
        self.src, self.dst, self.stage = base / "src", base / "dst", base / "stage"
        self.stage.mkdir(parents=True)
        self.v = Versions()
        for rel in ("a", "d/c", "d/e/f", "big1.bin"):
            _write(self.src / rel, self.v.new(_size_for(rel)))
        self.seen: set[bytes] = set()  # versions seen on the target at some check
        write_job(env, "stress", self.src, [target_of(self.dst)], interval=0, delete="trash" if trash else "mirror")
        tether(["start", "stress"], env, check_rc=0)
        self.check()

    def check(self) -> None:
        try:
            wait_same(self.src, self.dst, deadline=120)
        except AssertionError as e:
            raise AssertionError(f"{e}\nlog:\n{tether(['log', 'stress', '-n', '40'], self.env).stdout}") from None
        if not self.trash:
            assert not (self.dst / ".tether" / "versions").exists()
            return
        on_target = {t for t in map(self.v.tag_of, bodies_on_target(self.dst)) if t}
        lost = self.seen - on_target
        assert not lost, f"versions that had reached the target are gone from it: {sorted(lost)}"
        self.seen |= on_target

    def play(self, rnd: Round) -> None:
        first, fault, then = rnd
        if fault:  # a crash or a swap would hide these changes from any later pass
            first, then = [s for s in first if s[0] not in SAME_STAMP], [s for s in then if s[0] not in SAME_STAMP]
        for s in first:
            do(self.src, s, self.v, self.stage)
        if fault == "kill":
            pid = status(self.env, "stress")["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not status(self.env, "stress")["running"], 30, "the killed job to be gone")
            for s in then:  # changes while the job is down
                do(self.src, s, self.v, self.stage)
            tether(["start", "stress"], self.env, check_rc=0)
        elif fault == "swap":
            staged, old = self.base / "src.new", self.base / "src.old"
            shutil.copytree(self.src, staged, symlinks=True, copy_function=shutil.copy2)
            do(staged, ("write", "a"), self.v, self.stage)
            do(staged, ("delete", "d/c"), self.v, self.stage)
            self.src.rename(old)
            staged.rename(self.src)
            for s in then:
                do(self.src, s, self.v, self.stage)
            do(old, ("write", "b.txt"), self.v, self.stage)  # the old tree is no source any more
            shutil.rmtree(old)
        else:
            for s in then:
                do(self.src, s, self.v, self.stage)
        COUNTS[f"fault:{fault}"] += 1
        self.check()
        COUNTS["rounds"] += 1

    def close(self) -> None:
        tether(["stop", "stress"], self.env, check_rc=0)
        again = tether_json(["sync", "stress"], self.env, check_rc=0)
        t = again["targets"][0]
        assert (t["files"], t["deleted"]) == (0, 0), f"a full pass after the job still had work: {t}"
        self.check()


def _rounds(default: int) -> int:
    return int(os.environ.get("TETHER_STRESS_MIRROR_ROUNDS", default))


def _settings(rounds: int) -> settings:
    shrink = [Phase.shrink] if os.environ.get("TETHER_STRESS_MIRROR_SHRINK") else []
    return settings(
        max_examples=-(-rounds // ROUNDS_PER_EXAMPLE),
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, *shrink],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


_examples = itertools.count()
script = st.tuples(st.booleans(), st.lists(rounds, min_size=ROUNDS_PER_EXAMPLE, max_size=ROUNDS_PER_EXAMPLE))


def run(tmp_path: Path, env: dict[str, str], target_of: Any, trash: bool, plan: list[Round]) -> None:
    ex = Example(tmp_path / f"ex{next(_examples)}", env, target_of, trash)
    try:
        for rnd in plan:
            ex.play(rnd)
        ex.close()
    finally:
        tether(["stop", "stress"], env)
        shutil.rmtree(ex.base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    start = time.monotonic()
    yield
    print(f"\nmirror stress: {dict(COUNTS)} in {time.monotonic() - start:.0f} s")


def test_the_checker_meets_a_version_the_job_files_during_its_walk(tmp_path: Path) -> None:
    """The failure "versions that had reached the target are gone from it" after a big file
    replaced a small one: rsync kept the old version in incoming/<run>, the check began once the
    target equalled the source, and fold_trash filed the version in the versions tree between the
    walk's visit of that tree (first, here) and of incoming. Nothing was lost; the walk must see it."""
    layout = ["a", "d/c", ".tether/versions/b~20261206-101112~deleted.txt", ".tether/incoming/0001-9/a",
              ".tether/incoming/0001-9/d/c", ".tether/incoming/0002-9/x/g"]  # fmt: skip
    for fold_after in range(len(layout)):  # the fold at every point of the walk
        v, dst = Versions(), tmp_path / str(fold_after)
        for rel in layout:
            _write(dst / rel, v.new(SMALL))
        seen: set[bytes | None] = set()
        for i, body in enumerate(bodies_on_target(dst)):
            seen.add(v.tag_of(body))
            if i == fold_after:
                folded = Ops(os.fsencode(dst)).fold_trash(".tether/incoming", ".tether/versions")
                assert (folded["folded"], folded["failed"]) == (3, [])
        assert seen == {b"V%07d|" % n for n in range(1, len(layout) + 1)}, f"folded after body {fold_after}"


@_settings(_rounds(24))
@given(script=script)
def test_random_actions_against_a_running_mirror_to_a_local_target(
    tmp_path: Path, tether_env: dict[str, str], script: tuple[bool, list[Round]]
) -> None:
    trash, plan = script
    run(tmp_path, tether_env, str, trash, plan)


@_settings(_rounds(16))
@given(script=script)
def test_random_actions_against_a_running_mirror_to_an_ssh_target(
    tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str], script: tuple[bool, list[Round]]
) -> None:
    trash, plan = script
    run(tmp_path, tether_ssh_env, lambda p: f"{sshd.alias}:{p}", trash, plan)
