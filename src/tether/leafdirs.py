"""Walks for the directories of a tree, without listing the folders that can hold none.

On ext2/3/4, xfs and tmpfs a directory's link count is 2 plus its subdirectories, so one that
says 2 has none: a walk for directories (watches to place, directory times to check) can skip
listing it. A tree of a million files in 50,000 folders is listed in 50,000 stats instead of a
million entries read into Python. Every other filesystem (btrfs says 1, FUSE and network
filesystems say what they like) is listed as before: the count is trusted only where the
filesystem is known to keep it (`find` makes the same bet, and offers `-noleaf` for the rest).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

_COUNTING = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})  # link count = 2 + subdirectories

_trusted: dict[int, bool] = {}  # st_dev -> whether its link counts are trusted


def _fs_type(dev: int) -> str | None:
    """The type of the filesystem mounted as device `dev` (/proc/self/mountinfo's field after
    "-"), or None when no mount names it (a btrfs subvolume's own device number, no /proc)."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == want and "-" in fields:
                    return fields[fields.index("-") + 1]
    except OSError:
        pass
    return None


def is_leaf(path: str) -> bool:
    """True only when `path` is a directory that surely has no subdirectory right now; False
    means "list it" (it may or may not have one). Call it after the directory is watched, so a
    subdirectory made afterwards is reported by the watch."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if st.st_nlink != 2 or not stat.S_ISDIR(st.st_mode):
        return False
    trusted = _trusted.get(st.st_dev)
    if trusted is None:
        trusted = _trusted[st.st_dev] = _fs_type(st.st_dev) in _COUNTING
    return trusted


def subdirs(root: str, rel: str, excluded: Callable[[str], bool]) -> list[str]:
    """The directories right below `rel` (relative to `root`) that `excluded` lets through,
    symlinks not followed; none below a leaf, or a `rel` that is gone or cannot be read."""
    full = os.path.join(root, rel) if rel else root
    if is_leaf(full):
        return []
    prefix = rel + "/" if rel else ""
    try:
        with os.scandir(full) as it:
            return [p for e in it if e.is_dir(follow_symlinks=False) and not excluded(p := prefix + e.name)]
    except OSError:
        return []


def dirs_below(root: str, top: str, excluded: Callable[[str], bool]) -> list[str]:
    """`top` and every directory below it that `excluded` lets through (see subdirs)."""
    out, stack = [], [top]
    while stack:
        rel = stack.pop()
        out.append(rel)
        stack += subdirs(root, rel, excluded)
    return out
