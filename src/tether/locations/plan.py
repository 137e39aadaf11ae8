"""The Plan of one action for one destination: pure data, built from two snapshots.

A listing, the questions and the executor all read the same Plan, so what was shown is
what is done. Nothing here touches the disk; `execute.scan` makes the snapshots.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from tether.output import shown


class Op(enum.Enum):
    CREATE = "new"
    OVERWRITE = "modified"
    DELETE = "delete"
    UPDATE = "changed"  # a folder's times or mode; never destructive


@dataclass(frozen=True)
class Entry:
    """What a scan saw of one path: enough to tell "same" and to notice a later change."""

    kind: str  # file, dir, link, other
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    target: bytes | None = None  # of a symlink

    def same(self, other: Entry | None) -> bool:
        """Unchanged for the executor's re-check: kind, size, mtime and link target."""
        return other is not None and (self.kind, self.size, self.mtime_ns, self.target) == (
            other.kind,
            other.size,
            other.mtime_ns,
            other.target,
        )


UNREAD = Entry("unread")  # a path the scan could not read: no action touches it or what lies below
Snapshot = Mapping[bytes, Entry]  # path relative to the location root -> Entry


def unread(snap: Snapshot) -> list[bytes]:
    return sorted(rel for rel, e in snap.items() if e.kind == "unread")


@dataclass(frozen=True)
class Action:
    op: Op
    rel: bytes
    src: Entry | None
    dst: Entry | None

    @property
    def is_dir(self) -> bool:
        e = self.src if self.op is not Op.DELETE else self.dst
        return e is not None and e.kind == "dir"


@dataclass(frozen=True)
class Plan:
    """What one action does to one destination; `stamp` names its backup folder."""

    verb: str  # backup, work, transfer, tree
    set_name: str
    source: str
    dest: str
    actions: tuple[Action, ...]
    keep_versions: int = 5
    stamp: str = ""

    def of(self, op: Op) -> list[Action]:
        return [a for a in self.actions if a.op is op]

    def count(self, op: Op, *, dirs: bool | None = None) -> int:
        return sum(1 for a in self.of(op) if dirs is None or a.is_dir == dirs)

    def approved(self, *, overwrite: bool, delete: bool) -> Plan:
        """The plan without what the user declined (and without what lies under it)."""
        declined = {Op.OVERWRITE} if not overwrite else set()
        if not delete:
            declined.add(Op.DELETE)
        dropped = [a.rel + b"/" for a in self.actions if a.op in declined]
        kept = tuple(a for a in self.actions if a.op not in declined and not any(a.rel.startswith(d) for d in dropped))
        return replace(self, actions=kept)


def _differs(s: Entry, d: Entry) -> Op | None:
    if s.kind != d.kind:
        return Op.OVERWRITE
    if s.kind == "dir":
        return Op.UPDATE if (s.mtime_ns, s.mode) != (d.mtime_ns, d.mode) else None
    if s.kind == "link":
        return Op.OVERWRITE if s.target != d.target else None
    return Op.OVERWRITE if (s.size, s.mtime_ns) != (d.size, d.mtime_ns) else None


def diff(src: Snapshot, dst: Snapshot, *, delete: bool, dirs_only: bool = False) -> tuple[Action, ...]:
    """rsync's quick check (size and mtime), in sorted order: parents before children."""
    out: list[Action] = []
    untouched = [r + b"/" for r in [*unread(src), *unread(dst)]]
    for rel in sorted(set(src) | set(dst)):
        s, d = src.get(rel), dst.get(rel)
        if (s is not None and s.kind == "unread") or (d is not None and d.kind == "unread"):
            continue
        if untouched and any(rel.startswith(u) for u in untouched):
            continue
        if dirs_only:
            if s is not None and s.kind == "dir" and d is None:
                out.append(Action(Op.CREATE, rel, s, None))
            continue
        if s is None:
            if delete and d is not None:
                out.append(Action(Op.DELETE, rel, None, d))
        elif d is None:
            out.append(Action(Op.CREATE, rel, s, None))
        elif (op := _differs(s, d)) is not None:
            out.append(Action(op, rel, s, d))
    # what lies under a folder that a file replaces goes with that folder, in one move
    blocked = [a.rel + b"/" for a in out if a.op is Op.OVERWRITE]
    return tuple(a for a in out if a.op is not Op.DELETE or not any(a.rel.startswith(b) for b in blocked))


def display(rel: bytes) -> str:
    """One line per path: undecodable bytes as \\xNN, control characters escaped."""
    text = shown(os.fsdecode(rel))
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _label(a: Action) -> str:
    name = display(a.rel) + ("/" if a.is_dir else "")
    if a.op is Op.OVERWRITE and a.src and a.dst and a.src.kind != a.dst.kind:
        name += f" ({_KIND[a.dst.kind]} replaced by {_KIND[a.src.kind]})"
    return name


_KIND = {"file": "a file", "dir": "a folder and all it holds", "link": "a symlink", "other": "a special file"}


def render(plan: Plan, *, show_dirs: bool = True) -> list[str]:
    """The listing: a header, one line per change, a summary that counts hidden folders too."""
    lines = [f"{plan.verb} [{plan.set_name}] {shown(plan.source)} -> {shown(plan.dest)}"]
    for a in plan.actions:
        if a.is_dir and not show_dirs and a.op is not Op.DELETE:
            continue
        lines.append(f"  {a.op.value:<9} {_label(a)}")
    lines.append("  " + summary(plan))
    return lines


def summary(plan: Plan) -> str:
    parts = []
    for op in Op:
        files, dirs = plan.count(op, dirs=False), plan.count(op, dirs=True)
        if files or dirs:
            what = ", ".join(t for t in (_n(files, "file"), _n(dirs, "folder")) if t)
            parts.append(f"{op.value}: {what}")
    return "; ".join(parts) if parts else "nothing to do"


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}" if n else ""


def paths(actions: Iterable[Action]) -> bytes:
    """The NUL-separated list for rsync --files-from=- --from0 (newlines in names are data).

    Each path starts with `./`: rsync skips list lines that begin with `#` or `;`.
    """
    return b"".join(b"./" + a.rel + b"\0" for a in actions)
