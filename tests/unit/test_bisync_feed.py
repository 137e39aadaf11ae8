"""What a continuous bisync pass is fed: the narrowest set of paths, or everything."""

from __future__ import annotations

import random

from tether.bisync.runner import MAX_NARROW, Feed, tops_of


def test_tops_drop_what_an_ancestor_covers() -> None:
    assert tops_of([b"d/e/f", b"d", b"dx", b"a/b", b"a/b", b"a/bc"]) == [b"a/b", b"a/bc", b"d", b"dx"]


def test_tops_cover_every_path_with_nothing_twice() -> None:
    rng = random.Random(11)
    names = [b"a", b"b", b"ab"]
    for _ in range(2000):
        paths = {b"/".join(rng.choice(names) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 12))}
        tops = tops_of(paths)
        for p in paths:
            assert sum(1 for t in tops if p == t or p.startswith(t + b"/")) == 1
        assert set(tops) <= paths


def test_the_feed_starts_full_then_narrows_and_widens_past_the_limit() -> None:
    feed = Feed()
    assert feed.take(0) == (True, [])  # the first pass looks at everything
    assert feed.take(0) is None
    feed.add([b"d/x", b"d"])
    assert feed.take(0) == (False, [b"d"])
    feed.add(b"f%d" % i for i in range(MAX_NARROW + 1))
    assert feed.take(0) == (True, [])
    feed.add([b"a"], full=True)
    assert feed.take(0) == (True, [])
