"""`rclone lsf --csv --format pst --time-format max` rows read as a listing: the width of the times
says the precision, and anything not in that shape is no listing (the pass then lists by rcd)."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from tether.transport.rclone_lsf import parse

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def printed(ns: int, digits: int) -> str:
    """A time as rclone prints it with `max` at a precision of 10**(9 - digits) ns, in UTC."""
    when = _EPOCH + datetime.timedelta(microseconds=ns // 1000)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{ns % 10**9:09d}"[: 20 + digits] if digits else text


@given(st.lists(st.integers(0, 4_000_000_000 * 10**9), min_size=1, max_size=30), st.integers(0, 9))
def test_times_read_back_cut_to_the_printed_precision(times: list[int], digits: int) -> None:
    rows = [[f"f{i}", str(i), printed(ns, digits)] for i, ns in enumerate(times)]
    got = parse(rows)
    assert got is not None
    step = 10 ** (9 - digits)
    assert got.precision_ns == step
    assert got.entries == {f"f{i}": ("f", i, ns - ns % step) for i, ns in enumerate(times)}
    for i, ns in enumerate(times):  # the source's own time is the same file at that precision
        assert got.same(i, ns, i, got.entries[f"f{i}"][2])
        assert not got.same(i, ns + step, i, got.entries[f"f{i}"][2])


def test_directories_and_the_meta_folder() -> None:
    when = "2026-12-06 08:27:01.500999911"
    rows = [["d/", "-1", when], ["d/f,\"x\"\n.txt", "3", when], [".tether/", "-1", when],
            [".tether/versions/f", "5", when], ["sub/.tether/f", "1", when]]  # fmt: skip
    got = parse(rows)
    assert got is not None and got.precision_ns == 1
    ns = int(datetime.datetime(2026, 12, 6, 8, 27, 1, tzinfo=datetime.UTC).timestamp()) * 10**9 + 500999911
    assert got.entries == {"d": ("d", 0, 0), 'd/f,"x"\n.txt': ("f", 3, ns), "sub/.tether/f": ("f", 1, ns)}


def test_an_empty_listing_is_one() -> None:
    got = parse([])
    assert got is not None and got.entries == {}


def test_rows_of_another_shape_are_no_listing() -> None:
    ok = "2026-12-06 08:27:01"
    assert parse([["f", "1", "2026-12-06 08:27"]]) is None  # minutes: coarser than a second
    assert parse([["f", "1", "2026-12-06"]]) is None
    assert parse([["f", "1", ok], ["g", "1", ok + ".5"]]) is None  # two layouts
    assert parse([["f", "x", ok]]) is None  # a size that is not one
    assert parse([["f", "1", "2026-13-06 08:27:01"]]) is None  # a date that is not one
    assert parse([["f", "1", "2026-12-06 24:00:01"]]) is None  # an hour that is not one
    assert parse([["f", "1", "2026-12-06 08:2x:01"]]) is None  # a minute that is not one
    assert parse([["f", "1"]]) is None  # a field missing
    assert parse([["f", "1", ok, "extra"]]) is None
