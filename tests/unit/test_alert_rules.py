"""The alert rules as data: event timelines in, the messages and pings that must come out."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from tether.alerts.config import Settings
from tether.alerts.rules import Rules
from tether.events import Event, pass_end

T = 10.0  # down_after in these timelines


def run(timeline: Sequence[tuple[float, str]], settings: Settings | None = None, until: float | None = None):
    """Feed (time, 'down'|'up') for one target, ticking every 0.25 s; the alert kinds, in order, with times."""
    rules = Rules(settings or Settings(down_after=T))
    out: list[tuple[str, float]] = []
    events = sorted(timeline)
    end = until if until is not None else (events[-1][0] if events else 0) + 3 * T
    now, i = 0.0, 0
    while now <= end:
        while i < len(events) and events[i][0] <= now:
            at, kind = events[i]
            alerts, _ = rules.feed(Event(kind, "j", "host:/t", at=at), at)
            out += [(a.kind, at) for a in alerts]
            i += 1
        alerts, _ = rules.tick(now)
        out += [(a.kind, now) for a in alerts]
        now += 0.25
    return out


def kinds(out):
    return [k for k, _ in out]


def test_a_blip_shorter_than_the_threshold_says_nothing():
    assert run([(1, "down"), (4, "up")]) == []


def test_an_outage_is_told_once_when_it_has_lasted_and_once_when_it_has_held_back():
    out = run([(1, "down"), (30, "up")])
    assert kinds(out) == ["down", "up"]
    assert out[0][1] == pytest.approx(1 + T, abs=0.25)
    assert out[1][1] == pytest.approx(30 + T, abs=0.25)


@pytest.mark.parametrize("flaps", [1, 5, 20])
def test_a_target_that_flaps_within_the_threshold_is_one_outage(flaps: int):
    # down for longer than T, then it flaps: back for 1 s, down for 1 s, `flaps` times, then stays up
    timeline: list[tuple[float, str]] = [(0, "down")]
    t = 2 * T
    for _ in range(flaps):
        timeline += [(t, "up"), (t + 1, "down")]
        t += 2
    timeline.append((t, "up"))
    assert kinds(run(timeline)) == ["down", "up"]


def test_flapping_before_the_threshold_counts_as_down_once_it_has_gone_on_long_enough():
    timeline = [(0, "down")]
    for k in range(1, 12):  # up and down every second for 11 s: never up for T
        timeline += [(2 * k - 1, "up"), (2 * k, "down")]
    timeline.append((30, "up"))
    out = run(timeline)
    assert kinds(out) == ["down", "up"]
    assert out[0][1] <= T + 1  # told when it had been bad for the threshold, not at the end


def test_random_flapping_never_sends_two_downs_in_a_row():
    rng = random.Random(7)
    for _ in range(300):
        t, timeline, state = 0.0, [], "up"
        for _ in range(rng.randrange(1, 15)):
            t += rng.choice([0.5, 1, 3, 9, 11, 25])
            state = "down" if state == "up" else "up"
            timeline.append((t, state))
        out = kinds(run(timeline))
        assert all(a != b for a, b in itertools.pairwise(out)), (timeline, out)
        assert out[:1] in ([], ["down"]), (timeline, out)
        # every down is followed by its up once the timeline ends up
        if state == "up":
            assert len(out) % 2 == 0, (timeline, out)


def feed(rules: Rules, *events: Event, now: float = 100.0):
    alerts, pings = [], []
    for e in events:
        a, p = rules.feed(e, now)
        alerts += a
        pings += p
    return alerts, pings


def test_a_failed_pass_is_one_message_listing_its_errors_and_pings_fail():
    rules = Rules(Settings())
    alerts, pings = feed(
        rules,
        Event("pass-begin", "j", "/t"),
        *[Event("error", "j", "/t", f"f{i}", "permission denied") for i in range(25)],
        pass_end("j", "/t", False, errors=25),
    )
    assert [a.kind for a in alerts] == ["error"]
    assert "f0: permission denied" in alerts[0].text and "and 5 more" in alerts[0].text
    assert [p.what for p in pings] == ["start", "fail"]


def test_conflicts_of_a_pass_are_one_message_and_the_pass_pings_success():
    rules = Rules(Settings())
    alerts, pings = feed(
        rules,
        Event("pass-begin", "j"),
        Event("conflict", "j", "", "a.txt", "keep-both: the other version is a.txt.conflict"),
        Event("conflict", "j", "", "b.txt", "keep-both"),
        pass_end("j", "", True, conflicts=2),
    )
    assert [a.subject for a in alerts] == ["j: 2 conflicts"]
    assert "a.txt" in alerts[0].text and "b.txt" in alerts[0].text
    assert [p.what for p in pings] == ["start", "success"]


def test_a_job_with_two_targets_pings_once_per_pass_and_fails_if_either_failed():
    rules = Rules(Settings())
    _, pings = feed(
        rules,
        Event("pass-begin", "j", "/a"), Event("pass-begin", "j", "/b"),
        pass_end("j", "/a", True), pass_end("j", "/b", False, errors=1),
    )  # fmt: skip
    assert [p.what for p in pings] == ["start", "fail"]


def test_a_refused_pass_is_told_and_closes_its_pass_for_the_heartbeat():
    rules = Rules(Settings())
    alerts, pings = feed(rules, Event("pass-begin", "j"), Event("refused", "j", detail="would delete 80% of path2"))
    assert [a.kind for a in alerts] == ["refused"] and "80%" in alerts[0].text
    assert [p.what for p in pings] == ["start", "fail"]


def test_the_same_alert_is_not_repeated_within_repeat_after_and_the_rate_limit_counts_what_it_holds():
    rules = Rules(Settings(repeat_after=60, max_per_hour=3))
    sent = []
    for i in range(10):
        a, _ = rules.feed(Event("error", "j", "/t", detail="disk full"), 1000.0 + i)
        sent += a
    assert len(sent) == 1  # one key, within repeat_after
    a, _ = rules.feed(Event("error", "j", "/t", detail="disk full"), 1061.0)
    assert len(a) == 1
    got = []
    for i in range(5):
        a, _ = rules.feed(Event("error", "j", f"/t{i}", detail="x"), 1100.0 + i)
        got += a
    assert len(got) == 1  # 3 an hour: 2 went already
    a, _ = rules.feed(Event("error", "j", "/late", detail="x"), 1000.0 + 3601 + 120)
    assert len(a) == 1 and "4 more alerts were held back" in a[0].text


def test_low_space_is_told_under_min_free_only():
    rules = Rules(Settings(min_free=1 << 30))
    assert rules.space("j", "/t", 2 << 30, 0.0) == []
    (a,) = rules.space("j", "/t", 100 << 20, 0.0)
    assert a.kind == "space" and "104.9 MB free" in a.text
