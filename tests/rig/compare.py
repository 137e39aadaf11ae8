"""Tree comparison that never follows symlinks and reports human-readable differences.

Why not ``filecmp``: it follows symlinks, ignores modes and mtimes and decodes names.
A sync tool must reproduce entry types, bytes, permission bits, nanosecond mtimes and
link targets exactly, for names that need not be valid UTF-8, so we lstat everything
with bytes paths.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20
MAX_REPORTED = 20


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return f"unknown({stat.S_IFMT(mode):o})"


def _same_content(pa: bytes, pb: bytes) -> bool:
    """Chunked byte comparison (sizes were already checked equal)."""
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        while True:
            ca = fa.read(_CHUNK)
            cb = fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _listdir(p: bytes) -> set[bytes]:
    return set(os.listdir(p))


def diff_trees(
    a: Path,
    b: Path,
    *,
    ignore_top: Iterable[bytes] = (b".tether",),
    check_root_mtime: bool = False,
    check_root_mode: bool = False,
) -> list[str]:
    """Differences between trees *a* and *b*; an empty list means identical.

    Compares entry sets, types, file bytes, permission bits, mtime_ns (files,
    symlinks, dirs) and symlink targets.  Names in *ignore_top* are skipped at the
    top level only (tether's own state dir).  The roots' own mtime and mode are
    compared only on request, since the test usually creates the roots itself.
    """
    out: list[str] = []
    ra, rb = os.fsencode(a), os.fsencode(b)
    ignored = set(ignore_top)
    for label, root in (("a", ra), ("b", rb)):
        if not os.path.isdir(root) or os.path.islink(root):
            return [f"root {label} is not a directory: {root!r}"]

    def rel_name(rel: bytes) -> str:
        return repr(rel) if rel else "<root>"

    stack: list[bytes] = [b""]
    while stack:
        rel = stack.pop()
        pa = os.path.join(ra, rel) if rel else ra
        pb = os.path.join(rb, rel) if rel else rb
        sa, sb = os.lstat(pa), os.lstat(pb)
        ka, kb = _kind(sa.st_mode), _kind(sb.st_mode)
        if ka != kb:
            out.append(f"type differs: {rel_name(rel)}: {ka} != {kb}")
            continue
        is_root = rel == b""
        if ka != "symlink" and (not is_root or check_root_mode):
            ma, mb = stat.S_IMODE(sa.st_mode), stat.S_IMODE(sb.st_mode)
            if ma != mb:
                out.append(f"mode differs: {rel_name(rel)}: {ma:#o} != {mb:#o}")
        check_mtime = (not is_root or check_root_mtime) and ka in ("file", "dir", "symlink")
        if check_mtime and sa.st_mtime_ns != sb.st_mtime_ns:
            out.append(
                f"mtime differs: {rel_name(rel)} ({ka}): "
                f"{sa.st_mtime_ns} != {sb.st_mtime_ns} "
                f"(delta {sb.st_mtime_ns - sa.st_mtime_ns} ns)"
            )
        if ka == "file":
            if sa.st_size != sb.st_size:
                out.append(f"size differs: {rel_name(rel)}: {sa.st_size} != {sb.st_size}")
            elif not _same_content(pa, pb):
                out.append(f"content differs: {rel_name(rel)}")
        elif ka == "symlink":
            ta, tb = os.readlink(pa), os.readlink(pb)
            if ta != tb:
                out.append(f"symlink target differs: {rel_name(rel)}: {ta!r} != {tb!r}")
        elif ka == "dir":
            na, nb = _listdir(pa), _listdir(pb)
            if is_root:
                na -= ignored
                nb -= ignored
            for name in sorted(na - nb):
                out.append(f"only in a: {os.path.join(rel, name)!r}")
            for name in sorted(nb - na):
                out.append(f"only in b: {os.path.join(rel, name)!r}")
            # Reverse-sorted push so entries are visited (and reported) in sorted order.
            for name in sorted(na & nb, reverse=True):
                stack.append(os.path.join(rel, name) if rel else name)
    return out


def assert_same_tree(
    a: Path,
    b: Path,
    *,
    ignore_top: Iterable[bytes] = (b".tether",),
    check_root_mtime: bool = False,
    check_root_mode: bool = False,
) -> None:
    """Raise AssertionError listing up to MAX_REPORTED differences between *a* and *b*."""
    diffs = diff_trees(
        a,
        b,
        ignore_top=ignore_top,
        check_root_mtime=check_root_mtime,
        check_root_mode=check_root_mode,
    )
    if diffs:
        shown = "\n  ".join(diffs[:MAX_REPORTED])
        more = f"\n  ... and {len(diffs) - MAX_REPORTED} more" if len(diffs) > MAX_REPORTED else ""
        raise AssertionError(f"trees differ ({len(diffs)} differences):\n  {shown}{more}\n  a={a}\n  b={b}")


def snapshot(root: Path) -> dict[str, bytes]:
    """path -> bytes, or a symlink's target (dangling ones too), leaving out tether's own .tether."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        if Path(dirpath) == root and ".tether" in dirs:
            dirs.remove(".tether")
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = b"-> " + os.fsencode(os.readlink(p)) if p.is_symlink() else p.read_bytes()
    return out
