"""leafdirs: a folder is called a leaf only when it surely has no subfolder; anything else is listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether import leafdirs
from tether.leafdirs import is_leaf


def counting(path: Path) -> bool:
    return leafdirs._fs_type(str(path)) in leafdirs._COUNTING


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
    monkeypatch.setattr(leafdirs, "_fs_type", lambda _path: 0x9123683E)  # btrfs
    assert not is_leaf(str(tmp_path / "leaf"))


def test_proc_is_not_trusted() -> None:
    """A real filesystem outside the list: /proc's folders are listed, whatever they say."""
    assert leafdirs._fs_type("/proc") not in leafdirs._COUNTING
    assert not is_leaf("/proc/self/fd")
