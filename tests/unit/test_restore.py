"""What a path held at a time, as data: its kept versions and its live file on one time line."""

from __future__ import annotations

import random

import pytest

from tether.restore import LIVE, held_at, parse_time
from tether.versions import Version

T0 = 1_800_000_000.0


def v(kept_at: float, origin: str, mtime: float, name: str = "") -> Version:
    return Version(b"f", T0 + kept_at, origin, (name or f"{kept_at}-{origin}").encode(), 1, int((T0 + mtime) * 1e9))


# f written at 10, replaced at 20 (by a copy written at 15), deleted at 30, written again at 40 (live)
HISTORY = [v(20, "replaced", 10, "a"), v(30, "deleted", 15, "b")]
CASES = [
    (5, None),  # before it was written
    (10, None),  # written at 10: held from just after
    (12, "a"),
    (20, "a"),  # replaced at 20: held the old one up to that moment
    (21, "b"),  # then the copy written at 15
    (30, "b"),
    (35, None),  # deleted at 30, not written again until 40
    (41, LIVE),
]


@pytest.mark.parametrize(("t", "want"), CASES)
def test_a_history_of_replace_delete_and_write_again(t: float, want: str | None) -> None:
    got = held_at(HISTORY, T0 + 40, T0 + t)
    assert (got if got in (None, LIVE) else got.stored.decode()) == want  # type: ignore[union-attr]


def test_a_conflict_loser_was_held_until_the_winner_took_the_name() -> None:
    hist = [v(20, "conflict", 5, "loser")]
    assert held_at(hist, T0 + 18, T0 + 19) is hist[0]  # the winner's mtime (18) is earlier: the name says when
    assert held_at(hist, T0 + 18, T0 + 21) == LIVE


def test_without_versions_the_live_file_is_held_from_its_mtime() -> None:
    assert held_at([], T0, T0 - 1) is None and held_at([], T0, T0 + 1) == LIVE and held_at([], None, T0) is None


def test_any_history_gives_one_answer_at_every_time_and_the_live_file_last() -> None:
    """Random histories: the answer never goes back in the time line, and after the last version
    is set aside only the live file (or nothing) is held."""
    rng = random.Random(7)
    for _ in range(2000):
        k = sorted(rng.sample(range(1, 100), rng.randint(0, 5)))
        hist = [
            v(x, rng.choice(["deleted", "replaced", "conflict", "trash"]), x - rng.randint(0, 30), str(x)) for x in k
        ]
        live = rng.choice([None, T0 + rng.randint(0, 120)])
        order = [None, *hist, LIVE]
        last = -1
        for t in range(0, 130):
            got = held_at(hist, live, T0 + t + 0.5)
            if got is not None:
                pos = order.index(got)
                assert pos >= last, (hist, live, t)
                last = pos
            if k and t >= k[-1]:
                assert got in (None, LIVE)


def test_times_are_read_as_a_person_writes_them() -> None:
    now = T0
    assert parse_time("-30m", now) == now - 1800 and parse_time("-2h", now) == now - 7200
    assert parse_time("-1d", now) == now - 86400 and parse_time("-10s", now) == now - 10
    a = parse_time("2026-12-06 14:19")
    assert a == parse_time("2026-12-06T14:19") == parse_time("2026-12-06 14:19:00")
    assert parse_time("2026-12-06") == parse_time("2026-12-06 00:00")
    for bad in ("yesterday", "-5y", "2026-13-01", ""):
        with pytest.raises(Exception, match="is not a time"):
            parse_time(bad)
