"""The agent's operations in-process: atomic writes, confinement to the root, hostile names.

Ops is the code that runs on the far side too, so these tests cover the remote agent's
behaviour without ssh; the framing is exercised through `serve` on in-memory streams.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import errno
import io
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.rig.run import find_named
from tests.rig.trees import HOSTILE_NAMES
from tether import agent_remote
from tether.agent_remote import (
    MAGIC,
    PROTOCOL_VERSION,
    TMP_PREFIX,
    VERSIONS,
    OpError,
    Ops,
    dispatch,
    encode_frame,
    read_frame,
    serve,
    show,
    to_bytes,
    to_wire,
    version_name,
)
from tether.transport.agent import AgentClient, AgentError

MTIME = 1_600_000_000_123_456_789


@pytest.fixture
def root(tmp_path: Path) -> bytes:
    r = tmp_path / "root"
    r.mkdir()
    return os.fsencode(r)


@pytest.fixture
def ops(root: bytes) -> Ops:
    return Ops(root)


def j(root: bytes, *parts: bytes) -> bytes:
    return os.path.join(root, *parts)


def read(path: bytes) -> bytes:
    return Path(os.fsdecode(path)).read_bytes()


def leftovers(root: bytes) -> list[bytes]:
    """Temp files anywhere under root: there must never be any after an operation."""
    return [n for _, dirs, files in os.walk(root) for n in dirs + files if n.startswith(TMP_PREFIX)]


# ---------------------------------------------------------------------- put


def test_put_writes_content_mode_mtime_and_parents(ops: Ops, root: bytes) -> None:
    ops.put(b"a/b/c.txt", b"hello", 0o640, MTIME)
    p = j(root, b"a/b/c.txt")
    st_ = os.lstat(p)
    assert read(p) == b"hello"
    assert stat.S_IMODE(st_.st_mode) == 0o640 and st_.st_mtime_ns == MTIME
    assert stat.S_IMODE(os.lstat(j(root, b"a")).st_mode) == 0o755
    assert leftovers(root) == []


def test_put_replaces_by_rename_so_readers_see_old_or_new(ops: Ops, root: bytes) -> None:
    ops.put(b"f", b"old", 0o644, MTIME)
    before = os.lstat(j(root, b"f")).st_ino
    with open(j(root, b"f"), "rb") as reader:  # an open reader keeps the old, complete content
        ops.put(b"f", b"new", 0o600, MTIME)
        assert reader.read() == b"old"
    assert read(j(root, b"f")) == b"new"
    assert os.lstat(j(root, b"f")).st_ino != before


def test_put_of_empty_file_and_owner(ops: Ops, root: bytes) -> None:
    ops.put(b"empty", b"", 0o644, MTIME, uid=os.getuid(), gid=os.getgid())
    assert os.lstat(j(root, b"empty")).st_size == 0


def test_put_over_a_directory_is_an_error(ops: Ops, root: bytes) -> None:
    os.mkdir(j(root, b"d"))
    with pytest.raises(OpError) as e:
        ops.put(b"d", b"x", 0o644, MTIME)
    assert e.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert leftovers(root) == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[bytes]:
    """A 64 KiB tmpfs, so that a write fails with ENOSPC half-way."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to provoke ENOSPC (needs root): {r.stderr.strip()}")
    try:
        yield os.fsencode(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_put_that_runs_out_of_space_leaves_neither_temp_nor_final_file(tiny_fs: bytes) -> None:
    ops = Ops(tiny_fs)
    ops.put(b"keep", b"old content", 0o644, MTIME)
    for name in (b"new", b"keep"):
        with pytest.raises(OpError) as e:
            ops.put(name, os.urandom(1 << 20), 0o644, MTIME)
        assert e.value.errno == errno.ENOSPC
        assert "No space left" in e.value.message and name.decode() in e.value.message
    assert sorted(os.listdir(tiny_fs)) == [b"keep"]  # no temp, no half-written "new"
    assert read(j(tiny_fs, b"keep")) == b"old content"


# ---------------------------------------------------------------------- confinement

BAD_PATHS = [b"../x", b"/abs", b"/etc/passwd", b"a/../../x", b"a/./b", b"a//b", b"a/", b".", b"..", b"", b"a\0b"]


@pytest.mark.parametrize("bad", BAD_PATHS, ids=repr)
def test_paths_that_could_leave_the_root_are_refused_by_every_op(ops: Ops, root: bytes, bad: bytes) -> None:
    os.mkdir(j(root, b"a"))
    ops.put(b"ok", b"1", 0o644, MTIME)
    calls = [
        lambda: ops.put(bad, b"x", 0o644, MTIME),
        lambda: ops.symlink(bad, b"t", MTIME),
        lambda: ops.mkdir(bad, 0o755, None),
        lambda: ops.set_meta(bad, 0o700, None),
        lambda: ops.move(bad, b"z"),
        lambda: ops.move(b"ok", bad),
        lambda: ops.remove([bad]),
        lambda: ops.trash([bad], b".tether/trash"),
        lambda: ops.trash([b"ok"], bad),
        lambda: ops.stat([bad]),
    ]
    for call in calls:
        with pytest.raises(OpError) as e:
            call()
        assert e.value.errno == errno.EINVAL and "refused" in e.value.message
    assert os.path.lexists(j(root, b"ok"))  # a refused batch touched nothing
    assert sorted(os.listdir(os.path.dirname(root))) == [b"root"]


def test_a_symlinked_parent_is_never_followed(ops: Ops, root: bytes, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    os.symlink(outside, j(root, b"evil"))
    os.symlink(b"/", j(root, b"slash"))
    os.mkdir(j(root, b"a"))
    os.symlink(outside, j(root, b"a/evil"))

    for path in (b"evil/x", b"slash/etc/tether-agent-test", b"a/evil/x", b"evil/sub/x"):
        with pytest.raises(OpError) as e:
            ops.put(path, b"x", 0o644, MTIME)
        assert e.value.errno == errno.ELOOP and "symlink" in e.value.message
        with pytest.raises(OpError):
            ops.symlink(path, b"t", MTIME)
        with pytest.raises(OpError):
            ops.mkdir(path, 0o755, MTIME)
        with pytest.raises(OpError):
            ops.move(b"a", path)
    assert not os.path.lexists("/etc/tether-agent-test")

    victim = b"evil/victim"  # lookups through the link see nothing there
    assert ops.stat([victim]) == [{"type": None}]
    assert ops.remove([victim])["missing"] == 1
    assert ops.move(victim, b"stolen") == {"moved": False, "reason": "missing"}
    assert ops.trash([victim], b".tether/trash")["missing"] == 1
    with pytest.raises(OpError):
        ops.set_meta(victim, 0o777, None)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "keep" and stat.S_IMODE((outside / "victim").stat().st_mode) != 0o777


def test_a_file_in_a_parent_position_is_an_error_not_a_crash(ops: Ops) -> None:
    ops.put(b"file", b"x", 0o644, MTIME)
    with pytest.raises(OpError) as e:
        ops.put(b"file/child", b"x", 0o644, MTIME)
    assert e.value.errno == errno.ENOTDIR
    assert ops.stat([b"file/child"]) == [{"type": None}]


# ---------------------------------------------------------------------- hostile names


def test_hostile_names_survive_put_move_trash_remove(ops: Ops, root: bytes, tmp_path: Path) -> None:
    names = [*HOSTILE_NAMES, b"-leading-dash", b"$(touch pwned)"]
    for i, name in enumerate(dict.fromkeys(names)):
        d = b"d%d/" % i
        ops.put(d + name, name, 0o644, MTIME)
        assert read(j(root, d + name)) == name
        assert ops.move(d + name, d + b"moved/" + name)["moved"] is True
        ops.put(d + b"sub/" + name, b"t", 0o600, MTIME)
        t = ops.trash([d + b"moved/" + name], b".tether/trash")
        assert t["trashed"] == 1 and t["failed"] == [], t
        assert os.path.lexists(j(root, to_bytes(t["dests"][0])))
        assert ops.remove([d + b"sub/" + name, d + b"sub", d + b"moved"]) == {"removed": 3, "missing": 0, "failed": []}
        assert os.listdir(j(root, d)) == []
    for place in (tmp_path, Path.cwd()):
        assert find_named(place, b"pwned") == []


@given(st.binary(max_size=64))
def test_any_bytes_survive_the_json_wire(raw: bytes) -> None:
    header = json.loads(encode_frame({"p": raw})[8:].decode("ascii"))
    assert to_bytes(header["p"]) == raw and to_wire(raw) == header["p"]


# ---------------------------------------------------------------------- move, remove


def test_move_dir_creates_parents_and_replaces_an_existing_dir(ops: Ops, root: bytes) -> None:
    ops.put(b"src/a.txt", b"a", 0o644, MTIME)
    ops.put(b"src/deep/b.txt", b"b", 0o644, MTIME)
    ops.put(b"x/y/dst/stale.txt", b"stale", 0o644, MTIME)
    assert ops.move(b"src", b"x/y/dst")["type"] == "d"  # what was moved, for the caller to check
    assert not os.path.lexists(j(root, b"src"))
    assert sorted(os.listdir(j(root, b"x/y/dst"))) == [b"a.txt", b"deep"]
    assert ops.move(b"nope", b"z") == {"moved": False, "reason": "missing"}
    assert ops.move(b"x/y/dst/a.txt", b"x/y/dst/a.txt") == {"moved": True}


def test_move_replaces_across_kinds_and_refuses_moving_into_itself(ops: Ops, root: bytes) -> None:
    ops.put(b"f", b"file", 0o644, MTIME)
    ops.put(b"d/inner", b"i", 0o644, MTIME)
    # a file replaces a dir: the target equals the source; the reply says what was moved
    assert ops.move(b"f", b"d") == {"moved": True, "type": "f", "size": 4, "mtime_ns": MTIME}
    assert read(j(root, b"d")) == b"file"
    ops.put(b"e/inner", b"i", 0o644, MTIME)
    with pytest.raises(OpError) as e:
        ops.move(b"e", b"e/inner/x")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OpError):
        ops.move(b"e/inner", b"e")
    assert os.path.lexists(j(root, b"e/inner"))


def test_remove_unlinks_a_symlink_to_a_dir_and_never_descends(ops: Ops, root: bytes, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "f").write_text("keep")
    os.symlink(outside, j(root, b"link"))
    ops.put(b"tree/a/b/c", b"x", 0o644, MTIME)
    os.symlink(outside, j(root, b"tree/a/link-inside"))
    os.symlink(b"sub", j(root, b"tree/dangling-ish"))
    r = ops.remove([b"link", b"tree", b"never-there", b"missing/parent/x"])
    assert r == {"removed": 2, "missing": 2, "failed": []}
    assert os.listdir(root) == []
    assert (outside / "sub" / "f").read_text() == "keep"


def test_remove_of_a_deep_tree_does_not_recurse_in_python(ops: Ops, root: bytes) -> None:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(1200):  # deeper than the recursion limit, built without recursion
        os.mkdir(b"d", dir_fd=fd)
        fd, old = os.open(b"d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)
    assert ops.remove([b"d"])["removed"] == 1
    assert os.listdir(root) == []


# ---------------------------------------------------------------------- trash


S = "20261206-101112"  # the stamp every version takes in these tests (see `stamp`)


@pytest.fixture
def stamp(monkeypatch: pytest.MonkeyPatch) -> str:
    """One fixed second for every version kept: the names are then known exactly."""
    monkeypatch.setattr(agent_remote, "version_stamp", lambda when=None: S.encode())
    return S


def test_trash_keeps_the_relative_path_in_the_versions_tree_and_numbers_a_taken_second(
    ops: Ops, root: bytes, stamp: str
) -> None:
    dests = []
    for content in (b"1", b"2", b"3"):
        ops.put(b"docs/report.txt", content, 0o644, MTIME)
        r = ops.trash([b"docs/report.txt", b"docs/gone"], VERSIONS)
        assert (r["trashed"], r["missing"]) == (1, 1)
        dests += r["dests"]
    assert dests == [
        f".tether/versions/docs/report~{S}~deleted.txt",
        f".tether/versions/docs/report~{S}-1~deleted.txt",
        f".tether/versions/docs/report~{S}-2~deleted.txt",
    ]
    assert [read(j(root, os.fsencode(d))) for d in dests] == [b"1", b"2", b"3"]
    ops.put(b".bashrc", b"x", 0o644, MTIME)
    assert ops.trash([b".bashrc"], VERSIONS)["dests"] == [f".tether/versions/.bashrc~{S}~deleted"]
    ops.put(b"d/a.tar.gz", b"x", 0o644, MTIME)
    assert ops.trash([b"d/a.tar.gz"], VERSIONS)["dests"] == [f".tether/versions/d/a.tar~{S}~deleted.gz"]
    with pytest.raises(OpError):
        ops.trash([b".tether/versions"], VERSIONS)
    with pytest.raises(OpError):
        ops.trash([b"x"], VERSIONS, why="because")


@pytest.mark.parametrize(
    "name",
    [
        b"report.txt",
        b".bashrc",
        b"a.tar.gz",
        b"no-ext",
        b"x~20260101-000000~deleted.txt",
        b"odd.",
        b"a.b.c.d.e" * 30,
        b"n" * 255,
        b"caf\xe9 \n.txt",
        b"-x",
        b"a.1",
    ],
)
def test_a_version_name_reads_back_to_the_file_it_keeps(name: bytes) -> None:
    from tether.agent_remote import parse_version

    for n in (0, 1, 12):
        for why in (b"deleted", b"replaced", b"conflict"):
            kept = version_name(name, why, S.encode(), n)
            assert len(kept) <= 255
            got = parse_version(kept)
            assert got is not None
            assert got[1:] == (S.encode(), n, why)
            assert got[0] == name or (len(name) > 200 and name.startswith(got[0][:150]))  # long stems lose their end
    assert parse_version(b"report.txt") is None and parse_version(b"a~2026~deleted") is None


@given(st.one_of(st.binary(min_size=1, max_size=40), st.binary(min_size=180, max_size=255)),
       st.sampled_from([b"deleted", b"replaced", b"conflict"]), st.integers(0, 10**7))  # fmt: skip
@example(b"n" * 255, b"conflict", 10**7)
@example(b"s" * 230 + b".longer-ext", b"deleted", 0)
def test_every_version_of_a_name_starts_with_its_stem_the_prefix_a_prune_lists_by(
    name: bytes, why: bytes, n: int
) -> None:
    """Keeping a version parses only the names in its folder that start with the file's stem: a
    version of the file that did not would be missed by the count to keep."""
    assert version_name(name, why, S.encode(), n).startswith(agent_remote._version_stem(name))


def test_trash_a_name_at_name_max_still_gets_a_free_name(ops: Ops, root: bytes) -> None:
    name = b"n" * 255
    for _ in range(2):
        ops.put(name, b"x", 0o644, MTIME)
        r = ops.trash([name], b"trash")
        assert r["trashed"] == 1, r
    assert sorted(len(n) for n in os.listdir(j(root, b"trash"))) == [255, 255]


def test_prune_versions_drops_old_days_and_all_but_the_newest_of_each_path(ops: Ops, root: bytes) -> None:
    today = datetime.date.today()

    def ago(days: int) -> bytes:
        return (today - datetime.timedelta(days=days)).strftime("%Y%m%d").encode() + b"-120000"

    v = VERSIONS + b"/"
    kept = [version_name(b"a.txt", b"replaced", ago(d)) for d in (1, 0)]
    for name in [version_name(b"a.txt", b"deleted", ago(31)), version_name(b"a.txt", b"replaced", ago(29)), *kept]:
        ops.put(v + b"d/" + name, name, 0o644, MTIME)
    ops.put(v + b"d/notes", b"not a version: stays", 0o644, MTIME)
    ops.put(v + b"old/" + version_name(b"b", b"deleted", ago(31)), b"b", 0o644, MTIME)
    ops.put(
        v + version_name(b"w", b"deleted", ago(31)) + b"/in~" + ago(0) + b"~deleted",
        b"in a dir kept whole",
        0o644,
        MTIME,
    )
    old_day = (today - datetime.timedelta(days=31)).isoformat().encode()
    ops.put(b".tether/trash/" + old_day + b"/f", b"older layout", 0o644, MTIME)
    ops.put(b".tether/trash/" + today.isoformat().encode() + b"/f", b"older layout, recent", 0o644, MTIME)
    os.symlink(b"/", j(root, b".tether/trash/1999-01-01"))  # a dated symlink is unlinked, never followed
    assert ops.prune_versions(VERSIONS, 30, keep=2) == {"pruned": 6}
    assert sorted(os.listdir(j(root, v + b"d"))) == sorted([*kept, b"notes"])
    assert os.listdir(j(root, VERSIONS)) == [b"d"]  # the emptied folders went too
    assert os.listdir(j(root, b".tether/trash")) == [today.isoformat().encode()]
    assert ops.prune_versions(VERSIONS, None, keep=1) == {"pruned": 1}  # by count only: never by age
    assert sorted(os.listdir(j(root, v + b"d"))) == [kept[1], b"notes"]
    assert ops.prune_versions(b"no-versions-yet", 30) == {"pruned": 0}


def test_with_trash_on_put_symlink_and_move_keep_what_they_replace(ops: Ops, root: bytes, stamp: str) -> None:
    t = VERSIONS
    ops.put(b"d/a.txt", b"1", 0o644, MTIME)
    ops.put(b"d/a.txt", b"2", 0o644, MTIME, trash_root=t)
    ops.put(b"d/a.txt", b"2", 0o644, MTIME, trash_root=t)  # the same bytes again: nothing is lost
    ops.put(b"d/a.txt", b"3", 0o644, MTIME, trash_root=t)
    ops.put(b"d/b.txt", b"b", 0o644, MTIME)
    ops.move(b"d/b.txt", b"d/a.txt", trash_root=t)  # onto an existing name
    ops.symlink(b"d/a.txt", b"elsewhere", MTIME, trash_root=t)
    ops.symlink(b"d/a.txt", b"elsewhere", MTIME, trash_root=t)  # the same link again
    ops.put(b"e/x", b"x", 0o644, MTIME)
    ops.put(b"f", b"f", 0o644, MTIME)
    ops.move(b"f", b"e", trash_root=t)  # a file over a directory: the directory is kept whole
    kept = j(root, t)
    names = [f"a~{S}{n}~replaced.txt".encode() for n in ("", "-1", "-2", "-3")]
    assert sorted(os.listdir(j(kept, b"d"))) == sorted(names)
    assert [read(j(kept, b"d", n)) for n in names] == [b"1", b"2", b"3", b"b"]
    assert os.readlink(j(root, b"d/a.txt")) == b"elsewhere"
    assert read(j(kept, f"e~{S}~replaced/x".encode())) == b"x" and read(j(root, b"e")) == b"f"
    ops.put(b"g", b"1", 0o644, MTIME)
    ops.put(b"g", b"2", 0o644, MTIME)  # without trash_root: replaced, nothing kept
    assert not [n for n in os.listdir(kept) if n.startswith(b"g")]


def test_fold_trash_files_rsyncs_kept_versions_and_never_replaces_one(ops: Ops, root: bytes, stamp: str) -> None:
    t = VERSIONS
    for version in (b"1", b"2"):
        ops.put(b"a/b.txt", version, 0o644, MTIME)
        ops.trash([b"a/b.txt"], t)
    runs = agent_remote.INCOMING + b"/"  # one folder per rsync run (its --backup-dir), named by its start
    ops.put(runs + b"0002-9/a/b.txt", b"4", 0o644, MTIME)
    ops.put(runs + b"0001-9/a/b.txt", b"3", 0o644, MTIME)
    ops.put(runs + b"0001-9/a/deep/c", b"c", 0o644, MTIME)
    os.symlink(b"/etc", j(root, runs + b"0001-9/link"))
    ops.put(t + b"/x", b"a file where a dir is wanted (made by hand)", 0o644, MTIME)
    ops.put(runs + b"0002-9/x/y", b"y", 0o644, MTIME)
    ops.put(b"a/here", b"new", 0o644, MTIME)
    ops.put(runs + b"0002-9/a/here", b"old", 0o644, MTIME)  # still on the target: a replaced version
    r = ops.fold_trash(agent_remote.INCOMING, t)
    assert (r["folded"], r["failed"]) == (6, [])
    kept = j(root, t)
    names = [f"a/b~{S}{n}~deleted.txt" for n in ("", "-1", "-2", "-3")]
    names += [f"a/deep/c~{S}~deleted", f"x.1/y~{S}~deleted", f"a/here~{S}~replaced"]
    assert [read(j(kept, n.encode())) for n in names] == [b"1", b"2", b"3", b"4", b"c", b"y", b"old"]
    assert os.readlink(j(kept, f"link~{S}~deleted".encode())) == b"/etc"
    assert os.listdir(j(root, agent_remote.INCOMING)) == []
    assert ops.fold_trash(b"nothing/here", t) == {"folded": 0, "failed": []}


def test_versions_of_one_path_kept_in_one_second_are_numbered_in_order_whatever_kept_them(
    ops: Ops, root: bytes, stamp: str
) -> None:
    from tether.versions import scan_local

    ops.put(b"n.txt", b"1", 0o644, MTIME)
    ops.put(b"n.txt", b"2", 0o644, MTIME, trash_root=VERSIONS)  # replaced
    ops.trash([b"n.txt"], VERSIONS)  # then deleted, the same second
    assert sorted(os.listdir(j(root, VERSIONS))) == [f"n~{S}-1~deleted.txt".encode(), f"n~{S}~replaced.txt".encode()]
    assert [(v.origin, read(j(root, v.stored))) for v in scan_local(root)] == [("replaced", b"1"), ("deleted", b"2")]


def test_what_an_older_release_s_interrupted_run_left_is_filed_too(ops: Ops, root: bytes, stamp: str) -> None:
    ops.put(b".tether/trash/.incoming/0001-9/d/old.txt", b"kept by an older rsync run", 0o644, MTIME)
    r = ops.fold_trash(agent_remote.INCOMING, VERSIONS)
    assert (r["folded"], r["failed"]) == (1, [])
    assert read(j(root, VERSIONS + f"/d/old~{S}~deleted.txt".encode())) == b"kept by an older rsync run"
    assert os.listdir(j(root, b".tether/trash/.incoming")) == []


def test_a_run_s_versions_take_the_run_s_start_as_their_time(ops: Ops, root: bytes) -> None:
    start = time.time() - 3 * 86400
    run = f"{int(start * 1e9):016x}-9".encode()
    ops.put(agent_remote.INCOMING + b"/" + run + b"/f", b"old", 0o644, MTIME)
    ops.fold_trash(agent_remote.INCOMING, VERSIONS)
    (name,) = os.listdir(j(root, VERSIONS))
    assert name == b"f~" + time.strftime("%Y%m%d-%H%M%S", time.localtime(start)).encode() + b"~deleted"


def test_keeping_a_version_never_replaces_one_another_process_kept_meanwhile(
    ops: Ops, root: bytes, monkeypatch: pytest.MonkeyPatch, stamp: str
) -> None:
    """Two writers keep versions in one tree (a `tether sync` beside the running job files the
    same incoming run): the other one takes the free name this one just looked up, before this
    one moves its version there. Both versions stay, under two names."""
    t = VERSIONS
    looked_up = agent_remote._free_name
    race = {"on": False}

    def taken_meanwhile(dfd: int, name: bytes, naming: Any = None, taken: Any = None) -> bytes:
        free = looked_up(dfd, name, naming, taken)
        if race["on"]:  # the other writer files its version there now (once per operation)
            race["on"] = False
            fd = os.open(free, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
            os.write(fd, b"theirs")
            os.close(fd)
        return free

    monkeypatch.setattr(agent_remote, "_free_name", taken_meanwhile)
    ops.put(b"x", b"deleted", 0o644, MTIME)
    ops.put(b"w/in", b"in a deleted dir", 0o644, MTIME)
    ops.put(agent_remote.INCOMING + b"/0001-9/y", b"kept by rsync", 0o644, MTIME)
    ops.put(b"z", b"replaced", 0o644, MTIME)
    ops.put(b"v", b"overwritten", 0o644, MTIME)  # bisync's install, with a count to keep: its look is a listing
    v_was = ops.entry(b"v")["entry"]
    for op in (lambda: ops.trash([b"x"], t), lambda: ops.trash([b"w"], t),
               lambda: ops.fold_trash(agent_remote.INCOMING, t),
               lambda: ops.put(b"z", b"new", 0o644, MTIME, trash_root=t),
               lambda: ops.install(b"v", "f", v_was, t, data=b"new v", keep=10)):  # fmt: skip
        race["on"] = True
        op()
    kept = j(root, t)
    theirs = [f"x~{S}~deleted", f"w~{S}~deleted", f"y~{S}~deleted", f"z~{S}~replaced", f"v~{S}~replaced"]
    assert [read(j(kept, n.encode())) for n in theirs] == [b"theirs"] * 5
    mine = [f"x~{S}-1~deleted", f"w~{S}-1~deleted/in", f"y~{S}-1~deleted", f"z~{S}-1~replaced", f"v~{S}-1~replaced"]
    assert [read(j(kept, n.encode())) for n in mine] == [
        b"deleted", b"in a deleted dir", b"kept by rsync", b"replaced", b"overwritten"
    ]  # fmt: skip
    assert read(j(root, b"z")) == b"new"
    assert read(j(root, b"v")) == b"new v"
    assert not [n for n in os.listdir(kept) if n.startswith(agent_remote.TMP_PREFIX)]


def test_a_folder_s_versions_sit_beside_a_file_of_its_name_kept_before(ops: Ops, root: bytes, stamp: str) -> None:
    ops.put(b"a", b"file a", 0o644, MTIME)
    assert ops.trash([b"a"], b"t")["dests"] == [f"t/a~{S}~deleted"]
    ops.put(b"a/x", b"x", 0o644, MTIME)
    assert ops.trash([b"a/x"], b"t")["dests"] == [f"t/a/x~{S}~deleted"]


# ---------------------------------------------------------------------- symlink, mkdir, set_meta, stat


def test_symlink_replaces_atomically_and_sets_its_own_mtime(ops: Ops, root: bytes) -> None:
    ops.put(b"l", b"a file first", 0o644, MTIME)
    ops.symlink(b"l", b"../../etc/passwd", MTIME)  # the target is data, never resolved
    assert os.readlink(j(root, b"l")) == b"../../etc/passwd"
    assert os.lstat(j(root, b"l")).st_mtime_ns == MTIME
    ops.symlink(b"l", b"caf\xe9", None)
    assert os.readlink(j(root, b"l")) == b"caf\xe9"
    assert leftovers(root) == []


def test_mkdir_and_set_meta_never_follow_symlinks(ops: Ops, root: bytes, tmp_path: Path) -> None:
    assert ops.mkdir(b"a/b", 0o700, MTIME) == {"created": True}
    assert ops.mkdir(b"a/b", 0o750, None) == {"created": False}
    assert stat.S_IMODE(os.lstat(j(root, b"a/b")).st_mode) == 0o750
    ops.put(b"a/b/f", b"x", 0o644, MTIME)
    ops.set_meta(b"a/b", None, MTIME)
    assert os.lstat(j(root, b"a/b")).st_mtime_ns == MTIME
    target = tmp_path / "target"
    target.write_text("t")
    target.chmod(0o644)
    os.symlink(target, j(root, b"ln"))
    ops.set_meta(b"ln", 0o777, MTIME)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.lstat(j(root, b"ln")).st_mtime_ns == MTIME
    with pytest.raises(OpError):
        ops.mkdir(b"ln", 0o755, None)  # a symlink holds the name: not a directory
    assert ops.stat([b"a/b", b"a/b/f", b"ln", b"none"]) == [
        {"type": "d", "size": os.lstat(j(root, b"a/b")).st_size, "mtime_ns": MTIME, "mode": 0o750},
        {"type": "f", "size": 1, "mtime_ns": MTIME, "mode": 0o644},
        {"type": "l", "size": len(os.fsencode(target)), "mtime_ns": MTIME, "mode": 0o777},
        {"type": None},
    ]


# ---------------------------------------------------------------------- run, df, hello, dispatch


def test_run_passes_arguments_as_data_in_the_root(ops: Ops, root: bytes, tmp_path: Path) -> None:
    r = ops.run([b"sh", b"-c", b'printf "%s|" "$@"; pwd; cat', b"sh", b"$(touch pwned)", b"caf\xe9"], 10)
    assert r["rc"] == 0 and not r["timed_out"]
    assert to_bytes(r["stdout"]) == b"$(touch pwned)|caf\xe9|" + root + b"\n"  # stdin is closed: cat got EOF
    assert find_named(tmp_path, b"pwned") == []
    with pytest.raises(OpError) as e:
        ops.run([b"no-such-program-tether"], 5)
    assert e.value.errno == errno.ENOENT
    assert ops.run([b"sleep", b"5"], 0.05)["timed_out"] is True


def test_run_adds_the_given_environment_to_the_agents(ops: Ops) -> None:
    r = ops.run([b"sh", b"-c", b'printf "%s %s" "$TETHER_JOB" "${PATH:+has-path}"'], 10, {"TETHER_JOB": "a b;c"})
    assert to_bytes(r["stdout"]) == b"a b;c has-path"  # a hook's variables beside the agent's own PATH


def test_run_returns_when_its_program_ends_though_a_daemon_it_left_holds_the_output(ops: Ops) -> None:
    """A far-side hook that starts a daemon (`sleep 300 &` here) ends when the hook does; read
    through pipes, the agent waited for the daemon, or the hook's timeout."""
    r = ops.run([b"sh", b"-c", b"sleep 300 & echo $!; echo said >&2"], 60)
    pid = int(to_bytes(r["stdout"]))
    try:
        assert r["rc"] == 0 and not r["timed_out"] and to_bytes(r["stderr"]) == b"said\n"
        os.kill(pid, 0)  # still there: the run did not wait for it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_df_hello_and_version_mismatch(ops: Ops, root: bytes) -> None:
    d = ops.df()
    assert 0 <= d["free"] <= d["total"] and d["total"] > 0
    assert ops.hello(PROTOCOL_VERSION)["version"] == PROTOCOL_VERSION
    with pytest.raises(OpError, match="protocol version mismatch"):
        ops.hello(PROTOCOL_VERSION + 1)


def test_dispatch_reports_every_failure_instead_of_raising(ops: Ops) -> None:
    assert dispatch(ops, "nope", {}, b"")["ok"] is False
    bad_args = dispatch(ops, "put", {"path": "x", "mode": "rw"}, b"x")
    assert bad_args["ok"] is False and "TypeError" in bad_args["error"]
    missing_arg = dispatch(ops, "move", {"old": "a"}, b"")
    assert missing_arg["ok"] is False
    assert dispatch(ops, "stat", {"paths": ["nothing"]}, b"") == {"ok": True, "result": {"entries": [{"type": None}]}}


def _frames(*msgs: tuple[dict[str, object], bytes]) -> io.BytesIO:
    return io.BytesIO(b"".join(encode_frame(h, b) for h, b in msgs))


def test_serve_speaks_the_framing_and_survives_bad_requests(tmp_path: Path) -> None:
    root = tmp_path / "new-root"
    name = "caf\udce9/\n$(x)"  # non-UTF-8 bytes as the wire carries them
    inp = _frames(
        ({"id": 0, "op": "hello", "args": {"version": PROTOCOL_VERSION, "root": str(root), "create": True}}, b""),
        ({"id": 1, "op": "put", "args": {"path": name, "mode": 0o600, "mtime_ns": MTIME}}, b"\x00data\xff"),
        ({"id": 2, "op": "put", "args": {"path": "../escape", "mode": 0o600}}, b"x"),
        ({"id": 3, "op": "stat", "args": {"paths": [name]}}, b""),
    )
    out = io.BytesIO()
    assert serve(inp, out) == 0
    out.seek(0)
    assert out.read(len(MAGIC)) == MAGIC
    replies = []
    while (frame := read_frame(out)) is not None:
        replies.append(frame[0])
    assert [r["id"] for r in replies] == [0, 1, 2, 3]
    assert [r["ok"] for r in replies] == [True, True, False, True]
    assert replies[2]["errno"] == errno.EINVAL
    assert replies[3]["result"]["entries"][0]["size"] == 6
    assert (root / os.fsdecode(b"caf\xe9") / "\n$(x)").read_bytes() == b"\x00data\xff"


def test_serve_refuses_to_start_without_a_valid_hello(tmp_path: Path) -> None:
    for first in (
        {"id": 0, "op": "put", "args": {"path": "x"}},
        {"id": 0, "op": "hello", "args": {"version": PROTOCOL_VERSION + 1, "root": str(tmp_path)}},
        {"id": 0, "op": "hello", "args": {"version": PROTOCOL_VERSION, "root": str(tmp_path / "missing")}},
    ):
        out = io.BytesIO()
        assert serve(_frames((first, b"")), out) == 2
        out.seek(len(MAGIC))
        frame = read_frame(out)
        assert frame is not None and frame[0]["ok"] is False, first
    assert not (tmp_path / "missing").exists()


def test_the_far_side_program_parses_as_python_3_8_and_imports_only_stdlib() -> None:
    source = Path(agent_remote.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "tether" not in imported
    assert imported <= {"__future__", "collections", "contextlib", "ctypes", "datetime", "errno", "fcntl", "hashlib",
                        "grp", "json", "marshal", "os", "pwd", "re", "select", "socket", "stat", "struct",
                        "subprocess", "sys", "tempfile", "time", "typing"}  # fmt: skip


# ---------------------------------------------------------------------- the in-process client


def test_local_client_has_the_same_call_and_pipeline_api(tmp_path: Path) -> None:
    with AgentClient.local(str(tmp_path / "target"), create=True) as client:
        assert client.info["version"] == PROTOCOL_VERSION
        assert client.call("put", b"data", path=b"dir/caf\xe9", mode=0o644, mtime_ns=MTIME) == {"size": 4}
        replies = client.pipeline(
            [("put", {"path": f"p/{i}", "mode": 0o600}, b"x" * i) for i in range(5)]
            + [("remove", {"paths": ["/abs"]}, b"")]
        )
        assert replies[:5] == [{"size": i} for i in range(5)]
        assert isinstance(replies[5], AgentError) and replies[5].errno == errno.EINVAL
        with pytest.raises(AgentError, match="refused"):
            client.call("put", b"x", path="../x", mode=0o644)
        assert client.call("stat", paths=[b"dir/caf\xe9"])["entries"][0]["type"] == "f"
    with pytest.raises(AgentError):
        AgentClient.local(str(tmp_path / "absent"))


def test_the_bootstrap_runs_the_compiled_agent_or_falls_back_to_source(tmp_path: Path) -> None:
    """A far side with another Python version must not exec our bytecode: it compiles the source."""
    import subprocess
    import sys
    import zlib

    from tether.transport import agent as agent_mod

    def sized(packed: bytes) -> bytes:
        return len(packed).to_bytes(4, "big") + packed

    good = agent_mod._payload()
    raw = zlib.decompress(good[4:])
    other = sized(zlib.compress(b"\x02\x07" + raw[2:]))  # claims Python 2.7: the bytecode is skipped
    for payload in (good, other):
        proc = subprocess.run(
            [sys.executable, "-S", "-c", agent_mod.BOOTSTRAP], input=payload, capture_output=True, timeout=30
        )
        assert proc.stdout.startswith(agent_remote.MAGIC), proc.stderr
    broken = sized(zlib.compress(raw[:6] + b"\x00" * (len(raw) - 6)))  # bytecode of our version, but garbage
    proc = subprocess.run([sys.executable, "-S", "-c", agent_mod.BOOTSTRAP], input=broken,
                          capture_output=True, timeout=30)  # fmt: skip
    assert not proc.stdout.startswith(agent_remote.MAGIC)  # so the first case really ran the bytecode


def test_racily_clean_is_judged_by_the_filesystem_s_own_clock(ops: Ops, root: bytes) -> None:
    """Without a lock, our clock less 2 s; with one, the lock's mtime as it is touched at the scan:
    the clock that stamps the files, whatever its skew from ours."""
    before = time.time_ns()
    assert before - agent_remote.RACY_NS <= ops.racy_from() <= time.time_ns() - agent_remote.RACY_NS
    assert ops.lock(b".tether/lock", "test")["locked"]
    lock = os.path.join(root, b".tether", b"lock")
    os.utime(lock, ns=(0, 1_000_000_000 * 86400 + 123))  # as if that clock were a day after 1970
    floor = ops.racy_from()  # touched again: the stamp moves to the filesystem's now
    assert floor == os.stat(lock).st_mtime_ns - agent_remote.TICK_MARGIN_NS
    os.utime(lock, ns=(0, 1_000_000_000 * 86400 + 123))
    assert ops.scan_raw()[4] == os.stat(lock).st_mtime_ns - agent_remote.TICK_MARGIN_NS
    ops.unlock(b".tether/lock")


def test_a_directory_already_there_is_what_install_was_to_make(ops: Ops, root: bytes) -> None:
    """A pass that keeps a dir on one side makes it again, parents included, on the other; its
    own mkdir of a parent then finds it made: no race. Another kind of entry there is one."""
    first = ops.install(b"d/e", "d", None, b".tether/backups", mode=0o755)["entry"]
    again = ops.install(b"d", "d", None, b".tether/backups", mode=0o750)["entry"]
    assert first[0] == again[0] == "d" and os.stat(os.path.join(root, b"d")).st_mode & 0o777 == 0o750
    ops.install(b"f", "f", None, b".tether/backups", data=b"x")
    with pytest.raises(agent_remote.OpError, match="appeared during the pass") as e:
        ops.install(b"f", "d", None, b".tether/backups")
    assert e.value.errno == errno.EEXIST


def test_a_path_in_a_message_stays_on_one_line() -> None:
    """bisync to an rclone remote printed a name with a newline raw, across two lines."""
    assert show(b"new\nline") == "new\\nline" and show(b"tab\there\x7f") == "tab\\there\\x7f"
    assert show(b"caf\xe9") == "caf\\xe9" and show("café".encode()) == "café"
