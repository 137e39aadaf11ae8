"""The versions reader as data: each stored name -> the version it is, or not one."""

from __future__ import annotations

import time

import pytest

from tether.versions import classify

DAY = time.mktime((2026, 12, 4, 0, 0, 0, 0, 0, -1))
STAMP = time.mktime((2026, 12, 4, 10, 11, 12, 0, 0, -1))

CASES: list[tuple[bytes, frozenset[bytes], tuple[bytes, str, float] | None]] = [
    # the one layout
    (b".tether/versions/a/doc~20261204-101112~deleted.txt", frozenset(), (b"a/doc.txt", "deleted", STAMP)),
    (b".tether/versions/doc~20261204-101112-2~replaced.txt", frozenset(), (b"doc.txt", "replaced", STAMP + 0.002)),
    (b".tether/versions/d/.rc~20261204-101112~conflict", frozenset(), (b"d/.rc", "conflict", STAMP)),
    (b".tether/versions/w~20261204-101112~deleted/in/f.txt", frozenset(), (b"w/in/f.txt", "deleted", STAMP)),
    (b".tether/versions/a~b~20261204-101112~replaced.x~", frozenset(), (b"a~b.x~", "replaced", STAMP)),
    (b".tether/versions/a/notes", frozenset(), None),
    (b".tether/versions/a/doc~2026~deleted.txt", frozenset(), None),
    (b".tether/incoming/0001-9/a", frozenset(), None),
    # the older layouts, read where they lie
    (b".tether/trash/2026-12-04/a/doc.txt", frozenset(), (b"a/doc.txt", "trash", DAY)),
    (b".tether/trash/2026-12-04.2/doc.txt", frozenset(), (b"doc.txt", "trash", DAY)),
    (b".tether/trash/2026-12-04/doc.1.txt", frozenset({b"doc.txt", b"doc.1.txt"}), (b"doc.txt", "trash", DAY)),
    (b".tether/trash/2026-12-04/doc.1.txt", frozenset({b"doc.1.txt"}), (b"doc.1.txt", "trash", DAY)),
    (b".tether/trash/2026-12-04/.incoming/1/x", frozenset(), None),
    (b".tether/trash/not-a-day/x", frozenset(), None),
    (b".tether/backups/d/f.txt.20261204-101112-250000", frozenset(), (b"d/f.txt", "replaced", STAMP + 0.25)),
    (b".tether/backups/f.txt.1.20261204-101112-000000", frozenset(), (b"f.txt", "replaced", STAMP)),
    (b".tether/backups/20261204-101112/d/f.txt", frozenset(), (b"d/f.txt", "backup", STAMP)),
    (b".tether/backups/20261204-101112-3/f.txt", frozenset(), (b"f.txt", "backup", STAMP)),
    (b".tether/backups/stray", frozenset(), None),
    (b".tether/state.db", frozenset(), None),
    (b"plain/file.txt", frozenset(), None),
    (b"name\nwith newline.\xff.20261204-101112-000000", frozenset(), None),  # not under backups: the user's
]


@pytest.mark.parametrize(("rel", "siblings", "want"), CASES)
def test_classify(rel: bytes, siblings: frozenset[bytes], want: tuple[bytes, str, float] | None) -> None:
    v = classify(rel, 7, 1, siblings)
    assert (None if v is None else (v.path, v.origin, v.kept_at)) == want
    if v:
        assert v.stored == rel and v.size == 7


def test_a_conflict_copy_counts_only_when_the_state_recorded_it() -> None:
    copy = b"d/notes.conflict-laptop-20261204-101112-2.md"
    assert classify(copy, 1, 1) is None
    v = classify(copy, 1, 1, conflict_copies=[copy])
    assert v is not None and (v.path, v.origin, v.kept_at) == (b"d/notes.md", "conflict", STAMP)
