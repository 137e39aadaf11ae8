"""The inotify watcher against real directories: every event kind, hostile names, bursts.

Operations are done first and read after: the kernel queues events as the syscalls return,
so a read that follows sees them all, and no test depends on timing beyond generous deadlines.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig.watching import DEADLINE, batch, gather, has, write
from tether.errors import UsageError
from tether.filters import Filter
from tether.watch import Change, Coalescer, Watcher


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    return r


def watching(root: Path, flt: Filter | None = None) -> Watcher:
    w = Watcher(str(root), flt or Filter())
    w.start()
    return w


@pytest.fixture
def watcher(root: Path) -> Iterator[Watcher]:
    w = watching(root)
    yield w
    w.close()


def test_files_created_modified_chmodded_and_deleted(root: Path, watcher: Watcher) -> None:
    write(root / "f")
    assert batch(watcher) == [Change("write", "f", created=True)]
    write(root / "f", b"more")
    assert batch(watcher) == [Change("write", "f")]
    os.chmod(root / "f", 0o600)
    assert batch(watcher) == [Change("write", "f")]
    os.symlink("f", root / "ln")
    os.link(root / "f", root / "hard")
    assert batch(watcher) == [Change("write", "ln", created=True), Change("write", "hard", created=True)]
    os.unlink(root / "f")
    assert batch(watcher) == [Change("delete", "f")]
    write(root / "tmp")
    os.unlink(root / "tmp")
    # created and gone within the window: said, for each target to judge (for_target)
    assert Coalescer(watcher).next_batch(0.3) == [Change("delete", "tmp", created=True)]


def test_a_whole_first_change_goes_without_the_window(root: Path, watcher: Watcher) -> None:
    """The window only pairs events: a change that is whole goes at once; a file still being
    written, or a hard link (whose close never comes), waits the window; a user's long window
    is always waited."""
    co = Coalescer(watcher, delay=0.05)
    write(root / "f")
    assert co.next_batch(DEADLINE) == [Change("write", "f", created=True)]
    assert co.at_once == 1
    fd = os.open(root / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"half")
        co.last_change = -math.inf  # however quiet it was before: the file is not whole
        assert co.next_batch(DEADLINE) == [Change("write", "open", created=True)]
        assert co.at_once == 1
    finally:
        os.close(fd)
    co.last_change = -math.inf
    assert co.next_batch(DEADLINE) == [Change("write", "open")]  # its close: whole now
    assert co.at_once == 2
    os.link(root / "f", root / "hard")
    co.last_change = -math.inf
    assert co.next_batch(DEADLINE) == [Change("write", "hard", created=True)]
    assert co.at_once == 2
    os.chmod(root / "f", 0o600)  # after the window the link counts as whole: nothing waits on it
    co.last_change = -math.inf
    assert co.next_batch(DEADLINE) == [Change("write", "f")]
    assert co.at_once == 3
    slow = Coalescer(watcher, delay=0.2)
    write(root / "g")
    assert slow.next_batch(DEADLINE) == [Change("write", "g", created=True)]
    assert slow.at_once == 0


def test_new_tree_is_reported_whole_and_watched(root: Path, watcher: Watcher) -> None:
    os.makedirs(root / "a/b/c")
    write(root / "a/b/c/file")
    assert batch(watcher) == [Change("write", "a", is_dir=True, created=True)]
    assert watcher.watch_count == 4
    write(root / "a/b/c/later")
    assert batch(watcher) == [Change("write", "a/b/c/later", created=True)]
    shutil.rmtree(root / "a")
    assert batch(watcher) == [Change("delete", "a", is_dir=True)]
    gather(watcher, lambda _: watcher.watch_count == 1)  # the IN_IGNORED of each dropped watch


def test_renames_inside_are_one_move_and_watches_follow(root: Path, watcher: Watcher) -> None:
    (root / "d").mkdir()
    write(root / "d/f")
    batch(watcher)
    os.rename(root / "d/f", root / "d/g")
    assert batch(watcher) == [Change("move", "d/g", old="d/f")]
    os.rename(root / "d", root / "e")
    assert batch(watcher) == [Change("move", "e", is_dir=True, old="d")]
    write(root / "e/g", b"changed")
    assert batch(watcher) == [Change("write", "e/g")]


def test_move_out_is_a_delete_and_move_in_a_write(root: Path, watcher: Watcher, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(root / "f")
    (root / "d").mkdir()
    batch(watcher)
    os.rename(root / "f", outside / "f")
    os.rename(root / "d", outside / "d")
    assert batch(watcher) == [Change("delete", "f"), Change("delete", "d", is_dir=True)]
    assert watcher.watch_count == 1
    write(outside / "d/x")  # no longer ours: its events must not leak in
    os.rename(outside / "d", root / "back")
    os.rename(outside / "f", root / "g")
    assert batch(watcher) == [Change("write", "back", is_dir=True), Change("write", "g")]
    write(root / "back/y")
    assert batch(watcher) == [Change("write", "back/y", created=True)]


def test_move_out_then_recreate_keeps_the_order(root: Path, watcher: Watcher, tmp_path: Path) -> None:
    write(root / "f")
    batch(watcher)
    os.rename(root / "f", tmp_path / "gone")  # the MOVED_FROM waits for a MOVED_TO that never comes
    write(root / "f", b"new")
    assert batch(watcher) == [Change("delete", "f"), Change("write", "f", created=True)]


def test_root_metadata_and_dir_metadata(root: Path, watcher: Watcher) -> None:
    (root / "d").mkdir()
    batch(watcher)
    os.chmod(root, 0o750)
    os.chmod(root / "d", 0o700)
    assert batch(watcher) == [Change("write", ""), Change("write", "d")]


def test_dir_rename_under_anchored_rules_asks_for_rescan(root: Path) -> None:
    os.makedirs(root / "a/gen/x")
    with watching(root, Filter.build(exclude=["/b/gen/"])) as w:
        assert w.watch_count == 4
        os.rename(root / "a", root / "b")  # b/gen is excluded: what the target holds is stale
        assert batch(w) == [Change("rescan", "")]
        assert w.watch_count == 2  # root and b; b/gen is no longer watched


def test_rename_chain_coalesces_to_one_move(root: Path, watcher: Watcher) -> None:
    write(root / "a")
    batch(watcher)
    os.rename(root / "a", root / "b")
    os.rename(root / "b", root / "c")
    out = batch(watcher)
    assert [c for c in out if c.kind == "move"] == [Change("move", "c", old="a")]
    assert out == [Change("move", "c", old="a"), Change("delete", "b")]  # b might have existed


def test_excluded_dirs_are_not_watched_and_stay_silent(root: Path) -> None:
    for d in ("build/x/y", "src/build", "src/keep"):
        os.makedirs(root / d)
    with watching(root, Filter.build(exclude=["build/", "*.tmp"])) as w:
        assert w.watch_count == 3  # root, src, src/keep
        write(root / "build/x/y/out")
        write(root / "src/a.tmp")
        os.makedirs(root / "src/keep/build/deep")
        write(root / "src/keep/real")
        assert batch(w) == [Change("write", "src/keep/real", created=True)]
        assert w.watch_count == 3
        os.rename(root / "src/keep/real", root / "src/keep/real.tmp")  # into excluded: a delete
        os.rename(root / "build/x", root / "src/x")  # out of excluded: a write
        assert batch(w) == [Change("delete", "src/keep/real"), Change("write", "src/x", is_dir=True)]
        assert w.watch_count == 5


HOSTILE = [b"new\nline", b"caf\xe9", b"-rf", b"single'quote", b'double"quote', b" lead", b"sp ace"]


def test_hostile_names(root: Path, watcher: Watcher) -> None:
    top = os.fsencode(root)
    d = os.path.join(top, b"dir \xff\n-x")
    os.mkdir(d)
    batch(watcher)
    for name in HOSTILE:
        write(os.path.join(d, name))
    dname = os.fsdecode(b"dir \xff\n-x")
    want = [Change("write", f"{dname}/{os.fsdecode(n)}", created=True) for n in HOSTILE]
    assert batch(watcher) == want
    for c in want:  # the paths name the real files
        os.lstat(os.path.join(top, os.fsencode(c.path)))
    os.rename(os.path.join(d, b"caf\xe9"), os.path.join(top, b"\xe9t\xe9"))
    assert batch(watcher) == [Change("move", os.fsdecode(b"\xe9t\xe9"), old=f"{dname}/caf\udce9")]


def test_watch_limit_is_checked_before_any_watch(root: Path) -> None:
    for i in range(5):
        (root / f"d{i}").mkdir()
    w = Watcher(str(root), Filter(), max_watches=4)
    with pytest.raises(UsageError) as err:
        w.start()
    text = str(err.value)
    assert "needs 6 inotify watches" in text
    assert "sysctl fs.inotify.max_user_watches=65536" in text
    assert "/etc/sysctl.d/90-tether.conf" in text
    assert err.value.code == 2 and w.watch_count == 0 and w.fileno() == -1


def test_idle_read_blocks_for_the_timeout(watcher: Watcher) -> None:
    start = time.monotonic()
    assert watcher.read(0.2) == []
    took = time.monotonic() - start
    assert 0.19 <= took < 30  # it waited; the far bound is a hang, not a speed
    start = time.monotonic()
    assert Coalescer(watcher).next_batch(0.2) == []
    assert 0.19 <= time.monotonic() - start < 30


def test_root_moved_or_removed_asks_for_rescan(root: Path, watcher: Watcher, tmp_path: Path) -> None:
    os.rename(root, tmp_path / "elsewhere")
    assert Change("rescan", "") in gather(watcher, has(Change("rescan", "")))


def _tarball(where: Path, files: int, per_dir: int) -> Path:
    src = where / "tar-src"
    for i in range(files):
        d = src / f"d{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        write(d / f"f{i}")
    tar = where / "burst.tar"
    with tarfile.open(tar, "w") as t:
        t.add(src, arcname="burst")
    shutil.rmtree(src)
    return tar


def _covered(paths: set[str], out: list[Change]) -> bool:
    dirs = [c.path for c in out if c.kind == "write" and c.is_dir]
    files = {c.path for c in out if c.kind == "write"}
    return all(p in files or any(p.startswith(d + "/") for d in dirs) for p in paths)


def _extract(tar: Path, root: Path) -> set[str]:
    """Unpack as fast as we can (GNU tar when present), so the events come as one burst."""
    with tarfile.open(tar) as t:
        names = {m.name for m in t.getmembers() if m.isfile()}
        if shutil.which("tar"):
            subprocess.run(["tar", "-xf", str(tar), "-C", str(root)], check=True)
        else:
            t.extractall(root, filter="tar")
    return names


def _premade(root: Path, w: Watcher, dirs: int) -> None:
    """The burst's directories, already watched: then every file is an event."""
    for i in range(dirs):
        (root / f"burst/d{i}").mkdir(parents=True)
    batch(w)
    assert w.watch_count == dirs + 2


def _drain_batches(w: Watcher) -> list[Change]:
    out: list[Change] = []
    c = Coalescer(w, delay=0.2)
    while got := c.next_batch(0.5):
        out += got
    return out


@pytest.mark.slow
def test_burst_of_20k_files_is_never_silent(root: Path, watcher: Watcher, tmp_path: Path) -> None:
    tar = _tarball(tmp_path, 20_000, 200)
    _premade(root, watcher, 100)
    files = _extract(tar, root)
    out = _drain_batches(watcher)
    assert Change("rescan", "") in out or _covered(files, out)
    print("20k burst:", "rescan" if Change("rescan", "") in out else f"{len(out)} writes")
    if Change("rescan", "") in out:  # the rebuilt watches see what comes next
        assert watcher.watch_count == 2 + 100
        write(root / "burst/d7/after")
        assert batch(watcher) == [Change("write", "burst/d7/after", created=True)]


def test_burst_below_the_queue_limit_reports_every_file(root: Path, watcher: Watcher, tmp_path: Path) -> None:
    tar = _tarball(tmp_path, 2_000, 100)
    _premade(root, watcher, 20)
    files = _extract(tar, root)
    out = _drain_batches(watcher)
    assert Change("rescan", "") not in out
    paths = {c.path for c in out}
    assert files <= paths and all(p.startswith("burst") and (root / p).is_dir() for p in paths - files)
    assert all(c.kind == "write" for c in out)


def test_wake_ends_an_untimed_wait_and_a_timeout_is_not_a_wake(tmp_path: Path) -> None:
    import threading

    (tmp_path / "w").mkdir()
    with Watcher(str(tmp_path / "w"), Filter()) as w:
        assert w.read(0.05) == [] and not w.take_woken()  # a plain timeout
        threading.Timer(0.1, w.wake).start()
        assert w.read(None) == []  # no timer: only the wake ends this
        assert w.take_woken() and not w.take_woken()


def test_the_window_gathers_changes_that_come_close_together_every_time(tmp_path: Path) -> None:
    import threading

    from tether.watch import Coalescer

    root = tmp_path / "w"
    root.mkdir()
    with Watcher(str(root), Filter()) as w:
        co = Coalescer(w, delay=1.0, max_delay=5.0)  # wide: a busy machine may run the timer late
        for round_no in range(3):  # not only the first batch: the window holds for every one
            (root / f"a{round_no}").write_text("1")
            threading.Timer(0.05, (root / f"b{round_no}").write_text, ["2"]).start()
            batch = co.next_batch(timeout=10)
            assert sorted(c.path for c in batch) == [f"a{round_no}", f"b{round_no}"], batch


def test_a_root_moved_away_deleted_or_swapped_is_reported_as_changed(tmp_path: Path) -> None:
    for how in ("move", "delete", "swap"):
        root = tmp_path / how
        (root / "sub").mkdir(parents=True)
        with Watcher(str(root), Filter()) as w:
            assert not w.root_changed()
            if how == "move":
                root.rename(tmp_path / f"{how}.old")
            elif how == "delete":
                shutil.rmtree(root)
            else:  # another directory takes the name, with no event on the watched tree yet
                (tmp_path / f"{how}.new").mkdir()
                root.rename(tmp_path / f"{how}.old")
                (tmp_path / f"{how}.new").rename(root)
            assert w.root_changed(), how
            assert Change("rescan", "") in gather(w, lambda got: bool(got)), how
            assert w.root_changed(), how  # the events do not clear it: the job must watch anew


def test_a_symlinked_root_is_watched_where_it_leads_and_a_new_link_target_is_noticed(tmp_path: Path) -> None:
    (tmp_path / "releases" / "1" / "sub").mkdir(parents=True)
    (tmp_path / "releases" / "2").mkdir()
    os.symlink("releases/1", tmp_path / "current")
    with Watcher(str(tmp_path / "current"), Filter()) as w:
        assert w.watch_count == 2
        (tmp_path / "releases" / "1" / "sub" / "x").write_text("x")
        assert Change("write", "sub/x", created=True) in gather(w, lambda got: bool(got))
        assert not w.root_changed()
        os.symlink("releases/2", tmp_path / "next")  # ln -sfn releases/2 current: a new link renamed over
        os.rename(tmp_path / "next", tmp_path / "current")
        assert Change("rescan", "") in gather(w, lambda got: bool(got))  # at once, from the parent's watch
        assert w.root_changed()


def test_a_signal_taken_by_another_thread_still_ends_a_read(tmp_path: Path) -> None:
    """A stop or a `tether wait` signal may be taken by any thread of the job: the loop blocked in
    read() must wake all the same, or the wait (found: `tether wait` timing out after 120 s with
    every target idle) lasts until the next event."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Python runs signal handlers in the main thread only, and this test runs in another")
    handled: list[int] = []
    old = signal.signal(signal.SIGUSR2, lambda signum, _frame: handled.append(signum))
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(60,))  # a worker, idle
    other.start()
    (tmp_path / "w").mkdir()
    try:
        with Watcher(str(tmp_path / "w"), Filter()) as w:
            w.wake_on_signals()
            assert other.ident is not None
            threading.Timer(0.2, signal.pthread_kill, (other.ident, signal.SIGUSR2)).start()
            assert w.read(60) == []
            assert w.take_woken(), "read() ended by its timeout, not by the signal"
        assert handled == [signal.SIGUSR2]
        assert signal.set_wakeup_fd(-1) == -1  # closing the watcher gave the wakeup fd back
    finally:
        release.set()
        other.join(10)
        signal.signal(signal.SIGUSR2, old)
