"""The reconcile decision table: from the last synced state and two scans, what to do.

Pure functions, no I/O, so the table can be read and tested on its own.  For each path,
with `prev` the entry recorded at the last sync (per side) and `a` / `b` what each side holds now:

| path1 (a)            | path2 (b)            | decision                                          |
|----------------------|----------------------|---------------------------------------------------|
| unchanged            | unchanged            | nothing                                           |
| changed or new       | unchanged            | copy a to path2 (path2's old version -> backups)  |
| deleted              | unchanged            | delete on path2 (soft: to its trash)              |
| changed              | deleted              | the change wins: copy a back to path2             |
| changed              | changed, same content| nothing (the older side takes the newer mtime)    |
| changed              | changed, different   | conflict, resolved by the job's policy            |
| deleted              | deleted              | forget the path                                   |
| dir deleted          | files added under it | the files survive; the dir is made again on path1 |
| (and the same with the sides swapped)                                                            |

No state for a path (first run, or lost state) means both sides count as changed: a union,
where differing files become conflicts and nothing is ever deleted.  A file and a directory
at the same path is a conflict the directory always wins: the file keeps living as a
conflict copy.  "Changed" compares type, size, mtime (ns), mode, inode and link target;
"same content" compares size, then a content hash (an equal mtime proves nothing).  A file
recorded racily clean (its mtime within the clock's reach of the scan that recorded it: an
edit in the same tick keeps size and mtime) has its bytes compared once: with the digest kept
in its record where there is one, else with the other side; if they differ, that side changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

POLICIES = ("keep-both", "newer", "path1", "path2")


class Entry(NamedTuple):
    type: str  # f file, d dir, l symlink, o other (never synced)
    size: int
    mtime: int  # ns
    mode: int
    ino: int
    link: bytes | None = None

    def expect(self) -> list[object]:
        """What the far side checks before touching the entry (the agent's `expect`)."""
        return [self.type, self.size, self.mtime]


Raw = tuple[Any, ...]  # an Entry as plain fields: scans and the state hand these out, compared as tuples
Side = Mapping[bytes, Raw]
Prev = Mapping[bytes, tuple[Raw | None, Raw | None]]  # path -> (entry on path1, entry on path2) at the last sync


def as_entry(t: Raw | None) -> Entry | None:
    if t is None or isinstance(t, Entry):
        return t
    return Entry._make(t)


class SideView(Mapping[bytes, Raw]):
    """One side as its scan saw it, held as the difference from the last sync: the entries that
    differ (or are new) and the paths that are gone; unchanged paths are read from the state.
    A pass over a quiet tree of 20,000 files then handles a handful of paths, not 40,000."""

    def __init__(self, prev: Prev, i: int, changed: dict[bytes, Raw], missing: set[bytes], count: int) -> None:
        self.prev, self.i, self.changed, self.missing, self.count = prev, i, changed, missing, count

    def get(self, p: bytes, default: object = None) -> Raw | None:  # type: ignore[override]
        e = self.changed.get(p)
        if e is not None:
            return e
        if p in self.missing:
            return None
        s = self.prev.get(p)
        return None if s is None else s[self.i]

    def __getitem__(self, p: bytes) -> Raw:
        e = self.get(p)
        if e is None:
            raise KeyError(p)
        return e

    def __contains__(self, p: object) -> bool:
        return isinstance(p, bytes) and self.get(p) is not None

    def __iter__(self) -> Iterator[bytes]:
        yield from self.changed
        for p, s in self.prev.items():
            if s[self.i] is not None and p not in self.missing and p not in self.changed:
                yield p

    def __len__(self) -> int:
        return self.count


class Action:
    """One step on one side.  `to` is the side changed (1 or 2); `src` is what goes there."""

    __slots__ = ("copy_name", "expect", "kind", "note", "path", "src", "to", "winner")

    def __init__(
        self,
        kind: str,  # copy | delete | mkdir | rmdir | conflict | meta | record | forget
        path: bytes,
        to: int = 0,
        src: Entry | None = None,
        expect: Entry | None = None,  # what side `to` must still hold (None: absent)
        winner: Entry | None = None,  # conflict: the version that keeps the name
        copy_name: bytes = b"",  # conflict: where the losing version goes
        note: str = "",
    ) -> None:
        self.kind, self.path, self.to, self.src, self.expect = kind, path, to, src, expect
        self.winner, self.copy_name, self.note = winner, copy_name, note

    def __repr__(self) -> str:
        return f"Action({self.kind!r}, {self.path!r}, to={self.to}, note={self.note!r})"

    @property
    def other(self) -> int:
        return 3 - self.to


class Plan:
    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.conflicts: list[Action] = []
        self.skipped: list[tuple[bytes, str]] = []


def changed(now: Entry | None, then: Entry | None) -> bool:
    if now is None or then is None:
        return (now is None) != (then is None)
    if now.type != then.type:
        return True
    if now.type == "d":
        return now.mode != then.mode  # size, mtime and inode of a dir are not compared (scans give 0)
    if now.type == "l":
        return now.link != then.link
    return now.size != then.size or now.mtime != then.mtime or now.mode != then.mode or now.ino != then.ino


def conflict_name(path: bytes, host: str, now: float | None = None, taken: Callable[[bytes], bool] = bool) -> bytes:
    """dir/stem.conflict-<host>-<YYYYmmdd-HHMMSS>.ext: sorts beside the original, keeps the type's
    extension; `-2`, `-3`... after the stamp when that name is taken on either side."""
    head, _, name = path.rpartition(b"/")
    dot = name.rfind(b".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, b"")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)).encode()
    tag = b".conflict-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in host).encode() + b"-" + stamp
    n = 1
    while True:
        suffix = tag + (b"-%d" % n if n > 1 else b"")
        candidate = (head + b"/" if head else b"") + stem[: 255 - len(suffix) - len(ext)] + suffix + ext
        if not taken(candidate):
            return candidate
        n += 1


def _under(path: bytes, top: bytes) -> bool:
    return path.startswith(top + b"/")


def reconcile(
    prev: Prev,
    side1: SideView,
    side2: SideView,
    *,
    policy: str = "keep-both",
    hashes: Callable[[list[bytes]], Mapping[bytes, tuple[str | None, str | None]]],
    hosts: tuple[str, str] = ("path1", "path2"),
    unreadable: Iterable[tuple[int, bytes]] = (),
    now: float | None = None,
) -> Plan:
    """Decide every path.  `hashes` gets, in one call, every path whose bytes must be
    compared (both sides changed to files of one size, or a racily clean record) and answers
    each with both sides' digests (None where a file could not be read)."""
    plan = Plan()
    blocked = [(s, top) for s, top in unreadable]
    get1, get2, getp = side1.get, side2.get, prev.get
    changes: list[tuple[bytes, Entry | None, Entry | None, bool, bool]] = []
    suspects: dict[bytes, tuple[bool, bool]] = {}
    recorded: dict[bytes, tuple[str | None, str | None]] = {}  # a racy record's digest, when kept
    for p in sorted(set(side1.changed).union(side1.missing, side2.changed, side2.missing)):
        a, b = as_entry(get1(p)), as_entry(get2(p))
        raw = getp(p)
        if blocked and any(top == b"" or p == top or _under(p, top) for _s, top in blocked):
            plan.skipped.append((p, "in a directory that could not be read"))
            continue
        if (a is not None and a.type == "o") or (b is not None and b.type == "o"):
            plan.skipped.append((p, "not a regular file, directory or symlink"))
            continue
        if raw is None:
            c1, c2, r1, r2 = a is not None, b is not None, False, False
        else:
            c1, r1 = _compare(a, as_entry(raw[0]))
            c2, r2 = _compare(b, as_entry(raw[1]))
        if (r1 or r2) and not c1 and not c2 and raw is not None:
            suspects[p] = (r1, r2)
            recorded[p] = (_digest_of(raw[0]) if r1 else None, _digest_of(raw[1]) if r2 else None)
        if c1 or c2 or r1 or r2:
            changes.append((p, a, b, c1, c2))
    ask = [
        p for p, a, b, c1, c2 in changes
        if ((c1 and c2) or p in suspects) and a is not None and b is not None and _needs_bytes(a, b)
    ]  # fmt: skip
    digests = hashes(ask) if ask else {}
    equal = {p for p, (x, y) in digests.items() if x is not None and x == y}
    for k, (p, a, b, _c1, _c2) in enumerate(changes):
        r = suspects.get(p)
        if r is not None and p in digests:
            cur, rec = digests[p], recorded[p]
            if rec[0] is not None or rec[1] is not None:  # each racy side against its own record
                changes[k] = (p, a, b, r[0] and cur[0] != rec[0], r[1] and cur[1] != rec[1])
            elif p not in equal:  # no record of the bytes: differing sides mean the racy side(s) changed
                changes[k] = (p, a, b, r[0], r[1])
    out = plan.actions
    planned: set[bytes] = set()
    for p, a, b, c1, c2 in changes:
        if not c1 and not c2:  # racily clean and unchanged after all: recorded again, against this scan
            out.append(Action("record", p, src=a, expect=b))
        elif c1 and not c2:
            out.append(_propagate(p, a, b, to=2))
        elif c2 and not c1:
            out.append(_propagate(p, b, a, to=1))
        elif a is None and b is None:
            out.append(Action("forget", p))
        elif a is None:
            out.append(_propagate(p, b, None, to=1))  # deleted here, changed there: the change wins
        elif b is None:
            out.append(_propagate(p, a, None, to=2))
        elif _equal(p, a, b, equal):
            if a.type == "f" and (a.mtime, a.mode) != (b.mtime, b.mode):  # same bytes: align the metadata
                to = 1 if b.mtime > a.mtime else 2
                out.append(Action("meta", p, to=to, src=b if to == 1 else a, expect=a if to == 1 else b))
            else:
                out.append(Action("record", p, src=a, expect=b))
        else:
            act = _conflict(p, a, b, policy, hosts, now, lambda q: q in side1 or q in side2 or q in planned)
            planned.add(act.copy_name)
            out.append(act)
            plan.conflicts.append(act)
    _keep_dirs_with_survivors(
        plan, side1, side2, lambda q, loser: conflict_name(q, hosts[loser - 1], now, lambda n: n in side1 or n in side2)
    )
    told = {p for p, _why in plan.skipped}
    for _side, top in blocked:  # said even where nothing was recorded there yet (a first pass)
        if top not in told:
            told.add(top)
            plan.skipped.append((top, "could not be read: left alone on both sides"))
    return plan


def _propagate(p: bytes, new: Entry | None, old: Entry | None, to: int) -> Action:
    if new is None:
        assert old is not None
        return Action("rmdir" if old.type == "d" else "delete", p, to=to, expect=old)
    return Action("mkdir" if new.type == "d" else "copy", p, to=to, src=new, expect=old)


def _compare(now: Entry | None, then: Entry | None) -> tuple[bool, bool]:
    """(changed, racy): a racily clean record (its inode negated, see the engine) that matches
    in everything else is not a change, but its bytes must be compared once."""
    if then is not None and then.ino < 0 and then.type == "f":
        clean = then._replace(ino=-1 - then.ino)
        if not changed(now, clean):
            return False, True
        return True, False
    return changed(now, then), False


def _digest_of(raw: Raw | None) -> str | None:
    """A racy file record may carry its content digest where a link's target would be."""
    if raw is None or raw[0] != "f" or not raw[5]:
        return None
    d = raw[5]
    return d.decode() if isinstance(d, bytes) else str(d)


def _needs_bytes(a: Entry, b: Entry) -> bool:
    """Two files of one size: only their bytes tell.  An equal mtime, even to the nanosecond,
    proves nothing (two writes in one clock tick share it; cp -p, tar and rsync -t copy it)."""
    return a.type == b.type == "f" and a.size == b.size


def _equal(p: bytes, a: Entry, b: Entry, equal_bytes: set[bytes]) -> bool:
    if a.type != b.type:
        return False
    if a.type == "d":
        return True
    if a.type == "l":
        return a.link == b.link
    return a.size == b.size and p in equal_bytes


def _conflict(
    p: bytes, a: Entry, b: Entry, policy: str, hosts: tuple[str, str], now: float | None, taken: Callable[[bytes], bool]
) -> Action:
    if (a.type == "d") != (b.type == "d"):  # file vs dir: the dir keeps the name, whatever the policy
        loser = 2 if a.type == "d" else 1
        keep_both = True
    elif policy == "keep-both":
        loser = 1 if a.mtime < b.mtime else 2
        keep_both = True
    else:
        winner = {"path1": 1, "path2": 2}.get(policy) or (2 if b.mtime > a.mtime else 1)
        loser = 3 - winner
        keep_both = False
    win, lose = (b, a) if loser == 1 else (a, b)
    if not keep_both:  # the winner overwrites; the agent keeps the loser in that side's backups
        return Action("copy", p, to=loser, src=win, expect=lose, note=f"conflict: {policy}")
    return Action(
        "conflict", p, to=loser, src=lose, expect=lose, winner=win,
        copy_name=conflict_name(p, hosts[loser - 1], now, taken), note="conflict: keep-both",
    )  # fmt: skip


def _keep_dirs_with_survivors(plan: Plan, side1: Side, side2: Side, name_for: Callable[[bytes, int], bytes]) -> None:
    """A dir that one side removed, or replaced by a file, stays while anything lives under it on
    the other side: a removal becomes a make on the side that lost it, a replacement a conflict
    the dir wins (the file lives on as a conflict copy)."""
    doomed = [
        a
        for a in plan.actions
        if a.kind == "rmdir"
        or (
            a.kind == "copy"
            and a.expect is not None
            and a.expect.type == "d"
            and a.src is not None
            and a.src.type != "d"
        )
    ]
    if not doomed:
        return
    present: dict[int, set[bytes]] = {1: set(side1), 2: set(side2)}
    for act in plan.actions:
        if act.kind in ("delete", "rmdir"):
            present[act.to].discard(act.path)
        elif act.kind in ("copy", "mkdir"):
            present[act.to].add(act.path)
        elif act.kind == "conflict":
            present[act.to].add(act.copy_name)
            present[act.other].add(act.copy_name)
    for act in sorted(doomed, key=lambda a: a.path.count(b"/")):  # parents first
        if not any(_under(q, act.path) for q in present[act.to]):
            continue
        if act.kind == "rmdir":
            src = as_entry((side1 if act.to == 1 else side2).get(act.path))
            back = act.other
            act.kind, act.to, act.src, act.expect = "mkdir", back, src, None
            act.note = "kept: something new lives inside"
            present[back].add(act.path)
        else:  # the file's side renames its file aside and gets the dir
            file, folder, loser = act.src, act.expect, act.other
            act.kind, act.to, act.src, act.expect, act.winner = "conflict", loser, file, file, folder
            act.copy_name = name_for(act.path, loser)
            act.note = "conflict: a file and a non-empty directory"
            plan.conflicts.append(act)


PHASES = {"conflict": 0, "delete": 1, "rmdir": 2, "mkdir": 3, "copy": 4, "meta": 4, "record": 5, "forget": 5}


def ordered(actions: Iterable[Action]) -> list[Action]:
    """Renames of conflicts, then deletes (deepest first), dir removals, dir makes, copies; within a
    phase, one side's actions together, so that they travel as one batch."""

    def key(a: Action) -> tuple[int, int, int, bytes]:
        depth = a.path.count(b"/")
        return (PHASES[a.kind], a.to, -depth if a.kind in ("delete", "rmdir") else depth, a.path)

    return sorted(actions, key=key)
