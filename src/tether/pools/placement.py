"""Which member of a pool takes each new file: the policies, with caps and reserves, as data.

rclone's union backend gives a pool its one listing, its reads and its mount; but its create
policies (most free space, least used) ask every member's `about`, which some backends cannot
answer (s3, sftp servers without statvfs), and it knows no per-member cap. So tether places new
files itself, from what it counts: the bytes of the pool's files on each member (listed, plus
what it sent since) and, where a backend says it, the member's free space.

Policies:
    most-free    the member with the most room left (under its cap, above its reserve)
    least-used   the member holding the fewest of the pool's bytes
    by-path      a member chosen by the file's folder (rendezvous hashing: every file of a folder
                 lands on one member, and adding a member moves only what it takes over); the
                 next in that folder's order when the first is full or down

A file that no member can take (every one down, full, or at its reserve) is not placed: the
caller says so and sends nothing of it (never part of a file).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

POLICIES = ("most-free", "least-used", "by-path")


@dataclass(frozen=True)
class Member:
    name: str  # the member as its spec says it: `remote:path`, or a local folder
    cap: int | None = None  # the most bytes of the pool's files it may hold; None: no cap
    reserve: int = 0  # free space to leave on it, where its backend says how much it has


@dataclass
class Room:
    """What is known of a member now."""

    used: int = 0  # bytes of the pool's files on it: counted (listed, plus what was sent since)
    free: int | None = None  # free space as its backend says (`rclone about`); None: it cannot say
    up: bool = True


def headroom(m: Member, r: Room) -> float:
    """Bytes the member may still take: under its cap, and leaving its reserve free."""
    room = math.inf if m.cap is None else float(m.cap - r.used)
    if r.free is not None:
        room = min(room, float(r.free - m.reserve))
    return room


def folder_of(path: str) -> str:
    return path.rpartition("/")[0]


def ranked(key: str, members: Sequence[Member]) -> list[int]:
    """The members in the order of preference for `key` (highest random weight first): stable
    across runs and machines, and a member added or removed changes only its own share."""

    def weight(i: int) -> bytes:
        return hashlib.blake2b(f"{members[i].name}\0{key}".encode("utf-8", "surrogateescape"), digest_size=8).digest()

    return sorted(range(len(members)), key=weight, reverse=True)


def choose(path: str, size: int, members: Sequence[Member], rooms: Sequence[Room], policy: str) -> int | None:
    """The index of the member that takes a new file of `size` bytes at `path`, or None."""
    if policy not in POLICIES:
        raise ValueError(f"unknown pool policy {policy!r}")
    fits = [i for i in range(len(members)) if rooms[i].up and headroom(members[i], rooms[i]) >= size]
    if not fits:
        return None
    if policy == "by-path":
        ok = set(fits)
        return next(i for i in ranked(folder_of(path), members) if i in ok)
    if policy == "least-used":
        return min(fits, key=lambda i: (rooms[i].used, i))
    # most-free; where no member can say (no cap, no free space known), the least used of them
    return max(fits, key=lambda i: (headroom(members[i], rooms[i]), -rooms[i].used, -i))


@dataclass
class Placed:
    where: dict[str, int]  # path -> member index
    unplaced: list[str]  # the files no member could take, in the order given
    leaving: dict[str, int]  # changed files placed away from the member holding them (its index):
    # their old copy goes from there once the new one is in place


def place(
    files: Iterable[tuple[str, int]],
    members: Sequence[Member],
    rooms: Sequence[Room],
    policy: str,
    held: dict[str, tuple[int, int]] | None = None,
) -> Placed:
    """Members for a batch of new or changed files ((path, size), in order), each counted as
    it is placed so the batch itself keeps every cap and reserve. `held` says where the pool
    already keeps a path (member, its size there): a changed file stays on its member while it
    fits there (a rename stays a rename), else it is placed anew. `rooms` are updated."""
    held = held or {}
    out = Placed({}, [], {})
    for path, size in files:
        was = held.get(path)
        if was is not None:
            i, old = was
            r = rooms[i]
            if r.up and headroom(members[i], r) + old >= size:
                _take(r, size - old)
                out.where[path] = i
                continue
        i2 = choose(path, size, members, rooms, policy)
        if i2 is None:
            out.unplaced.append(path)
            continue
        _take(rooms[i2], size)
        out.where[path] = i2
        if was is not None:
            _take(rooms[was[0]], -was[1])  # counted free once the old copy is gone
            out.leaving[path] = was[0]
    return out


def _take(r: Room, size: int) -> None:
    r.used += size
    if r.free is not None:
        r.free -= size
