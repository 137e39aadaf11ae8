"""Reading a watcher in tests, whichever backend: everything the operations before a call made."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tether.watch import BaseWatcher, Change, Coalescer

DEADLINE = 10.0


def gather(w: BaseWatcher, done: Callable[[list[Change]], bool]) -> list[Change]:
    """Read until `done` holds for what arrived, or fail at the deadline."""
    got: list[Change] = []
    end = time.monotonic() + DEADLINE
    while not done(got):
        assert time.monotonic() < end, f"gave up waiting; got {got}"
        got += w.read(0.1)
    return got


def batch(w: BaseWatcher) -> list[Change]:
    """The next coalesced batch: everything the operations before the call produced."""
    got = Coalescer(w).next_batch(DEADLINE)
    assert got, "no events"
    return got


def has(*wanted: Change) -> Callable[[list[Change]], bool]:
    return lambda got: all(c in got for c in wanted)


def write(p: Path | bytes, data: bytes = b"x") -> None:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
