"""Pool placement as data: caps and reserves hold for every batch, policies choose as they say."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.pools.placement import POLICIES, Member, Room, choose, headroom, place, ranked

MB = 2**20

members_st = st.lists(
    st.builds(
        Member,
        name=st.sampled_from(["a:p", "b:p", "c:bucket/x", "/mnt/disk", "d:", "e:z"]),
        cap=st.one_of(st.none(), st.integers(0, 50 * MB)),
        reserve=st.integers(0, 5 * MB),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda m: m.name,
)
rooms_st = st.builds(
    Room, used=st.integers(0, 40 * MB), free=st.one_of(st.none(), st.integers(0, 60 * MB)), up=st.booleans()
)
files_st = st.lists(
    st.tuples(st.sampled_from(["a/x", "a/y", "b/z", "c/d/e", "top", "a/b/c/d", "f1", "g/h"]), st.integers(0, 8 * MB)),
    max_size=30,
    unique_by=lambda f: f[0],
)


@settings(max_examples=2000, deadline=None)
@given(members=members_st, data=st.data(), files=files_st, policy=st.sampled_from(POLICIES))
def test_a_batch_never_takes_a_member_over_its_cap_or_under_its_reserve(
    members: list[Member], data: st.DataObject, files: list[tuple[str, int]], policy: str
) -> None:
    rooms = [data.draw(rooms_st) for _ in members]
    before = [Room(r.used, r.free, r.up) for r in rooms]
    got = place(files, members, rooms, policy)
    sizes = dict(files)
    for i, m in enumerate(members):
        added = sum(sizes[p] for p, j in got.where.items() if j == i)
        if not added:
            continue
        assert before[i].up, "a file placed on a member that is down"
        if m.cap is not None:
            assert before[i].used + added <= m.cap
        free = before[i].free
        if free is not None:
            assert free - added >= m.reserve
        assert rooms[i].used == before[i].used + added  # counted as it was placed
    assert set(got.where) | set(got.unplaced) == set(sizes) and not set(got.where) & set(got.unplaced)
    for p in got.unplaced:  # refused only when no member had room for it (room only shrinks)
        assert all(headroom(m, r) < sizes[p] for m, r in zip(members, rooms, strict=True) if r.up)


@settings(max_examples=500, deadline=None)
@given(members=members_st, size=st.integers(0, 4 * MB), data=st.data())
def test_an_unplaced_file_had_no_member_with_room(members: list[Member], size: int, data: st.DataObject) -> None:
    rooms = [data.draw(rooms_st) for _ in members]
    for policy in POLICIES:
        i = choose("d/f", size, members, rooms, policy)
        roomy = [j for j, (m, r) in enumerate(zip(members, rooms, strict=True)) if r.up and headroom(m, r) >= size]
        assert (i is None) == (not roomy) and (i is None or i in roomy)


def test_most_free_takes_the_member_with_most_room_and_least_used_the_emptiest() -> None:
    ms = [Member("a:", cap=100), Member("b:", cap=300), Member("c:", cap=1000)]
    rooms = [Room(used=0), Room(used=100), Room(used=900)]  # room 100, 200, 100
    assert choose("f", 10, ms, rooms, "most-free") == 1
    assert choose("f", 10, ms, rooms, "least-used") == 0
    assert choose("f", 150, ms, rooms, "least-used") == 1  # the emptiest with room for it


def test_free_space_said_by_the_backend_counts_with_the_reserve() -> None:
    ms = [Member("a:", cap=None, reserve=50), Member("b:", cap=None)]
    rooms = [Room(used=0, free=100), Room(used=0, free=80)]  # a: 50 over its reserve, b: 80
    assert choose("f", 60, ms, rooms, "most-free") == 1
    assert choose("f", 90, ms, rooms, "most-free") is None


def test_members_that_cannot_say_their_space_take_turns_by_use() -> None:
    """No cap and no `about` (an s3 member): most-free cannot rank them by room; it fills the
    least used, so a batch spreads instead of landing on the first member."""
    ms = [Member("s3a:"), Member("s3b:"), Member("s3c:")]
    rooms = [Room(), Room(), Room()]
    got = place([(f"f{i}", 10) for i in range(9)], ms, rooms, "most-free")
    assert sorted(r.used for r in rooms) == [30, 30, 30] and not got.unplaced


def test_by_path_keeps_a_folder_on_one_member_and_moves_only_the_new_members_share() -> None:
    three = [Member("a:"), Member("b:"), Member("c:")]
    folders = [f"dir{i}" for i in range(600)]
    first = {d: choose(f"{d}/x", 1, three, [Room(), Room(), Room()], "by-path") for d in folders}
    assert all(choose(f"{d}/y", 5, three, [Room(), Room(), Room()], "by-path") == first[d] for d in folders)
    assert {*first.values()} == {0, 1, 2}
    four = [*three, Member("d:")]
    then = {d: choose(f"{d}/x", 1, four, [Room(), Room(), Room(), Room()], "by-path") for d in folders}
    moved = [d for d in folders if then[d] != first[d]]
    assert all(then[d] == 3 for d in moved) and 100 < len(moved) < 200  # about a quarter, all to d:


def test_by_path_goes_to_the_next_member_of_the_folder_when_the_first_is_full_or_down() -> None:
    ms = [Member("a:", cap=100), Member("b:", cap=100), Member("c:", cap=100)]
    order = ranked("docs", ms)
    rooms = [Room(), Room(), Room()]
    rooms[order[0]].used = 100
    assert choose("docs/x", 1, ms, rooms, "by-path") == order[1]
    rooms[order[1]].up = False
    assert choose("docs/x", 1, ms, rooms, "by-path") == order[2]


def test_a_changed_file_stays_on_its_member_while_it_fits_there() -> None:
    ms = [Member("a:", cap=100), Member("b:", cap=1000)]
    rooms = [Room(used=90), Room(used=0)]
    got = place([("f", 40)], ms, rooms, "least-used", held={"f": (0, 30)})  # 90 - 30 + 40 = 100: fits
    assert got.where == {"f": 0} and rooms[0].used == 100 and not got.leaving
    got = place([("f", 50)], ms, rooms, "least-used", held={"f": (0, 40)})  # 100 - 40 + 50 > 100
    assert got.where == {"f": 1} and got.leaving == {"f": 0} and (rooms[0].used, rooms[1].used) == (60, 50)


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pool policy"):
        choose("f", 1, [Member("a:")], [Room()], "random")


def test_headroom_is_unbounded_only_without_cap_and_without_free_space() -> None:
    assert headroom(Member("a:"), Room()) == math.inf
    assert headroom(Member("a:", cap=10), Room(used=4)) == 6
    assert headroom(Member("a:", reserve=3), Room(free=10)) == 7
