"""Stress: a model of two users editing both replicas, with the faults sync tools get wrong.

A hypothesis state machine edits both replicas (saves by rename, in-place rewrites of the same
size within one second, copies that keep an mtime, same-tick edits on both sides, touches,
deletes, renames, type changes, files under excluded names, user files named `.tether-tmp-*`)
and syncs, each sync with one fault: none, a crash after k actions (the engine's seam), edits
between the scan and the actions (the `after_scan` seam), an editor's save on the receiving
side while rsync copies a big file over a slow link (timed by rsync's temp file), a kill -9 of
a `tether bisync` process and its rsync mid-copy, or a file rewritten right after the pass that
recorded it with its old stat put back (a racily clean entry).  After every sync (the faulty
pass, then a clean one) the oracle, which owes nothing to tether, checks: both replicas hold
the same paths, bytes and mtimes (ns); no entry appeared that no user made (a partial copy, a
temp file); every version present on either side when a pass began, or written during it, is
still in a replica, its trash, its backups or a conflict copy; a dry run plans nothing.

Big files are anything over 64 KiB here: the engine's rsync threshold is lowered in this process,
and in the killed `tether bisync` process by a `python -c` prelude to `-m tether` (the plain
regression test below kills the unmodified command, with a file over the real 4 MiB).  Each
run prints which faults it really injected (`pytest -s`): a run is only as good as those.
Examples: TETHER_STRESS_BISYNC_ROUNDS (local<->local, default 4) and
TETHER_STRESS_BISYNC_ROUNDS_SSH (local<->ssh, default 2) runs of up to 6 rounds each (the first
run hypothesis makes is its simplest: no edits, no faults); TETHER_STRESS_BISYNC_SHRINK=1 to
shrink a failure to its shortest form.

Below the machine, one plain regression test per fault, each asserting what a user would see.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

import tether.bisync.engine as engine
from tests.rig.bisync_oracle import (
    NS,
    Edit,
    Node,
    Versions,
    apply_edit,
    copy_target,
    differences,
    foreign,
    kept,
    live,
    rewrite_in_place,
    rsync_temps,
    same_second,
    save,
    view,
    visible,
)
from tests.rig.bisync_pair import Pair, during_copy, kill_mid_copy, make_pair
from tests.rig.run import tether_json
from tests.rig.sshd import SshServer
from tether.endpoints import Ssh

REAL_SMALL = engine.SMALL  # the engine's rsync threshold (4 MiB)...
SMALL = 64 << 10  # ...lowered for these tests
BIG = SMALL + (16 << 10)  # copied by rsync
SLOW_KIB = 64  # KiB/s: a big file takes over a second to copy, time enough to act during it
EXCLUDE = ("*.tmp",)

FILES = ["a", "b.txt", "big", "d/a", "d/big", "d/e/f", "e", ".tether-tmp-notes", "d/.tether-tmp-x"]
DIRS = ["d", "d/e", "e", "m", "m/n"]
JUNK = ["junk.tmp", "d/junk.tmp", "d/e/x.tmp", "m/x.tmp"]  # excluded: never synced, never lost
MOVED = ["x", "d/x", "m/n/x"]
COMPONENTS = {c for p in [*FILES, *DIRS, *JUNK, *MOVED, "in"] for c in p.split("/")}
SIZES = (32, 100, BIG, BIG + 4096)


def excluded(path: str) -> bool:
    """The oracle's own reading of EXCLUDE (not tether's filter)."""
    return any(part.endswith(".tmp") for part in path.split("/"))


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "SMALL", SMALL)  # restored after the test


# ---------------------------------------------------------------------------- the oracle's checks


def check_converged(pair: Pair, versions: Versions, keep: set[int], names: set[str] = COMPONENTS) -> None:
    """Equal replicas, nothing foreign, nothing in `keep` lost, and a dry run plans nothing."""
    t1, t2 = view(pair.a, versions), view(pair.b, versions)
    diff = differences(t1, t2, excluded)
    assert not diff, "the replicas differ after a clean pass:\n  " + "\n  ".join(diff)
    bad = [f"path1 {x}" for x in foreign(t1, names)] + [f"path2 {x}" for x in foreign(t2, names)]
    assert not bad, "entries no user made:\n  " + "\n  ".join(bad)
    lost = keep - kept(pair.a, versions) - kept(pair.b, versions)
    assert not lost, f"versions lost (in neither replica, trash, backups nor a conflict copy): {sorted(lost)}"
    again = pair.run(dry_run=True)
    assert not again.plan and not again.errors, f"a further pass would still act: {again.plan} {again.errors}"


def clean_pass(pair: Pair) -> None:
    rep = pair.run()
    said = {k: rep.to_json()[k] for k in ("errors", "skipped", "plan") if rep.to_json()[k]}
    assert rep.ok, f"a pass with nothing running beside it did not finish cleanly: {said}"


def trees(pair: Pair, versions: Versions) -> tuple[dict[str, Node], dict[str, Node]]:
    return view(pair.a, versions), view(pair.b, versions)


# ---------------------------------------------------------------------------- the machine

sides = st.sampled_from([1, 2])
edits = st.one_of(
    st.tuples(st.just("save"), st.sampled_from(FILES), st.sampled_from(SIZES)),
    st.tuples(st.sampled_from(["inplace", "second", "touch", "cp_p", "retype"]), st.sampled_from(FILES)),
    st.tuples(st.just("delete"), st.sampled_from([*FILES, *DIRS, *JUNK])),
    st.tuples(st.just("mkdir"), st.sampled_from(DIRS)),
    st.tuples(st.just("rename"), st.sampled_from([*FILES, *DIRS]), st.sampled_from([*FILES, *MOVED])),
    st.tuples(st.just("save"), st.sampled_from(JUNK), st.just(40)),
)
both_sides = st.tuples(st.sampled_from(["same_tick", "touch"]), st.sampled_from(FILES), st.sampled_from(SIZES))
faults = st.sampled_from(["none", "crash", "scan_edit", "copy_edit", "kill", "racy"])
during_edits = st.sampled_from(["save", "inplace", "save", "touch", "delete"])
Late = tuple[set[int], set[int]]  # (versions users wrote during a pass, versions users destroyed during it)


class BisyncStress(RuleBasedStateMachine):
    """Both replicas and every version written; each step is one round."""

    def __init__(self, new_pair: Callable[[], Pair], work: Path, tally: Counter[str]) -> None:
        super().__init__()
        self.tally = tally  # which faults really happened, printed after the run
        self.pair = new_pair()
        self.work = work
        self.v = Versions()
        self.touched: list[str] = []
        self.both_touched: list[str] = []
        for root in self.pair.roots:
            save(root / "a", self.v.make(32))
        clean_pass(self.pair)

    def teardown(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def root(self, side: int) -> Path:
        return self.pair.roots[side - 1]

    def live(self) -> set[int]:
        return live(trees(self.pair, self.v))

    def found(self) -> set[int]:
        return kept(self.pair.a, self.v) | kept(self.pair.b, self.v)

    @rule(
        edits1=st.lists(edits, max_size=4),
        edits2=st.lists(edits, max_size=4),
        both=st.lists(both_sides, max_size=2),
        fault=faults,
        data=st.data(),
    )
    def round(self, edits1: list[Edit], edits2: list[Edit], both: list[Edit], fault: str, data: st.DataObject) -> None:
        """Edits on both sides, a pass with the fault, a clean pass, then the oracle's checks.
        A fault that needs a big copy in flight gets one: a big file saved on one side."""
        if fault in ("copy_edit", "kill"):
            big = ("save", data.draw(st.sampled_from(FILES), label="big file"), BIG)
            (edits1 if data.draw(sides, label="saved on") == 1 else edits2).append(big)
        for side, todo in ((1, edits1), (2, edits2)):
            for e in todo:
                apply_edit(self.root(side), self.root(3 - side), e, self.v)
                self.touched.append(e[1])
        for kind, name, size in both:
            (self.same_tick if kind == "same_tick" else self.touch_both)(name, size)
        self.tally[f"round: {fault}"] += 1
        keep = self.live()
        if fault == "none":
            clean_pass(self.pair)
            written, exempt = set(), set()
        else:
            written, exempt = getattr(self, f"pass_{fault}")(data)
            keep |= self.live() | written
            clean_pass(self.pair)
        check_converged(self.pair, self.v, keep - exempt)
        self.touched, self.both_touched = [], []

    # ---------------------------------------------------------------- edits on both sides at once

    def same_tick(self, name: str, size: int) -> None:
        """Both users save different bytes of one size in one clock tick: one mtime, to the ns."""
        paths = [r / name for r in self.pair.roots]
        for p in paths:
            apply_edit(p.parent, p.parent, ("save", p.name, size), self.v)
        if all(p.is_file() and not p.is_symlink() for p in paths):
            stamp = paths[0].stat().st_mtime_ns
            os.utime(paths[1], ns=(stamp, stamp))
            self.both_touched.append(name)
            self.tally["edit: same tick on both sides"] += 1

    def touch_both(self, name: str, _size: int) -> None:
        """The same bytes written again on both sides, path2's a moment later: equal files whose
        mtimes differ (the older side is then stamped with the newer mtime)."""
        paths = [r / name for r in self.pair.roots]
        for side in (1, 2):
            apply_edit(self.root(side), self.root(3 - side), ("touch", name), self.v)
        if all(p.is_file() and not p.is_symlink() for p in paths):
            first, second = (p.stat().st_mtime_ns for p in paths)
            if second <= first:  # written in one clock tick: make path2's the later save
                os.utime(paths[1], ns=(first + 1_000_000, first + 1_000_000))
            self.both_touched.append(name)
            self.tally["edit: same bytes on both sides, two mtimes"] += 1

    # ---------------------------------------------------------------- the faulty passes

    def pass_crash(self, data: st.DataObject) -> Late:
        try:
            self.pair.run(crash_after=data.draw(st.integers(0, 3), label="crash_after"))
            self.tally["crash: the pass ended first"] += 1
        except engine.Crash:
            self.tally["crash: cut short"] += 1
        return set(), set()

    def pass_scan_edit(self, data: st.DataObject) -> Late:
        """Users edit between the scan and the actions (the after_scan seam)."""
        # names both sides changed first: same bytes with two mtimes get an mtime fix-up to race
        files = self.both_touched or [n for n in self.touched if n in FILES] or FILES
        during = data.draw(
            st.lists(st.tuples(sides, during_edits, st.sampled_from(files)), min_size=1, max_size=3),
            label="edits after the scan",
        )
        written: set[int] = set()
        exempt: set[int] = set()

        def after_scan() -> None:
            before, made = self.found(), []
            for side, kind, name in during:
                made += apply_edit(self.root(side), self.root(3 - side), (kind, name, BIG), self.v)
            after = self.found()
            exempt.update(before - after)
            written.update(after.intersection(made))
            self.tally[f"scan_edit: {len(made)} versions written after the scan"] += 1

        self.pair.run(after_scan=after_scan)
        return written, exempt

    def pass_copy_edit(self, _data: st.DataObject) -> Late:
        """The receiving side's user saves the file rsync is bringing, while it crawls."""
        written: set[int] = set()
        exempt: set[int] = set()

        def users_save(root: Path, temp: Path) -> None:
            name = copy_target(temp, root, self.pair.roots[1 - self.pair.roots.index(root)])
            if name is not None:
                if (root / name).is_file():  # its old version: the user's own save replaces it
                    exempt.update(v for v in [self.v.id_of((root / name).read_bytes())] if v is not None)
                written.update(apply_edit(root, root, ("save", name, BIG), self.v))

        with during_copy(self.pair.roots, users_save) as hit:
            self.pair.run(bwlimit=str(SLOW_KIB * 4))
        self.tally[f"copy_edit: {'saved during a copy' if hit else 'no big copy to catch'}"] += 1
        return written, exempt

    def pass_kill(self, _data: st.DataObject) -> Late:
        """`tether bisync` and its rsync killed -9 mid-copy."""
        killed, _err = kill_mid_copy(self.pair, self.work, rate_kib=SLOW_KIB * 4, small=SMALL)
        self.tally[f"kill: {'killed mid-copy' if killed else 'no big copy, the pass ended'}"] += 1
        return set(), set()

    def pass_racy(self, data: st.DataObject) -> Late:
        """A file saved just before a pass, rewritten just after it with the size, mtime and inode
        the pass recorded (what a write in the same tick looks like); the clean pass must see it.
        Over ssh the file is on path1: the far side is scanned after the ssh connection is up,
        at a time the test cannot bound."""
        side = 1 if isinstance(self.pair.job.path2, Ssh) else data.draw(sides, label="racy side")
        name = data.draw(st.sampled_from(FILES), label="racy file")
        path = self.root(side) / name
        before = self.found()
        size = data.draw(st.sampled_from(SIZES), label="racy size")
        made = apply_edit(self.root(side), self.root(3 - side), ("save", name, size), self.v)
        replaced = before - self.found()  # the save is the user's: what it replaced is not tether's loss
        keep = self.live()
        starting = time.time_ns()
        clean_pass(self.pair)
        check_converged(self.pair, self.v, keep)
        if not made or not path.is_file() or self.v.id_of(path.read_bytes()) != made[0]:
            self.tally["racy: not saved, or lost a conflict"] += 1
            return set(), replaced
        st_ = os.stat(path)
        if starting - st_.st_mtime_ns >= NS // 2:
            self.tally["racy: the pass began long after the save (a stalled machine)"] += 1
            return set(), replaced
        rewrite_in_place(path, self.v.make(st_.st_size))
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        self.tally["racy: rewritten with its recorded stat"] += 1
        return {self.v.count}, replaced


def _stress_settings(env: str, default: int) -> settings:
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("TETHER_STRESS_BISYNC_SHRINK"):
        phases.append(Phase.shrink)
    return settings(
        max_examples=int(os.environ.get(env, str(default))),
        stateful_step_count=6,
        deadline=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def _run_machine(tmp: Path, kind: str, sshd: SshServer | None, mp: pytest.MonkeyPatch, examples: settings) -> None:
    """Run the machine, each example on its own pair, and say which faults it injected."""
    count = itertools.count(1)
    tally: Counter[str] = Counter()

    class Bound(BisyncStress):
        def __init__(self) -> None:
            work = tmp / f"ex{next(count)}"
            super().__init__(lambda: make_pair(work, kind, sshd, exclude=EXCLUDE, setenv=mp.setenv), work, tally)

    try:
        run_state_machine_as_test(Bound, settings=examples)
    finally:
        print(f"faults injected ({kind}):", dict(sorted(tally.items())))


def test_stress_local_local(tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _run_machine(tmp_path, "local", None, monkeypatch, _stress_settings("TETHER_STRESS_BISYNC_ROUNDS", 4))


def test_stress_local_ssh(
    tmp_path: Path, small_threshold: None, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_machine(tmp_path, "ssh", sshd, monkeypatch, _stress_settings("TETHER_STRESS_BISYNC_ROUNDS_SSH", 2))


# ---------------------------------------------------------------------------- regression tests, one per fault


@pytest.fixture(params=["local", "ssh"])
def pair(
    request: pytest.FixtureRequest, tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> Pair:
    sshd = request.getfixturevalue("sshd") if request.param == "ssh" else None
    return make_pair(tmp_path / "pair", request.param, sshd, exclude=EXCLUDE, setenv=monkeypatch.setenv)


SIZE = {"small": 100, "big": BIG}
# small files travel in agent messages, the same way both ways; big ones by rsync, over ssh too
SIZES_AND_SIDES = pytest.mark.parametrize(
    ("pair", "size"), [("local", "small"), ("local", "big"), ("ssh", "big")], indirect=["pair"]
)
PAST = (time.time_ns() // NS - 3600) * NS  # a whole second an hour ago: nothing racy about it


def _names(*paths: str) -> set[str]:
    return {c for p in paths for c in p.split("/")}


def _synced(pair: Pair, v: Versions, **files: int) -> dict[str, bytes]:
    """path1 gets these files (name -> size), stamped in the past, and one pass syncs them."""
    out = {}
    for name, size in files.items():
        out[name] = v.make(size)
        save(pair.a / name, out[name], mtime_ns=PAST + 100_000_000)
    clean_pass(pair)
    return out


def test_edit_during_big_copy_is_kept(pair: Pair) -> None:
    """path1's new version goes to path2 by rsync, slowly; path2's user saves the file meanwhile."""
    v = Versions()
    _synced(pair, v, big=BIG)
    save(pair.a / "big", v.make(BIG))
    mine = v.count
    theirs: list[int] = []

    def users_save(_root: Path, _temp: Path) -> None:
        save(pair.b / "big", v.make(BIG))
        theirs.append(v.count)

    with during_copy([pair.b], users_save) as hit:
        pair.run(bwlimit=str(SLOW_KIB))
    assert hit, "the copy ended before the save: no fault was injected"
    clean_pass(pair)
    check_converged(pair, v, {mine, *theirs}, _names("big"))
    for t in trees(pair, v):
        assert {mine, *theirs} <= visible(t, "big"), f"both versions must be at big or a conflict copy: {t}"


@SIZES_AND_SIDES
def test_same_second_rewrite_propagates(pair: Pair, size: str) -> None:
    """Rewritten in place, same size, within the second of the synced version (rsync's quick check
    compares whole seconds: it must not get to decide)."""
    v = Versions()
    _synced(pair, v, f=SIZE[size])
    f = pair.a / "f"
    rewrite_in_place(f, v.make(SIZE[size]))
    os.utime(f, ns=(PAST, same_second(PAST + 100_000_000)))  # the synced one was stamped PAST + 0.1 s
    clean_pass(pair)
    check_converged(pair, v, {v.count}, _names("f"))
    assert visible(view(pair.b, v), "f") == {v.count}


@SIZES_AND_SIDES
def test_same_tick_rewrites_on_both_sides_are_a_conflict(pair: Pair, size: str) -> None:
    """Both sides rewritten in place, back to back with no stat between: in one clock tick they
    share one mtime to the ns (where the clock gave them two, the second gets the first's)."""
    v = Versions()
    _synced(pair, v, f=SIZE[size])
    fa, fb = pair.a / "f", pair.b / "f"
    rewrite_in_place(fa, v.make(SIZE[size]))
    rewrite_in_place(fb, v.make(SIZE[size]))
    mine, theirs = v.count - 1, v.count
    stamp = fa.stat().st_mtime_ns
    os.utime(fb, ns=(stamp, stamp))
    clean_pass(pair)
    check_converged(pair, v, {mine, theirs}, _names("f"))
    for t in trees(pair, v):
        assert visible(t, "f") == {mine, theirs}, f"a conflict keeps both versions: {t}"


@SIZES_AND_SIDES
def test_copied_mtime_with_different_bytes_is_a_conflict(pair: Pair, size: str, tmp_path: Path) -> None:
    """path1 gets a file by cp -p, path2 one of the same size from a tar carrying the same stamp."""
    v = Versions()
    _synced(pair, v, f=SIZE[size])
    elsewhere = tmp_path / "elsewhere"
    save(elsewhere, v.make(SIZE[size]), mtime_ns=PAST + 2 * NS + 123_456_789)
    mine = v.count
    shutil.copy2(elsewhere, pair.a / "f")  # cp -p
    save(pair.b / "f", v.make(SIZE[size]), mtime_ns=PAST + 2 * NS + 123_456_789)  # tar -x
    theirs = v.count
    clean_pass(pair)
    check_converged(pair, v, {mine, theirs}, _names("f"))
    for t in trees(pair, v):
        assert visible(t, "f") == {mine, theirs}, f"a conflict keeps both versions: {t}"


@SIZES_AND_SIDES
def test_a_rewrite_with_its_mtime_put_back_is_propagated(pair: Pair, size: str) -> None:
    """Saved right before the pass that records it; rewritten right after with the same size, in
    place, its mtime put back: the change time tells (a rewrite in the same tick of a coarse
    clock, where it cannot, is the whole-second test below)."""
    v = Versions()
    f = pair.a / "f"
    for _attempt in range(5):
        save(f, v.make(SIZE[size]))
        starting = time.time_ns()
        clean_pass(pair)
        st_ = f.stat()
        if starting - st_.st_mtime_ns < NS // 2:
            break
    else:
        pytest.fail("the pass never started within half a second of the save: the machine is too loaded to tell")
    rewrite_in_place(f, v.make(SIZE[size]))
    os.utime(f, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    now = f.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (st_.st_size, st_.st_mtime_ns, st_.st_ino)
    clean_pass(pair)
    check_converged(pair, v, {v.count}, _names("f"))
    assert visible(view(pair.b, v), "f") == {v.count}


@pytest.fixture
def whole_second_fs(tmp_path: Path) -> Iterator[Path]:
    """ext4 with 128-byte inodes: mtimes and ctimes to the whole second, so a rewrite within
    the second of the scan that recorded the file keeps size, mtime, inode and ctime."""
    img, mnt = tmp_path / "s.img", tmp_path / "s"
    mnt.mkdir()
    made = subprocess.run(["truncate", "-s", "32M", str(img)]).returncode == 0 and subprocess.run(
        ["mkfs.ext4", "-q", "-I", "128", "-F", str(img)], capture_output=True
    ).returncode == 0  # fmt: skip
    if not made or subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True).returncode:
        pytest.skip("no whole-second filesystem can be mounted here (mkfs.ext4 -I 128 on a loop device)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize(("kind", "size"), [("local", "small"), ("local", "big"), ("ssh", "small")])
def test_a_rewrite_within_the_second_of_its_scan_is_propagated(
    request: pytest.FixtureRequest, whole_second_fs: Path, monkeypatch: pytest.MonkeyPatch, kind: str, size: str
) -> None:
    """Racily clean for real: nothing on the file tells the rewrite, only that it was recorded
    within the filesystem's clock tick of the scan (the lock's stamp, read on that filesystem)."""
    sshd = request.getfixturevalue("sshd") if kind == "ssh" else None
    pair = make_pair(whole_second_fs / "pair", kind, sshd, exclude=EXCLUDE, setenv=monkeypatch.setenv)
    v = Versions()
    f = pair.a / "f"
    for _attempt in range(20):
        while time.time() % 1 > 0.05:  # start as a second begins: save, pass and rewrite share it
            time.sleep(0.005)
        save(f, v.make(SIZE[size]))
        recorded = f.stat()
        clean_pass(pair)
        rewrite_in_place(f, v.make(SIZE[size]))
        now = f.stat()
        keys = ("st_mtime_ns", "st_ctime_ns", "st_ino", "st_size")
        if [getattr(now, k) for k in keys] == [getattr(recorded, k) for k in keys]:
            break
        clean_pass(pair)  # the second had turned: a plain edit; try again
    else:
        pytest.skip("save, pass and rewrite never fitted in one second in 20 tries: the machine is too loaded")
    clean_pass(pair)
    check_converged(pair, v, {v.count}, _names("f"))
    assert visible(view(pair.b, v), "f") == {v.count}


@pytest.mark.parametrize("pair", ["local", "ssh"], indirect=True)
def test_a_folder_deleted_on_one_side_that_holds_new_and_excluded_files_on_the_other(pair: Pair) -> None:
    """path1 removes d; path2 has a new file in d and an excluded one in d/e. Both dirs stay, and
    d comes back on path1 twice over in one pass (made again with d/e, and for d/new): the second
    time finds the directory the first made, which is no race (found by the bisync stress test:
    "d appeared during the pass")."""
    v = Versions()
    same = v.make(32)
    for root in pair.roots:
        save(root / "d" / "a", same, mtime_ns=PAST)
        (root / "d" / "e").mkdir()
    clean_pass(pair)
    (pair.b / "d" / "e" / "x.tmp").write_text("excluded")
    shutil.rmtree(pair.a / "d")
    save(pair.b / "d" / "new", v.make(40))
    clean_pass(pair)
    assert sorted(os.listdir(pair.a / "d")) == ["e", "new"]
    assert sorted(os.listdir(pair.b / "d")) == ["e", "new"] and os.listdir(pair.b / "d" / "e") == ["x.tmp"]
    clean_pass(pair)


def test_meta_fixup_does_not_undo_an_edit_made_after_the_scan(pair: Pair) -> None:
    """Same bytes on both sides, older mtime on path1 (so path1 takes path2's); the user saves
    path1's file between the scan and that fix-up."""
    v = Versions()
    _synced(pair, v, f=100)
    same = v.make(100)
    save(pair.a / "f", same, mtime_ns=PAST + 3 * NS + 100_000_000)
    save(pair.b / "f", same, mtime_ns=PAST + 3 * NS + 500_000_000)
    edited: list[int] = []

    def users_save() -> None:
        save(pair.a / "f", v.make(100))
        edited.append(v.count)

    pair.run(after_scan=users_save)
    clean_pass(pair)
    check_converged(pair, v, set(edited), _names("f"))
    for t in trees(pair, v):
        assert set(edited) <= visible(t, "f"), f"the save after the scan must reach both sides: {t}"


def test_tether_tmp_named_user_files_are_synced(pair: Pair) -> None:
    v = Versions()
    names = {pair.a: [".tether-tmp-notes", "sub/.tether-tmp-x"], pair.b: [".tether-tmp-draft"]}
    for root, files in names.items():
        for n in files:
            save(root / n, v.make(50))
    clean_pass(pair)
    every = [n for files in names.values() for n in files]
    check_converged(pair, v, set(range(1, v.count + 1)), _names(*every))
    for t in trees(pair, v):
        assert {n for n in every if t.get(n, ("",))[0] == "f"} == set(every), f"user files missing: {t}"


def test_deleted_folder_holding_only_excluded_files_converges(pair: Pair) -> None:
    """path1 removes d/; path2's d/ still holds an excluded cache file besides the synced ones."""
    v = Versions()
    args: list[str | Path | bytes] = ["bisync", pair.a, str(pair.job.path2), "--exclude", "*.tmp", "--json"]
    for n in ("d/keep.txt", "one", "two", "three"):
        save(pair.a / n, v.make(50))
    gone = v.id_of((pair.a / "d/keep.txt").read_bytes())
    assert gone is not None
    clean_pass(pair)
    save(pair.b / "d/cache.tmp", v.make(50))
    cache = v.count
    shutil.rmtree(pair.a / "d")
    tether_json(args, pair.env)  # the pass that deletes
    again = tether_json(args, pair.env)  # as the user runs it: exit code and plan
    said = {k: again[k] for k in ("_rc", "plan", "skipped", "errors", "_stderr")}
    assert again["_rc"] == 0 and again["plan"] == [] and not again["skipped"], f"a further pass: {said}"
    assert (pair.b / "d/cache.tmp").is_file() and v.id_of((pair.b / "d/cache.tmp").read_bytes()) == cache
    check_converged(pair, v, {gone, cache}, _names("d/keep.txt", "d/cache.tmp", "one", "two", "three"))
    for t in trees(pair, v):
        assert "d/keep.txt" not in t


def test_a_file_replaces_a_folder_that_holds_only_excluded_files(pair: Pair) -> None:
    """path1 turns folder d into a file; path2's d still holds an excluded cache file. Found by the
    stress test: every pass failed with "install d: Directory not empty". The folder goes whole
    into the versions, its excluded file with it, and the file takes its place."""
    v = Versions()
    old = v.id_of(_synced(pair, v, **{"d/a": 50})["d/a"])
    assert old is not None
    save(pair.b / "d" / "cache.tmp", v.make(30))
    cache = v.count
    shutil.rmtree(pair.a / "d")
    save(pair.a / "d", v.make(40))
    now = v.count
    rep = pair.run()
    assert rep.ok and any("held only files this job excludes" in w for w in rep.warnings), str(rep.to_json())
    assert (pair.b / "d").is_file() and v.id_of((pair.b / "d").read_bytes()) == now
    check_converged(pair, v, {old, cache, now}, _names("d", "d/a", "d/cache.tmp"))


def test_a_folder_that_gets_a_new_file_during_the_pass_is_not_replaced(pair: Pair) -> None:
    """The same, but the file in path2's folder is one the job syncs, saved after the scan: the
    folder stays where it is (nothing the user sees moves), the pass says so, the next converges."""
    v = Versions()
    _synced(pair, v, **{"d/a": 50})
    shutil.rmtree(pair.a / "d")
    save(pair.a / "d", v.make(40))
    made: list[int] = []

    def users_save() -> None:
        save(pair.b / "d" / "new.txt", v.make(20))
        made.append(v.count)

    rep = pair.run(after_scan=users_save)
    assert not rep.ok and any("made during the pass" in e for e in rep.errors), rep.to_json()
    assert (pair.b / "d" / "new.txt").is_file()
    clean_pass(pair)
    check_converged(pair, v, set(made), _names("d", "d/a", "d/new.txt"))


def test_folder_deleted_the_day_a_file_of_its_name_was_trashed_converges(pair: Pair) -> None:
    """Beyond the brief (the machine found it): `x` deleted as a file, made again as a folder
    and deleted again the same day; the folder's file must reach the trash like the first did."""
    v = Versions()
    first = _synced(pair, v, x=50, one=50, two=50, three=50)["x"]
    (pair.a / "x").unlink()
    clean_pass(pair)
    save(pair.a / "x/in", v.make(50))
    inner = v.count
    clean_pass(pair)
    shutil.rmtree(pair.a / "x")
    pair.run()  # the pass that deletes
    clean_pass(pair)
    check_converged(pair, v, {v.id_of(first) or 0, inner}, _names("x/in", "one", "two", "three"))
    for t in trees(pair, v):
        assert not any(p == "x" or p.startswith("x/") for p in t), f"x must be gone from both sides: {t}"


def test_injected_crash_at_any_step_loses_nothing(pair: Pair) -> None:
    """Every kind of action in one pass (copies small and big both ways, deletes, a dir made, a
    conflict, a metadata fix-up), crashed after k actions for several k, then a clean pass."""
    v = Versions()
    ks = (0, 3)
    _synced(pair, v, **{f"k{k}{n}": 100 for k in ks for n in ("c", "gone", "same")})
    names = {"in"} | {f"k{k}{n}" for k in ks for n in ("c", "gone", "same", "small", "big", "dir")}
    crashed = 0
    for k in ks:
        tag = f"k{k}"
        save(pair.a / f"{tag}small", v.make(100))
        save(pair.b / f"{tag}big", v.make(BIG))
        save(pair.b / f"{tag}dir/in", v.make(100))
        (pair.a / f"{tag}gone").unlink()
        save(pair.a / f"{tag}c", v.make(100))
        save(pair.b / f"{tag}c", v.make(100))
        same = (pair.a / f"{tag}same").read_bytes()
        save(pair.a / f"{tag}same", same, mtime_ns=PAST + 5 * NS)
        save(pair.b / f"{tag}same", same, mtime_ns=PAST + 6 * NS)
        keep = live(trees(pair, v))
        try:
            pair.run(crash_after=k)
        except engine.Crash:
            crashed += 1
        clean_pass(pair)
        check_converged(pair, v, keep, names)
    assert crashed == len(ks), "precondition: every one of these passes was cut short"


def test_kill_9_during_big_copy_leaves_no_partial_file(pair: Pair, tmp_path: Path) -> None:
    """`tether bisync` killed -9 with its rsync while a file over the real 4 MiB threshold crawls to
    path1 (the command's own threshold: nothing lowered in that process); then a normal pass."""
    v = Versions()
    _synced(pair, v, seed=100)
    save(pair.b / "huge", v.make(REAL_SMALL + (256 << 10)))
    huge = v.count
    killed, err = kill_mid_copy(pair, tmp_path, rate_kib=1024)
    assert killed, f"the pass finished before the kill: no fault was injected\n{err}"
    assert rsync_temps(pair.a, everywhere=True), "precondition: the killed rsync left a partial file in path1"
    clean_pass(pair)
    check_converged(pair, v, {huge}, _names("seed", "huge"))
    assert not rsync_temps(*pair.roots)
    for t in trees(pair, v):
        assert visible(t, "huge") == {huge}
