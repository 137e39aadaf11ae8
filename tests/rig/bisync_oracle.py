"""An oracle for bisync tests that owes nothing to tether: every version the test wrote, and what
the two replicas hold, read straight from the disk.

A version is unique bytes that name themselves (b"v<n>\\n" repeated to the size), so "is
this version still somewhere" is a lookup, and a file holding bytes the test never wrote (a
partial copy, a torn write) is spotted at once.  The edits are the ones users make and tools get
wrong: saves by rename, in-place rewrites of the same size within one second, copies that keep
an mtime (cp -p, tar, rsync -t), files put back with their old stat.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

META = ".tether"
KEEPS = (f"{META}/versions",)  # where tether keeps the versions it replaced or deleted
RSYNC_TEMP = re.compile(r"\.(.+)\.[A-Za-z0-9]{6}")  # rsync's in-flight copy of NAME: .NAME.XXXXXX, mode 0600
CONFLICT_TAG = re.compile(r"\.conflict-[A-Za-z0-9_-]+?-\d{8}-\d{6}(?:-\d+)?")
NS = 1_000_000_000

Node = tuple[Any, ...]  # ("d",) | ("f", version or None, mtime_ns) | ("l", target) | ("o",)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class Versions:
    """Hands out unique contents and recognises them (by digest: whole files only, never a prefix)."""

    def __init__(self) -> None:
        self.count = 0
        self._ids: dict[bytes, int] = {}

    def make(self, size: int) -> bytes:
        self.count += 1
        head = b"v%d\n" % self.count
        assert size >= len(head), f"size {size} cannot hold the version header {head!r}"
        data = (head * (size // len(head) + 1))[:size]
        self._ids[_digest(data)] = self.count
        return data

    def id_of(self, data: bytes) -> int | None:
        return self._ids.get(_digest(data))


# ---------------------------------------------------------------------------- user edits


def save(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    """An editor's save: write a temp file beside it, rename it over (a new inode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".save~")
    tmp.write_bytes(data)
    if mtime_ns is not None:
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, path)


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite the bytes of the same inode (no truncate, no rename): size and inode stay."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)) :]
    finally:
        os.close(fd)


Edit = tuple[Any, ...]


def apply_edit(root: Path, other: Path, edit: Edit, versions: Versions) -> list[int]:
    """One user edit on the replica at `root` (`other`: the other replica, whose file a cp -p
    copies the stamp of).  An edit that makes no sense in the tree as it is (a parent is a
    file, the file is a dir...) is not done, as the user could not have done it.  Returns the
    versions it wrote.

    ("save", name, size)   editor's save: temp file renamed over
    ("inplace", name)      new bytes, same size, same inode, mtime now
    ("second", name)       the same, stamped within the same second as the old mtime
    ("touch", name)        the same bytes written again: only the mtime changes
    ("cp_p", name)         new bytes of the other side's size and with its mtime (cp -p, tar, rsync -t)
    ("delete", name)       rm -rf
    ("mkdir", name), ("rename", name, to), ("retype", name)   (retype: file <-> dir holding `in`)
    """
    kind, path = edit[0], root / edit[1]
    made: list[int] = []

    def new(size: int) -> bytes:
        data = versions.make(size)
        made.append(versions.count)
        return data

    try:
        st = os.lstat(path) if os.path.lexists(path) else None
        is_file = st is not None and stat.S_ISREG(st.st_mode)
        if kind == "save" and (st is None or is_file):
            save(path, new(edit[2]))
        elif kind in ("inplace", "second") and is_file and st is not None:
            rewrite_in_place(path, new(st.st_size))
            if kind == "second":
                os.utime(path, ns=(st.st_atime_ns, same_second(st.st_mtime_ns)))
        elif kind == "touch" and is_file:
            rewrite_in_place(path, path.read_bytes())
        elif kind == "cp_p" and (st is None or is_file):
            there = other / edit[1]
            if there.is_file() and not there.is_symlink():
                ost = there.stat()
                save(path, new(max(ost.st_size, 32)), mtime_ns=ost.st_mtime_ns)
        elif kind == "delete" and st is not None:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
        elif kind == "mkdir" and st is None:
            path.mkdir(parents=True)
        elif kind == "rename" and st is not None:
            to = root / edit[2]
            if not os.path.lexists(to) and not str(to).startswith(str(path) + "/"):
                to.parent.mkdir(parents=True, exist_ok=True)
                path.rename(to)
        elif kind == "retype" and st is not None:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
                save(path, new(40))
            else:
                path.unlink()
                path.mkdir()
                save(path / "in", new(40))
    except (NotADirectoryError, FileExistsError, IsADirectoryError):
        pass  # a parent is a file now, and so on
    return made


def same_second(mtime_ns: int) -> int:
    """Another mtime in the same whole second as mtime_ns (what a second save within it gets)."""
    sec = mtime_ns // NS * NS
    return sec + (137_000_001 if mtime_ns - sec != 137_000_001 else 611_000_003)


# ---------------------------------------------------------------------------- reading the replicas


def view(root: Path, versions: Versions) -> dict[str, Node]:
    """relative path -> node for everything under root except tether's own `.tether`."""
    out: dict[str, Node] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == "." and META in dirnames:
            dirnames.remove(META)
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            key = os.path.normpath(os.path.join(rel, name))
            try:
                st = os.lstat(full)
                if stat.S_ISDIR(st.st_mode):
                    out[key] = ("d",)
                elif stat.S_ISLNK(st.st_mode):
                    out[key] = ("l", os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        out[key] = ("f", versions.id_of(f.read()), st.st_mtime_ns)
                else:
                    out[key] = ("o",)
            except FileNotFoundError:  # went away under the walk (a concurrent pass): not there
                continue
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return out


def kept(root: Path, versions: Versions) -> set[int]:
    """Every version under root that a user can get back: in the replica or in its kept versions."""
    found: set[int] = set()
    tops = [root, *(root / k for k in KEEPS)]
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            if Path(dirpath) == root and META in dirnames:
                dirnames.remove(META)
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    if stat.S_ISREG(os.lstat(full).st_mode):
                        with open(full, "rb") as f:
                            v = versions.id_of(f.read())
                        if v is not None:
                            found.add(v)
                except FileNotFoundError:
                    continue
    return found


def live(trees: Iterable[dict[str, Node]]) -> set[int]:
    """The versions the users see right now (replica files, excluded ones included)."""
    return {n[1] for t in trees for n in t.values() if n[0] == "f" and n[1] is not None}


def visible(tree: dict[str, Node], name: str) -> set[int]:
    """Versions a user finds at `name` or at one of its conflict copies."""
    return {n[1] for p, n in tree.items() if n[0] == "f" and base_name(p) == name and n[1] is not None}


def base_name(path: str) -> str:
    """The path with every conflict tag taken out: the name the user gave."""
    return CONFLICT_TAG.sub("", path)


def differences(t1: dict[str, Node], t2: dict[str, Node], excluded: Callable[[str], bool]) -> list[str]:
    """What differs between two replicas' views, leaving out excluded paths.  A directory on one
    side only that holds nothing but excluded files (which a sync must leave alone) is no
    difference: it may stay where its excluded files are."""

    def only_excluded(tree: dict[str, Node], d: str) -> bool:
        inside = [(p, n) for p, n in tree.items() if p.startswith(d + "/")]
        return any(excluded(p) for p, _ in inside) and all(n[0] == "d" or excluded(p) for p, n in inside)

    out = []
    for p in sorted(set(t1) | set(t2)):
        if excluded(p) or t1.get(p) == t2.get(p):
            continue
        n1, n2 = t1.get(p), t2.get(p)
        if n1 is None and n2 is not None and n2[0] == "d" and _kept_for(p, t2, only_excluded):
            continue
        if n2 is None and n1 is not None and n1[0] == "d" and _kept_for(p, t1, only_excluded):
            continue
        out.append(f"{p}: path1 {_show(n1)} / path2 {_show(n2)}")
    return out


def _kept_for(p: str, tree: dict[str, Node], only_excluded: Callable[[dict[str, Node], str], bool]) -> bool:
    """p, or a directory above it, exists only to hold excluded files."""
    parts = p.split("/")
    return any(only_excluded(tree, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def _show(n: Node | None) -> str:
    if n is None:
        return "absent"
    if n[0] == "f":
        return f"file v{n[1]} mtime {n[2]}" if n[1] is not None else f"file of unknown bytes, mtime {n[2]}"
    return " ".join(map(str, n))


def foreign(tree: dict[str, Node], names: set[str]) -> list[str]:
    """Entries no user made: a path component outside `names` (conflict tags taken out), such as
    rsync's partial `.NAME.XXXXXX`, and files whose bytes are no complete version."""
    out = []
    for p, n in sorted(tree.items()):
        odd = [c for c in base_name(p).split("/") if c not in names]
        if odd:
            out.append(f"{p}: {odd[0]!r} is a name no user gave")
        elif n[0] == "f" and n[1] is None:
            out.append(f"{p}: bytes no user wrote (a partial or torn copy)")
    return out


def rsync_temps(*roots: Path, everywhere: bool = False) -> list[Path]:
    """rsync's in-flight temp files (.NAME.XXXXXX) in these replicas: outside .tether, where a
    user would see them, or `everywhere` (a copy staged inside .tether is in flight too)."""
    hits = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            if Path(dirpath) == root and META in dirnames and not everywhere:
                dirnames.remove(META)
            hits += [Path(dirpath) / f for f in filenames if RSYNC_TEMP.fullmatch(f)]
    return hits


def copy_target(temp: Path, root: Path, other: Path) -> str | None:
    """The replica path rsync's temp file stands for: NAME beside it, or, for a copy staged
    somewhere inside .tether, the shortest tail of its path that the sending side holds."""
    m = RSYNC_TEMP.fullmatch(temp.name)
    if m is None:
        return None
    rel = temp.parent.relative_to(root).parts
    if not rel or rel[0] != META:
        return "/".join([*rel, m.group(1)])
    for i in range(len(rel), 0, -1):
        cand = "/".join([*rel[i:], m.group(1)])
        if (other / cand).is_file():
            return cand
    return None
