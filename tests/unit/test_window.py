"""The event window's one decision, as data: when does a first change go without a window."""

from __future__ import annotations

import itertools

from tether.watch import QUICK_MAX_DELAY, goes_at_once

DELAYS = [0.0, 0.001, 0.005, QUICK_MAX_DELAY, QUICK_MAX_DELAY + 0.001, 0.5, 60.0]
QUIET = [0.0, 0.0005, 0.004, 0.005, 0.006, 0.05, 1.0, float("inf")]


def test_the_window_costs_nothing_only_when_nothing_is_pending_or_streaming() -> None:
    cases = 0
    for delay, quiet_for, settled in itertools.product(DELAYS, QUIET, (True, False)):
        got = goes_at_once(delay, quiet_for, settled)
        # a move seen from one side or a new file still being written is gathered; a user's
        # long window is a wish to batch, honoured
        if not settled or delay > QUICK_MAX_DELAY:
            assert not got, (delay, quiet_for)
        else:  # changes still streaming in (less than a window since the last) are gathered
            assert got == (quiet_for >= delay), (delay, quiet_for)
        cases += 1
    assert cases == len(DELAYS) * len(QUIET) * 2


def test_the_first_change_after_start_goes_at_once() -> None:
    assert goes_at_once(0.005, float("inf"), True)
