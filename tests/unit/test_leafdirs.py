"""leafdirs: a folder is called a leaf only when it surely has no subfolder; anything else is listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether import leafdirs
from tether.leafdirs import is_leaf


def counting(path: Path) -> bool:
    return leafdirs._fs_type(path.stat().st_dev) in leafdirs._COUNTING


def test_only_a_folder_without_subfolders_is_a_leaf(tmp_path: Path) -> None:
    if not counting(tmp_path):
        pytest.skip(f"{tmp_path} is on a filesystem whose link counts tether does not trust (not ext4, xfs, tmpfs)")
    (tmp_path / "leaf").mkdir()
    (tmp_path / "leaf" / "file").write_text("x")
    (tmp_path / "leaf" / "link-to-a-folder").symlink_to(tmp_path)
    (tmp_path / "parent" / "child").mkdir(parents=True)
    (tmp_path / "twice").write_text("x")
    os.link(tmp_path / "twice", tmp_path / "twice-too")  # a file with two names has a link count of 2
    assert is_leaf(str(tmp_path / "leaf"))
    assert not is_leaf(str(tmp_path / "parent"))
    assert is_leaf(str(tmp_path / "parent" / "child"))
    assert not is_leaf(str(tmp_path / "twice")), "a file is not a folder"
    assert not is_leaf(str(tmp_path / "missing"))
    (tmp_path / "leaf" / "new").mkdir()
    assert not is_leaf(str(tmp_path / "leaf")), "a subfolder made later is seen"


def test_an_untrusted_filesystem_is_always_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """btrfs, FUSE and network filesystems may say 2 for a folder with subfolders: never a leaf there."""
    (tmp_path / "leaf").mkdir()
    monkeypatch.setattr(leafdirs, "_trusted", {})
    monkeypatch.setattr(leafdirs, "_fs_type", lambda _dev: "btrfs")
    assert not is_leaf(str(tmp_path / "leaf"))


def test_proc_is_not_trusted() -> None:
    """A real filesystem outside the list: /proc's folders are listed, whatever they say."""
    assert leafdirs._fs_type(os.lstat("/proc").st_dev) == "proc"
    assert not is_leaf("/proc/self/fd")


def test_the_walk_finds_what_a_full_listing_finds(tmp_path: Path) -> None:
    """Leaves skipped or not, the same folders as os.walk's, symlinks not followed, an excluded
    folder left out with everything below it."""
    for d in ("a/b/c", "a/d", "e", "skip/below", "f g/h"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "file").write_text("x")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "e")
    got = leafdirs.dirs_below(str(tmp_path), "", lambda rel: rel == "skip")
    want = {""} | {
        os.path.relpath(os.path.join(d, n), tmp_path)
        for d, ds, _ in os.walk(tmp_path)
        for n in ds
        if not os.path.islink(os.path.join(d, n))
    }
    assert sorted(got) == sorted(w for w in want if w != "skip" and not w.startswith("skip/"))
    assert sorted(leafdirs.dirs_below(str(tmp_path), "a", lambda _rel: False)) == ["a", "a/b", "a/b/c", "a/d"]
