"""The fanotify watcher against real directories: the cases of test_watch.py, and what a
filesystem mark adds (events outside the root on the same filesystem, handles resolved late).

Operations are done first and read after, as in test_watch.py: the kernel queues events as the
syscalls return, so a read that follows sees them all; no test depends on timing beyond
generous deadlines.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig.watching import batch, gather, write
from tether.errors import UsageError
from tether.fanwatch import FanWatcher, fanotify_available
from tether.filters import Filter
from tether.watch import Change, Coalescer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    reason = fanotify_available(str(r))
    if reason:
        pytest.skip(reason)
    return r


def watching(root: Path, flt: Filter | None = None) -> FanWatcher:
    w = FanWatcher(str(root), flt or Filter())
    w.start()
    return w


@pytest.fixture
def watcher(root: Path) -> Iterator[FanWatcher]:
    w = watching(root)
    yield w
    w.close()


def test_one_mark_whatever_the_tree(root: Path) -> None:
    for i in range(50):
        (root / f"d{i}" / "x").mkdir(parents=True)
    with watching(root) as w:
        assert w.watch_count == 1 and w.needed_watches() == 1 and w.fileno() >= 0
        assert not w.holding
    assert w.watch_count == 0 and w.fileno() == -1


def test_files_created_modified_chmodded_and_deleted(root: Path, watcher: FanWatcher) -> None:
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
    # merged by the kernel into one CREATE|CLOSE_WRITE|DELETE: gone now, so made then deleted
    assert Coalescer(watcher).next_batch(0.3) == [Change("delete", "tmp", created=True)]


def test_deleted_and_made_again_in_one_merged_event(root: Path, watcher: FanWatcher) -> None:
    write(root / "f")
    batch(watcher)
    os.unlink(root / "f")
    write(root / "f", b"new")  # merged into the DELETE: present now, so deleted then made
    out = batch(watcher)
    assert out[-1] == Change("write", "f", created=True) and set(out) <= {
        Change("delete", "f"),
        Change("write", "f", created=True),
    }


def test_a_file_being_written_is_not_settled(root: Path, watcher: FanWatcher) -> None:
    fd = os.open(root / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"half")
        assert gather(watcher, bool) == [Change("write", "open", created=True)]
        assert not watcher.settled
    finally:
        os.close(fd)
    assert gather(watcher, bool) == [Change("write", "open")]
    assert watcher.settled


def test_new_tree_is_reported_whole(root: Path, watcher: FanWatcher) -> None:
    os.makedirs(root / "a/b/c")
    write(root / "a/b/c/file")
    assert batch(watcher) == [Change("write", "a", is_dir=True, created=True)]
    write(root / "a/b/c/later")
    assert batch(watcher) == [Change("write", "a/b/c/later", created=True)]
    shutil.rmtree(root / "a")
    assert batch(watcher) == [Change("delete", "a", is_dir=True)]
    assert watcher.watch_count == 1


def test_rm_rf_of_a_subtree_read_after_it_is_gone(root: Path, watcher: FanWatcher) -> None:
    for d in range(5):
        for f in range(5):
            (root / f"top/d{d}/e").mkdir(parents=True, exist_ok=True)
            write(root / f"top/d{d}/e/f{f}")
    batch(watcher)
    write(root / "top/d1/e/f0", b"changed")  # its directory is gone before this is read
    shutil.rmtree(root / "top")
    assert batch(watcher) == [Change("delete", "top", is_dir=True)]


def test_renames_inside_are_one_move(root: Path, watcher: FanWatcher) -> None:
    (root / "d").mkdir()
    write(root / "d/f")
    batch(watcher)
    os.rename(root / "d/f", root / "d/g")
    assert batch(watcher) == [Change("move", "d/g", old="d/f")]
    os.rename(root / "d", root / "e")
    assert batch(watcher) == [Change("move", "e", is_dir=True, old="d")]
    write(root / "e/g", b"changed")
    assert batch(watcher) == [Change("write", "e/g")]
    (root / "x").mkdir()
    batch(watcher)
    os.rename(root / "e/g", root / "x/g")  # across directories
    assert batch(watcher) == [Change("move", "x/g", old="e/g")]


def test_dir_renamed_then_written_in_one_batch_keeps_the_order(root: Path, watcher: FanWatcher) -> None:
    (root / "d").mkdir()
    write(root / "d/old")
    batch(watcher)
    write(root / "d/before", b"1")  # resolved when read, d is e: named back to d
    os.rename(root / "d", root / "e")
    write(root / "e/after", b"2")
    out = batch(watcher)
    assert out[0] == Change("move", "e", is_dir=True, old="d")
    assert set(out[1:]) == {Change("write", "e/before", created=True), Change("write", "e/after", created=True)}


def test_dir_renamed_twice_in_one_batch(root: Path, watcher: FanWatcher) -> None:
    (root / "a/sub").mkdir(parents=True)
    batch(watcher)
    write(root / "a/sub/one")
    os.rename(root / "a", root / "b")
    write(root / "b/sub/two")
    os.rename(root / "b/sub", root / "b/moved")
    write(root / "b/moved/three")
    os.rename(root / "b", root / "c")
    assert batch(watcher) == [  # what the inotify watcher gives for the same steps
        Change("move", "b", is_dir=True, old="a"),
        Change("move", "b/moved", is_dir=True, old="b/sub"),
        Change("move", "c", is_dir=True, old="b"),
        Change("write", "c/moved/one", created=True),
        Change("write", "c/moved/two", created=True),
        Change("write", "c/moved/three", created=True),
    ]


def test_move_out_is_a_delete_and_move_in_a_write(root: Path, watcher: FanWatcher, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(root / "f")
    (root / "d").mkdir()
    batch(watcher)
    os.rename(root / "f", outside / "f")
    os.rename(root / "d", outside / "d")
    assert batch(watcher) == [Change("delete", "f"), Change("delete", "d", is_dir=True)]
    write(outside / "d/x")  # no longer ours: its events must not leak in
    os.rename(outside / "d", root / "back")
    os.rename(outside / "f", root / "g")
    assert batch(watcher) == [Change("write", "back", is_dir=True), Change("write", "g")]
    write(root / "back/y")
    assert batch(watcher) == [Change("write", "back/y", created=True)]


def test_move_out_then_recreate_keeps_the_order(root: Path, watcher: FanWatcher, tmp_path: Path) -> None:
    write(root / "f")
    batch(watcher)
    os.rename(root / "f", tmp_path / "gone")
    write(root / "f", b"new")
    assert batch(watcher) == [Change("delete", "f"), Change("write", "f", created=True)]


def test_a_name_made_again_after_a_rename_took_it_is_not_lost(root: Path, watcher: FanWatcher) -> None:
    """mkdir f; mv f g; mkdir f: the kernel merges the second CREATE into the first, which
    then comes before the rename; the path is looked at again when the batch is done."""
    os.mkdir(root / "f")
    os.rename(root / "f", root / "g")
    os.mkdir(root / "f")
    assert batch(watcher) == [
        Change("delete", "f", is_dir=True, created=True),
        Change("write", "g", is_dir=True),
        Change("write", "f", is_dir=True),  # looked at again: there now
    ]
    shutil.rmtree(root / "f")
    os.rename(root / "g", root / "f")  # the DELETE of f: the rename takes the name after it
    os.mkdir(root / "g")
    os.rmdir(root / "g")
    out = batch(watcher)
    assert [c for c in out if c.path == "f"][-1].kind != "delete", out
    assert (root / "f").is_dir() and not (root / "g").exists()


def test_events_outside_the_root_are_ignored(root: Path, watcher: FanWatcher, tmp_path: Path) -> None:
    sibling = tmp_path / "tree2"  # shares the prefix "tree"
    sibling.mkdir()
    write(sibling / "f")
    os.makedirs(sibling / "d/e")
    os.rename(sibling / "d", sibling / "d2")
    shutil.rmtree(sibling / "d2")
    os.chmod(tmp_path, 0o755)
    assert watcher.read(0.3) == []
    write(root / "mine")
    assert batch(watcher) == [Change("write", "mine", created=True)]


def test_root_metadata_and_dir_metadata(root: Path, watcher: FanWatcher) -> None:
    (root / "d").mkdir()
    batch(watcher)
    os.chmod(root, 0o750)
    os.chmod(root / "d", 0o700)
    assert batch(watcher) == [Change("write", ""), Change("write", "d")]


def test_dir_rename_under_anchored_rules_asks_for_rescan(root: Path) -> None:
    os.makedirs(root / "a/gen/x")
    with watching(root, Filter.build(exclude=["/b/gen/"])) as w:
        os.rename(root / "a", root / "b")
        assert batch(w) == [Change("rescan", "")]


def test_excluded_paths_stay_silent(root: Path) -> None:
    for d in ("build/x/y", "src/build", "src/keep"):
        os.makedirs(root / d)
    with watching(root, Filter.build(exclude=["build/", "*.tmp"])) as w:
        write(root / "build/x/y/out")
        write(root / "src/a.tmp")
        os.makedirs(root / "src/keep/build/deep")
        write(root / "src/keep/real")
        assert batch(w) == [Change("write", "src/keep/real", created=True)]
        os.rename(root / "src/keep/real", root / "src/keep/real.tmp")  # into excluded: a delete
        os.rename(root / "build/x", root / "src/x")  # out of excluded: a write
        assert batch(w) == [Change("delete", "src/keep/real"), Change("write", "src/x", is_dir=True)]


HOSTILE = [b"new\nline", b"caf\xe9", b"-rf", b"single'quote", b'double"quote', b" lead", b"sp ace"]


def test_hostile_names(root: Path, watcher: FanWatcher) -> None:
    top = os.fsencode(root)
    d = os.path.join(top, b"dir \xff\n-x")
    os.mkdir(d)
    batch(watcher)
    for name in HOSTILE:
        write(os.path.join(d, name))
    dname = os.fsdecode(b"dir \xff\n-x")
    want = [Change("write", f"{dname}/{os.fsdecode(n)}", created=True) for n in HOSTILE]
    assert batch(watcher) == want
    os.rename(os.path.join(d, b"caf\xe9"), os.path.join(top, b"\xe9t\xe9"))
    assert batch(watcher) == [Change("move", os.fsdecode(b"\xe9t\xe9"), old=f"{dname}/caf\udce9")]


def test_idle_read_blocks_for_the_timeout(watcher: FanWatcher) -> None:
    start = time.monotonic()
    assert watcher.read(0.2) == []
    assert 0.19 <= time.monotonic() - start < 30


def test_a_root_moved_away_deleted_or_swapped_is_reported_as_changed(tmp_path: Path) -> None:
    for how in ("move", "delete", "swap", "parent"):
        top = tmp_path / how
        root = top / "root"
        (root / "sub").mkdir(parents=True)
        if reason := fanotify_available(str(root)):
            pytest.skip(reason)
        with FanWatcher(str(root), Filter()) as w:
            assert not w.root_changed()
            if how == "move":
                root.rename(top / "old")
            elif how == "delete":
                shutil.rmtree(root)
            elif how == "swap":
                (top / "new").mkdir()
                root.rename(top / "old")
                (top / "new").rename(root)
            else:  # a folder holding the root moved
                top.rename(tmp_path / f"{how}.old")
            assert w.root_changed(), how
            assert Change("rescan", "") in gather(w, bool), how
            assert w.root_changed(), how


def test_a_symlinked_root_is_watched_where_it_leads(tmp_path: Path) -> None:
    (tmp_path / "releases" / "1" / "sub").mkdir(parents=True)
    (tmp_path / "releases" / "2").mkdir()
    os.symlink("releases/1", tmp_path / "current")
    if reason := fanotify_available(str(tmp_path / "current")):
        pytest.skip(reason)
    with FanWatcher(str(tmp_path / "current"), Filter()) as w:
        (tmp_path / "releases" / "1" / "sub" / "x").write_text("x")
        assert Change("write", "sub/x", created=True) in gather(w, bool)
        assert not w.root_changed()
        os.symlink("releases/2", tmp_path / "next")
        os.rename(tmp_path / "next", tmp_path / "current")
        assert Change("rescan", "") in gather(w, bool)
        assert w.root_changed()


def test_wake_ends_an_untimed_wait_and_a_timeout_is_not_a_wake(root: Path) -> None:
    with FanWatcher(str(root), Filter()) as w:
        assert w.read(0.05) == [] and not w.take_woken()
        threading.Timer(0.1, w.wake).start()
        assert w.read(None) == []
        assert w.take_woken() and not w.take_woken()


def test_a_small_cache_still_resolves(root: Path) -> None:
    with FanWatcher(str(root), Filter(), cache_size=2) as w:
        for i in range(6):
            (root / f"d{i}").mkdir()
        batch(w)
        for i in range(6):
            write(root / f"d{i}/f")
        assert batch(w) == [Change("write", f"d{i}/f", created=True) for i in range(6)]


def test_burst_below_the_queue_limit_reports_every_file(root: Path, watcher: FanWatcher) -> None:
    for i in range(20):
        (root / f"burst/d{i}").mkdir(parents=True)
    batch(watcher)
    files = {f"burst/d{i % 20}/f{i}" for i in range(2000)}
    for p in files:
        write(root / p)
    out: list[Change] = []
    c = Coalescer(watcher, delay=0.2)
    while got := c.next_batch(0.5):
        out += got
    assert Change("rescan", "") not in out
    assert files == {c.path for c in out} and all(c.kind == "write" for c in out)


def test_a_filesystem_without_file_ids_is_refused_with_its_path() -> None:
    reason = fanotify_available("/proc")
    if reason is None or "CAP_SYS_ADMIN" in reason:
        pytest.skip(f"cannot check here: {reason or '/proc takes a fanotify mark'}")
    assert "/proc" in reason and "file ids" in reason
    w = FanWatcher("/proc", Filter())
    with pytest.raises(UsageError) as err:
        w.start()
    assert "/proc" in err.value.message and err.value.hint and err.value.code == 2
    assert w.fileno() == -1
    w.close()


def test_without_cap_sys_admin_the_reason_says_so(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        reason = fanotify_available(str(tmp_path))
    else:  # drop root in a child: the module is loaded already, nothing to read as nobody
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                os.write(w, (fanotify_available(str(tmp_path)) or "").encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            reason = f.read().decode()
        os.waitpid(pid, 0)
    assert reason and "CAP_SYS_ADMIN" in reason and "run as root" in reason
