"""The bisync decision table, in memory: every row as data, in both orientations, plus random
states checked against rules that hold for any input (thousands of cases a second)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tether.bisync.plan import Entry, Plan, SideView, reconcile

S = 1_000_000_000


def F(v: int = 1, size: int = 10, ino: int = 0, mtime: int | None = None) -> Entry:
    """A file version v; versions differ in mtime unless told otherwise."""
    return Entry("f", size, mtime if mtime is not None else v * S + 123, 0o644, ino or 100 + v)


def racy(e: Entry, digest: bytes | None = None) -> Entry:
    """As the engine records an entry too close to its scan (the inode negated), with the
    digest of its bytes where the pass knew them."""
    return e._replace(ino=-1 - e.ino, link=digest)


D = Entry("d", 0, 0, 0o755, 0)
L = Entry("l", 3, 5 * S, 0, 7, b"tgt")
X = None  # absent
SAME, DIFF = True, False

# (name, recorded at the last sync (path1, path2) or None, now (path1, path2), bytes equal?, actions)
# An action is (kind, side it changes; None where either may be: records, and which version a
# conflict renames aside, which follows the mtimes); the last column: were contents compared.
Pair = tuple[Entry | None, Entry | None]
ROWS: list[tuple[str, Pair | None, Pair, bool, list[tuple[str, int | None]], bool]] = [
    ("unchanged", (F(1), F(1)), (F(1), F(1)), SAME, [], False),
    ("modified on one side", (F(1), F(1)), (F(2), F(1)), SAME, [("copy", 2)], False),
    ("new on one side", None, (F(1), X), SAME, [("copy", 2)], False),
    ("deleted on one side", (F(1), F(1)), (X, F(1)), SAME, [("delete", 2)], False),
    ("modified vs deleted: the change wins", (F(1), F(1)), (F(2), X), SAME, [("copy", 2)], False),
    ("deleted on both", (F(1), F(1)), (X, X), SAME, [("forget", None)], False),
    ("same edit on both, same mtime", (F(1), F(1)), (F(2), F(2)), SAME, [("record", None)], True),
    ("same bytes, different mtimes: the older takes the newer", (F(1), F(1)), (F(2), F(3)), SAME, [("meta", 1)], True),
    (
        "one size, one ns mtime, other bytes: a conflict",
        (F(1), F(1)),
        (F(2), F(2, ino=9)),
        DIFF,
        [("conflict", None)],
        True,
    ),
    (
        "whole-second mtimes, other bytes",
        (F(1), F(1)),
        (F(2, mtime=4 * S), F(3, mtime=4 * S)),
        DIFF,
        [("conflict", None)],
        True,
    ),
    (
        "different sizes on both: a conflict",
        (F(1), F(1)),
        (F(2, size=11), F(3, size=12)),
        SAME,
        [("conflict", None)],
        False,
    ),
    ("first run, equal files", None, (F(1), F(1)), SAME, [("record", None)], True),
    ("first run, one size and mtime, other bytes", None, (F(1), F(1, ino=5)), DIFF, [("conflict", None)], True),
    ("racily clean, bytes now differ: that side changed", (racy(F(1)), F(1)), (F(1), F(1)), DIFF, [("copy", 2)], True),
    ("racily clean, bytes equal: recorded again", (racy(F(1)), F(1)), (F(1), F(1)), SAME, [("record", None)], True),
    (
        "racily clean on both, bytes differ: a conflict",
        (racy(F(1)), racy(F(1))),
        (F(1), F(1)),
        DIFF,
        [("conflict", None)],
        True,
    ),
    (
        "racily clean on both, digests kept, neither changed",
        (racy(F(1), b"same"), racy(F(1), b"same")),
        (F(1), F(1)),
        SAME,
        [("record", None)],
        True,
    ),
    ("racily clean here, changed there: the change wins", (racy(F(1)), F(1)), (F(1), F(2)), SAME, [("copy", 1)], False),
    ("racily clean here, deleted there", (racy(F(1)), F(1)), (F(1), X), SAME, [("delete", 1)], False),
    ("racily clean, really modified", (racy(F(1)), F(1)), (F(2), F(1)), SAME, [("copy", 2)], False),
    ("file vs dir, both new: the dir keeps the name", None, (F(1), D), SAME, [("conflict", None)], False),
    ("new symlink", None, (L, X), SAME, [("copy", 2)], False),
    ("symlink retargeted", (L, L), (L._replace(link=b"other"), L), SAME, [("copy", 2)], False),
    ("new dir", None, (D, X), SAME, [("mkdir", 2)], False),
    ("dir removed", (D, D), (X, D), SAME, [("rmdir", 2)], False),
]


def _side(prev: dict[bytes, tuple[Entry | None, Entry | None]], i: int, now: dict[bytes, Entry]) -> SideView:
    changed = {p: e for p, e in now.items() if (prev.get(p) or (None, None))[i] != e}
    missing = {p for p, s in prev.items() if s[i] is not None and p not in now}
    return SideView(prev, i, changed, missing, len(now))  # type: ignore[arg-type]


def plan_for(
    prev: dict[bytes, tuple[Entry | None, Entry | None]],
    now1: dict[bytes, Entry],
    now2: dict[bytes, Entry],
    equal: Callable[[bytes], bool],
) -> tuple[Plan, list[bytes]]:
    asked: list[bytes] = []

    def hashes(paths: list[bytes]) -> dict[bytes, tuple[str | None, str | None]]:
        asked.extend(paths)
        return {p: ("same", "same") if equal(p) else ("one", "other") for p in paths}

    plan = reconcile(prev, _side(prev, 0, now1), _side(prev, 1, now2), hashes=hashes, now=0)
    return plan, asked


def _one(prev: Pair | None, now: Pair, same: bool) -> tuple[list[tuple[str, int]], bool]:
    p = b"x"
    plan, asked = plan_for(
        {p: prev} if prev else {},
        {p: now[0]} if now[0] else {},
        {p: now[1]} if now[1] else {},
        lambda _p: same,
    )
    return [(a.kind, a.to) for a in plan.actions if a.path == p], bool(asked)


@pytest.mark.parametrize("flip", [False, True], ids=["as-written", "sides-swapped"])
@pytest.mark.parametrize(("name", "prev", "now", "same", "want", "hashed"), ROWS, ids=[r[0] for r in ROWS])
def test_decision_table(
    name: str, prev: Pair | None, now: Pair, same: bool, want: list[tuple[str, int | None]], hashed: bool, flip: bool
) -> None:
    if flip:
        prev = (prev[1], prev[0]) if prev else None
        now = (now[1], now[0])
        want = [(k, None if to is None else 3 - to) for k, to in want]
    got, asked = _one(prev, now, same)
    assert [k for k, _to in got] == [k for k, _to in want], name
    assert [to for (_k, to), (_k2, w) in zip(got, want, strict=True) if w is not None] == [
        w for _k, w in want if w is not None
    ], name
    assert asked == hashed, "contents are compared only where both sides changed or a record is racy"


def test_first_run_never_deletes_and_hashes_each_pair_once() -> None:
    rng = random.Random(7)
    now1 = {b"f%d" % i: F(rng.randint(1, 3)) for i in range(200)}
    now2 = {b"f%d" % i: F(rng.randint(1, 3)) for i in range(100, 300)}
    plan, asked = plan_for({}, now1, now2, lambda p: p.endswith(b"7"))
    assert not [a for a in plan.actions if a.kind in ("delete", "rmdir")]
    assert sorted(asked) == sorted(p for p in now1 if p in now2)


def test_what_could_not_be_read_is_said_even_on_a_first_run() -> None:
    """Nothing was recorded under it, so no path there came up as changed: it went unsaid."""
    now1 = {b"locked": D, b"ok": F(1)}
    plan = reconcile({}, _side({}, 0, now1), _side({}, 1, {}), hashes=lambda ps: {}, now=0,
                     unreadable=[(1, b"locked/inside"), (1, b"locked/other")])  # fmt: skip
    assert plan.skipped == [(b"locked/inside", "could not be read: left alone on both sides"),
                            (b"locked/other", "could not be read: left alone on both sides")]  # fmt: skip
    assert sorted(a.path for a in plan.actions) == [b"locked", b"ok"]


PRESENT = [F(1), F(2), F(2, ino=55), F(3, size=20), D, L]
KINDS: list[Entry | None] = [None, *PRESENT]


def test_random_states_keep_the_rules() -> None:
    """Any prev/now combination: every destructive step names what it expects to find, which is
    exactly what the scan saw; a side that changed is never the one deleted or overwritten
    without its version being the source, a conflict, or racy-with-bytes-compared."""
    rng = random.Random(2026)
    names = [b"a", b"b", b"c", b"d/e"]
    for _ in range(3000):
        prev: dict[bytes, tuple[Entry | None, Entry | None]] = {}
        now1: dict[bytes, Entry] = {}
        now2: dict[bytes, Entry] = {}
        for p in names:
            if rng.random() < 0.7:
                e = rng.choice(PRESENT)
                prev[p] = (e, rng.choice([e, racy(e) if e.type == "f" and e.ino >= 0 else e]))
            for now in (now1, now2):
                n = rng.choice(KINDS)
                if n is not None:
                    now[p] = n
        plan, _asked = plan_for(prev, now1, now2, lambda _p: rng.random() < 0.5)
        for a in plan.actions:
            if a.kind in ("delete", "rmdir", "copy", "mkdir", "meta", "conflict") and a.path in names:
                here = (now1 if a.to == 1 else now2).get(a.path)
                if a.kind == "conflict":
                    assert a.src == here
                elif a.kind == "mkdir" and a.note.startswith("kept"):
                    continue
                else:
                    assert a.expect == here, (a, prev.get(a.path), now1.get(a.path), now2.get(a.path))
            if a.kind in ("delete", "rmdir"):
                rec = prev.get(a.path)
                assert rec is not None, "nothing is deleted without a record of it"
                assert rec[a.to - 1] is not None


@pytest.mark.parametrize("edited", [1, 2])
def test_racy_records_with_digests_tell_which_side_changed(edited: int) -> None:
    """Both sides recorded racily with the digest of what they held: only the side whose bytes
    no longer match its own record changed, and it is copied over the other (never a conflict)."""
    prev: dict[bytes, tuple[Entry | None, Entry | None]] = {b"x": (racy(F(1), b"v1"), racy(F(1), b"v1"))}
    now = {b"x": F(1)}
    asked: list[bytes] = []

    def hashes(paths: list[bytes]) -> dict[bytes, tuple[str | None, str | None]]:
        asked.extend(paths)
        return {p: ("v2", "v1") if edited == 1 else ("v1", "v2") for p in paths}

    plan = reconcile(prev, _side(prev, 0, now), _side(prev, 1, now), hashes=hashes, now=0)
    assert [(a.kind, a.to) for a in plan.actions] == [("copy", 3 - edited)]
    assert asked == [b"x"]
