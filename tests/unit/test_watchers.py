"""Past the inotify limit, `auto` picks fanotify, else periodic passes, else refuses: as data."""

from __future__ import annotations

import itertools

import pytest

from tether.errors import UsageError
from tether.watch import too_many_watches
from tether.watchers import fallback

OVER = too_many_watches("/data", 300_000, 10_000)


def test_fanotify_when_it_can_else_passes_when_the_job_has_a_period_else_a_refusal() -> None:
    for reason, interval in itertools.product((None, "needs CAP_SYS_ADMIN"), (0.0, 0.5, 300.0, 86400.0)):
        if reason is None:
            assert fallback(OVER, reason, interval) == "fanotify"
        elif interval > 0:
            assert fallback(OVER, reason, interval) == "passes"
        else:
            with pytest.raises(UsageError) as e:
                fallback(OVER, reason, interval)
            said = str(e.value)  # every way out, in one message
            for part in ("300000 inotify watches", "10000", "needs CAP_SYS_ADMIN", "sysctl", "root", "interval = "):
                assert part in said, (part, said)
