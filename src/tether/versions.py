"""Every version tether kept, whatever kept it, listed one way.

One layout for every job kind and endpoint (agent_remote writes it, see version_name):

    versions/<dirs>/<stem>~<YYYYmmdd-HHMMSS>[-N]~<why><ext>   why: deleted, replaced, conflict

under a replica's or target's `.tether/`; a folder kept whole carries the tag on its own name and
its files keep theirs. A keep-both conflict's losing version stays visible beside the file
(`<path>.conflict-<host>-<stamp>.<ext>`, recorded in the job's state) until the user resolves it.

The layouts of earlier releases are read where they lie, and pruned by age as before:

    trash/<YYYY-mm-dd>[.N]/<path>          origin "trash": removed or replaced (bisync, mirror)
    backups/<path>.<YYYYmmdd-HHMMSS-us>   origin "replaced": bisync's overwritten versions
    backups/<YYYYmmdd-HHMMSS[-N]>/<path>  origin "backup": what one locations run replaced or removed

`classify` reads one stored path into a Version (pure, so any endpoint's listing can be fed to
it); `from_kept` reads an agent's listing of KEPT_TOPS, local (`scan_local`) or far.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tether.agent_remote import META_DIR as META
from tether.agent_remote import VERSIONS, Ops, parse_version, to_bytes

KEPT = VERSIONS + b"/"
TRASH = META + b"/trash/"
BACKUPS = META + b"/backups/"

_DAY = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)(?:\.\d+)?$")
_RUN = re.compile(rb"^(\d{8}-\d{6})(?:-\d+)?$")
_BACKUP = re.compile(rb"^(.+?)(?:\.\d+)?\.(\d{8}-\d{6})-(\d{6})$", re.S)
_NUMBERED = re.compile(rb"^(.+)\.\d+(\.[^./]*)?$", re.S)
_CONFLICT = re.compile(rb"^(.*)\.conflict-[^/]*?-(\d{8}-\d{6})(?:-\d+)?(\.[^/]*)?$", re.S)

ORIGINS = ("deleted", "replaced", "conflict", "trash", "backup")


@dataclass(frozen=True, order=True)
class Version:
    """One kept version: `path` is the file it is a version of, `stored` where it lies now."""

    path: bytes
    kept_at: float  # when it was set aside (a trash day counts from its midnight, local time)
    origin: str  # one of ORIGINS
    stored: bytes
    size: int
    mtime_ns: int

    def json(self) -> dict[str, object]:
        return {"path": os.fsdecode(self.path), "stored": os.fsdecode(self.stored), "origin": self.origin,
                "kept_at": self.kept_at, "size": self.size, "mtime_ns": self.mtime_ns}  # fmt: skip


def _local_time(fields: tuple[int, int, int, int, int, int]) -> float:
    y, mo, d, h, mi, s = fields
    return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))


def _stamp(s: bytes) -> float:
    d, t = s[:8], s[9:15]
    return _local_time((int(d[:4]), int(d[4:6]), int(d[6:8]), int(t[:2]), int(t[2:4]), int(t[4:6])))


def _unnumbered(name: bytes, siblings: frozenset[bytes]) -> bytes:
    m = _NUMBERED.match(name)
    if m and m.group(1) + (m.group(2) or b"") in siblings:
        return m.group(1) + (m.group(2) or b"")
    return name


def classify(
    rel: bytes,
    size: int,
    mtime_ns: int,
    siblings: frozenset[bytes] = frozenset(),
    conflict_copies: Iterable[bytes] = (),
) -> Version | None:
    """The Version stored at `rel` (relative to the root), or None for a file that is not one.

    `siblings` are the names beside it (to read numbered names back); `conflict_copies` the
    copies a bisync state recorded (a name that only looks like a conflict copy is the user's).
    """
    head, _, name = rel.rpartition(b"/")
    if rel.startswith(KEPT):
        parts = rel[len(KEPT) :].split(b"/")
        for i in range(len(parts) - 1, -1, -1):  # a folder kept whole holds plain names
            v = parse_version(parts[i])
            if v is not None:
                path = b"/".join([*parts[:i], v[0], *parts[i + 1 :]])
                return Version(path, _stamp(v[1]) + v[2] / 1000, v[3].decode(), rel, size, mtime_ns)  # -N: later
        return None
    if rel.startswith(TRASH):
        day, _, rest = rel[len(TRASH) :].partition(b"/")
        m = _DAY.match(day)
        if not m or not rest or rest.startswith(b".incoming/"):
            return None
        at = _local_time((int(m.group(1)), int(m.group(2)), int(m.group(3)), 0, 0, 0))
        rhead, _, rname = rest.rpartition(b"/")
        path = (rhead + b"/" if rhead else b"") + _unnumbered(rname, siblings)
        return Version(path, at, "trash", rel, size, mtime_ns)
    if rel.startswith(BACKUPS):
        rest = rel[len(BACKUPS) :]
        run, _, inner = rest.partition(b"/")
        m = _RUN.match(run)
        if m and inner:
            return Version(inner, _stamp(m.group(1)), "backup", rel, size, mtime_ns)
        b = _BACKUP.match(name)
        if b:
            inner_head = head[len(BACKUPS) :] if len(head) >= len(BACKUPS) else b""
            path = (inner_head + b"/" if inner_head else b"") + b.group(1)
            return Version(path, _stamp(b.group(2)) + int(b.group(3)) / 1e6, "replaced", rel, size, mtime_ns)
        return None
    if rel.startswith(META + b"/") or rel == META:
        return None
    if rel in conflict_copies:
        c = _CONFLICT.match(rel)
        if c:
            path = c.group(1) + (c.group(3) or b"")
            return Version(path, _stamp(c.group(2)), "conflict", rel, size, mtime_ns)
    return None


KEPT_TOPS = [VERSIONS, META + b"/trash", META + b"/backups"]  # where any layout keeps versions


def from_kept(kept: list[list[Any]], copies: list[bytes], stats: list[dict[str, Any]]) -> list[Version]:
    """The versions in an agent's replies: `kept` of KEPT_TOPS ([path, size, mtime_ns] each) and
    `stat` of the conflict copies a job's state recorded (a copy gone: a conflict closed)."""
    held = [(c, int(st["size"]), int(st["mtime_ns"])) for c, st in zip(copies, stats, strict=True)
            if st.get("type") in ("f", "l")]  # fmt: skip
    return from_entries([(to_bytes(p), int(size), int(mtime)) for p, size, mtime in kept], held)


def from_entries(
    entries: Iterable[tuple[bytes, int, int]], copies: Iterable[tuple[bytes, int, int]] = ()
) -> list[Version]:
    """The versions in a listing (path, size, mtime_ns of every file below KEPT_TOPS), and the
    recorded conflict copies found; oldest first."""
    listed = list(entries)
    names: dict[bytes, set[bytes]] = {}
    for rel, _size, _mtime in listed:
        head, _, name = rel.rpartition(b"/")
        names.setdefault(head, set()).add(name)
    found = []
    for rel, size, mtime_ns in listed:
        v = classify(rel, size, mtime_ns, frozenset(names[rel.rpartition(b"/")[0]]))
        if v:
            found.append(v)
    held = list(copies)
    recorded = frozenset(c for c, _s, _m in held)
    for copy, size, mtime_ns in held:
        v = classify(copy, size, mtime_ns, conflict_copies=recorded)
        if v:
            found.append(v)
    return sorted(found, key=lambda v: (v.kept_at, v.path, v.stored))


def scan_local(root: str | bytes, conflict_copies: Iterable[bytes] = ()) -> list[Version]:
    """Every version kept under a local replica or target root, oldest first: the same listing
    the agent makes on a far side (Ops.kept), made here in-process."""
    ops = Ops(os.fsencode(root))
    copies = list(conflict_copies)
    return from_kept(ops.kept(list(KEPT_TOPS))["entries"], copies, ops.stat(list(copies)) if copies else [])


__all__ = ["KEPT_TOPS", "ORIGINS", "Version", "classify", "from_entries", "from_kept", "scan_local"]
