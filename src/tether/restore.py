"""Putting kept versions back: which version a path held at a time, and the restore itself.

A path's history is its kept versions, oldest first, then the live file. A version was live from
the moment the one before it was replaced (its `kept_at`) until its own `kept_at`; after a
deletion (or for the first version known) nothing says when the next one appeared but its own
mtime, so that is taken as its start (never before the deletion). `held_at` is that rule, pure, tested as data.

The restore writes through the local agent's operations: what it replaces or removes is kept as
a version of its own first (nothing lost, the restore itself can be undone), and a restored file
arrives by rename from `.tether/tmp`, never half-written under its name.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tether.agent_remote import TMP_DIR, VERSIONS, Ops
from tether.errors import UsageError
from tether.versions import Version

LIVE = "live"  # held_at's answer when the live file is the one the path held
_AFTER_REPLACE = ("replaced", "conflict")  # the next version took the name at once


def held_at(versions: Sequence[Version], live_mtime: float | None, t: float) -> Version | str | None:
    """What the path held at time t: one of its versions, LIVE, or None (it did not exist, as
    far as tether knows). `versions` are this path's, in any order; live_mtime is the live
    file's mtime in seconds (None: no live file)."""
    prev_kept, prev_why = float("-inf"), ""
    for v in sorted(versions, key=lambda v: (v.kept_at, v.stored)):
        start = prev_kept if prev_why in _AFTER_REPLACE else max(prev_kept, min(v.mtime_ns / 1e9, v.kept_at))
        if start < t <= v.kept_at:
            return v
        prev_kept, prev_why = v.kept_at, v.origin
    if live_mtime is not None:
        start = prev_kept if prev_why in _AFTER_REPLACE else max(prev_kept, live_mtime)
        if start < t:
            return LIVE
    return None


_RELATIVE = re.compile(r"^-(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FORMS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def parse_time(text: str, now: float | None = None) -> float:
    """--at: local time as `2026-12-06 14:19[:27]` (or with a T), a day, or `-30m`, `-2h`, `-1d`."""
    now = time.time() if now is None else now
    m = _RELATIVE.match(text.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    for form in _FORMS:
        try:
            return time.mktime(time.strptime(text.strip(), form))
        except ValueError:
            continue
    raise UsageError(
        f"--at {text!r} is not a time", "write a local time like '2026-12-06 14:19', a day, or -30m, -2h, -1d"
    )


@dataclass
class Step:
    """One change a restore makes at `path`: put back the entry at `source` (a kept version's
    stored copy, or a live file when restoring elsewhere), or, with None, remove the live entry."""

    path: bytes
    source: bytes | None
    version: Version | None = None  # what is put back, when it is a kept version


@dataclass
class Outcome:
    restored: list[tuple[bytes, Version | None]] = field(default_factory=list)  # None: a live file
    removed: list[bytes] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # where what a step replaced or removed now lies
    errors: list[str] = field(default_factory=list)


def plan_folder(
    folder: bytes,
    versions: Iterable[Version],
    live_root: bytes,
    t: float,
    dest_root: bytes | None = None,
) -> list[Step]:
    """The steps that make `folder` (b"" for the whole root) hold at t what it held then; the
    live files are read in live_root. A version's step has no source yet (the caller fetches it
    from wherever it lies). With dest_root (elsewhere: --to), everything held at t is written
    there, live files too, and nothing is removed."""

    def below(p: bytes) -> bool:
        return not folder or p == folder or p.startswith(folder + b"/")

    live = live_files(live_root, folder)
    by_path: dict[bytes, list[Version]] = {}
    for v in versions:
        if below(v.path):
            by_path.setdefault(v.path, []).append(v)
    steps = []
    for path in sorted(set(by_path) | set(live)):
        want = held_at(by_path.get(path, []), live.get(path), t)
        if isinstance(want, Version):
            if not _holds(os.path.join(dest_root if dest_root is not None else live_root, path), want):
                steps.append(Step(path, b"", want))
        elif want == LIVE and dest_root is not None:
            steps.append(Step(path, os.path.join(live_root, path)))
        elif want is None and path in live and dest_root is None:
            steps.append(Step(path, None))
    return steps


def _holds(path: bytes, v: Version) -> bool:
    """Whether path already holds the version, by rsync's quick check (size and mtime to the ns):
    nothing to put back."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (v.size, v.mtime_ns)


def live_files(root: bytes, folder: bytes) -> dict[bytes, float]:
    """Every file or link below folder in root (tether's own .tether left out), with its mtime."""
    out: dict[bytes, float] = {}
    top = os.path.join(root, folder) if folder else root
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return out
    if not stat.S_ISDIR(st.st_mode):
        return {folder: st.st_mtime_ns / 1e9}
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, root) if dirpath != root else b""
        if not rel:
            dirnames[:] = [d for d in dirnames if d != b".tether"]
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                filenames.append(d)  # a link to a folder is an entry, not a folder to enter
                dirnames.remove(d)
        for n in filenames:
            p = os.path.join(rel, n) if rel else n
            out[p] = os.lstat(os.path.join(dirpath, n)).st_mtime_ns / 1e9
    return out


def apply(steps: Sequence[Step], dest_root: bytes, dry_run: bool = False) -> Outcome:
    """Carry the steps out in dest_root: each entry is copied back with its mode and mtime;
    what it replaces, or a step removes, is kept as a version first."""
    out = Outcome()
    if not dry_run:
        os.makedirs(dest_root, exist_ok=True)
    ops = Ops(dest_root)
    for s in steps:
        try:
            if s.source is None:
                if not dry_run:
                    _keep(ops, s.path, "deleted", out)
                out.removed.append(s.path)
            else:
                if not dry_run:
                    _put_back(ops, s.source, s.path, dest_root, out)
                out.restored.append((s.path, s.version))
        except OSError as e:
            out.errors.append(f"{os.fsdecode(s.path)}: {e.strerror or e}")
    return out


def _keep(ops: Ops, path: bytes, why: str, out: Outcome) -> None:
    r = ops.trash([path], VERSIONS, why=why)
    if r["failed"]:
        raise OSError(r["failed"][0].get("errno"), r["failed"][0]["error"])
    out.kept += r["dests"]


def copy_entry(src: bytes, dest: bytes) -> None:
    """A copy of a file (contents, mode, mtime) or a link (as a link, its mtime) at dest."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dest)
        st = os.lstat(src)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    else:
        shutil.copy2(src, dest, follow_symlinks=False)


def _put_back(ops: Ops, stored: bytes, path: bytes, dest_root: bytes, out: Outcome) -> None:
    """A copy of the stored version in .tether/tmp (one fetched there already is taken as it
    is), then the live entry kept as a replaced version, then the copy renamed into place."""
    tmp_dir = os.path.join(dest_root, *TMP_DIR)
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = (
        stored
        if os.path.dirname(stored) == tmp_dir
        else os.path.join(tmp_dir, b"restore-" + os.urandom(6).hex().encode())
    )
    try:
        if tmp != stored:
            copy_entry(stored, tmp)
        dest = os.path.join(dest_root, path)
        if os.path.lexists(dest):
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise OSError(21, f"a folder is there now: move it away to restore the file {os.fsdecode(path)}")
            _keep(ops, path, "replaced", out)
        os.makedirs(os.path.dirname(dest) or dest_root, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


__all__ = ["LIVE", "Outcome", "Step", "apply", "copy_entry", "held_at", "live_files", "parse_time", "plan_folder"]
