"""What deserves a message, decided from events and the clock alone (no I/O: tested as data).

A target is *down* for alerting once it has been unhealthy for `down_after` seconds: unhealthy
from its first `down` event until it has then stayed up for `down_after` without a new one. So a
blip shorter than the threshold says nothing, and a target that flaps (down, up, down...) within
the threshold is one outage: one message when it has been bad for long enough, one when it has
been good for long enough, however often it flapped in between.

Other alerts come from what a pass ended with: its errors, its conflicts, a refusal, a pass over
its soft time limit (a warning), free space under `min_free`. Each is keyed by (job, target, kind); the same
key is not sent again within `repeat_after`, and no job sends more than `max_per_hour` an hour
(the rest are counted, and said in the next message that goes).

Heartbeat pings follow the job's passes: `start` when one begins, `success` or `fail` when the
last open one ends.
"""

from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple

from tether.alerts.config import Settings
from tether.events import Event
from tether.output import human_bytes as _bytes

MAX_LISTED = 20  # paths listed in one message; the rest are counted


class Alert(NamedTuple):
    kind: str  # down, up, error, conflict, refused, warning, space, test
    job: str
    target: str
    subject: str
    text: str
    at: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.job, self.target, self.kind)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "job": self.job, "target": self.target, "subject": self.subject,
                "text": self.text, "at": round(self.at, 3)}  # fmt: skip


class Ping(NamedTuple):
    job: str
    what: str  # start, success, fail


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _took(s: float) -> str:
    s = round(s)
    return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s / 3600:.1f} h"


class _Health:
    """One target's outage: when it turned bad, since when it is good again, whether told."""

    __slots__ = ("bad_since", "detail", "good_since", "outages", "told")

    def __init__(self) -> None:
        self.bad_since: float | None = None
        self.good_since: float | None = None
        self.told = False
        self.detail = ""
        self.outages = 0


class _Pass:
    """What one target's open pass has said so far."""

    __slots__ = ("conflicts", "errors")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.conflicts: list[str] = []


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return "\n".join(["  " + i for i in items[:MAX_LISTED]] + ([f"  ... and {more} more"] if more > 0 else []))


class Rules:
    """Feed it a job's events in order and tick it now and then; it returns what to send."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health: dict[tuple[str, str], _Health] = {}
        self.passes: dict[tuple[str, str], _Pass] = {}
        self.open: dict[str, set[str]] = {}  # per job: targets whose pass is open (for pings)
        self.failed: dict[str, bool] = {}
        self.sent_at: dict[tuple[str, str, str], float] = {}
        self.recent: deque[float] = deque()
        self.held_back = 0

    # -- in ----------------------------------------------------------------------------------
    def feed(self, e: Event, now: float | None = None) -> tuple[list[Alert], list[Ping]]:
        now = e.at if now is None else now
        out: list[Alert] = []
        pings: list[Ping] = []
        key = (e.job, e.target)
        if e.kind == "down":
            h = self.health.setdefault(key, _Health())
            if h.bad_since is None:
                h.bad_since, h.outages = now, 0
            h.good_since, h.detail = None, e.detail or h.detail
            h.outages += 1
        elif e.kind == "up":
            back = self.health.get(key)  # one is kept only while a target is (or may still be) down
            if back is not None and back.good_since is None:
                back.good_since = now
        elif e.kind == "pass-begin":
            self.passes[key] = _Pass()
            if not self.open.get(e.job):
                self.failed[e.job] = False
                pings.append(Ping(e.job, "start"))
            self.open.setdefault(e.job, set()).add(e.target)
        elif e.kind == "pass-end":
            out += self._pass_end(e, now)
            targets = self.open.get(e.job, set())
            targets.discard(e.target)
            self.failed[e.job] = self.failed.get(e.job, False) or not e.ok or bool(e.counts.get("errors"))
            if not targets:
                pings.append(Ping(e.job, "fail" if self.failed.pop(e.job) else "success"))
        elif e.kind in ("error", "conflict"):
            p = self.passes.get(key) or self.passes.get((e.job, ""))  # "": a pass over all targets
            what = f"{e.path}: {e.detail}" if e.path and e.detail else e.path or e.detail
            if p is not None:
                (p.errors if e.kind == "error" else p.conflicts).append(what)
            elif e.kind == "error":
                out.append(Alert("error", e.job, e.target, f"{e.job}: error{self._on(e.target)}", what, now))
            else:
                text = f"both sides changed {e.path}; both versions are kept ({e.detail})" if e.detail else what
                out.append(Alert("conflict", e.job, e.target, f"{e.job}: a conflict{self._on(e.target)}", text, now))
        elif e.kind == "refused":
            out.append(Alert("refused", e.job, e.target, f"{e.job}: a pass was refused{self._on(e.target)}",
                             f"{e.detail}\nNothing was changed.", now))  # fmt: skip
            targets = self.open.get(e.job, set())
            if e.target in targets:  # a refusal ends its pass (bisync says no pass-end after it)
                targets.discard(e.target)
                self.failed[e.job] = True
                if not targets:
                    self.failed.pop(e.job)
                    pings.append(Ping(e.job, "fail"))
        elif e.kind == "warning":
            short = e.detail if len(e.detail) <= 60 else e.detail[:57] + "..."
            out.append(Alert("warning", e.job, e.target, f"{e.job}: {short}", e.detail, now))
        return self._limited(out, now), pings

    def _on(self, target: str) -> str:
        return f" on {target}" if target else ""

    def _pass_end(self, e: Event, now: float) -> list[Alert]:
        p = self.passes.pop((e.job, e.target), None) or _Pass()
        out = []
        if not e.ok or p.errors:
            head = "failed" if not e.ok else f"ended with {len(p.errors)} error{'s' if len(p.errors) != 1 else ''}"
            text = f"The pass{self._on(e.target)} {head} at {_when(e.at)}."
            if p.errors:
                text += "\n" + _listed(p.errors)
            out.append(Alert("error", e.job, e.target, f"{e.job}: pass {head}{self._on(e.target)}", text, now))
        if p.conflicts:
            n = len(p.conflicts)
            text = f"Both sides changed {n} path{'s' if n != 1 else ''}; both versions of each are kept:\n"
            out.append(Alert("conflict", e.job, e.target, f"{e.job}: {n} conflict{'s' if n != 1 else ''}",
                             text + _listed(p.conflicts), now))  # fmt: skip
        return out

    def space(self, job: str, target: str, free: int, now: float) -> list[Alert]:
        """A target's free space, measured after a pass."""
        need = self.settings.min_free
        if need is None or free >= need:
            return []
        text = f"{target} has {_bytes(free)} free, under the {_bytes(need)} this job asks for (min_free)."
        return self._limited([Alert("space", job, target, f"{job}: low free space on {target}", text, now)], now)

    def tick(self, now: float) -> tuple[list[Alert], float | None]:
        """Outages that have lasted long enough, recoveries that have held long enough; and when
        to be asked next (None: nothing is waiting on the clock). The clock is only read here:
        feed() never tells an outage, so one told late by a slow tick is still told once."""
        out: list[Alert] = []
        after = self.settings.down_after
        nxt: float | None = None
        for (job, target), h in list(self.health.items()):
            assert h.bad_since is not None  # set when the first down made it
            if h.good_since is None:
                if not h.told and now - h.bad_since >= after:
                    h.told = True
                    text = f"{target} has not answered since {_when(h.bad_since)} ({_took(now - h.bad_since)})"
                    out.append(Alert("down", job, target, f"{job}: {target} is down",
                                     text + (f": {h.detail}" if h.detail else "."), now))  # fmt: skip
                elif not h.told:
                    nxt = min(nxt or now + after, h.bad_since + after)
            elif now - h.good_since >= after:
                if h.told:
                    flaps = f", {h.outages} outages" if h.outages > 1 else ""
                    down = _took(h.good_since - h.bad_since)
                    text = f"{target} answers again since {_when(h.good_since)} (down {down}{flaps})."
                    out.append(Alert("up", job, target, f"{job}: {target} is back", text, now))
                del self.health[(job, target)]
            else:
                nxt = min(nxt or now + after, h.good_since + after)
        return self._limited(out, now), nxt

    # -- out ---------------------------------------------------------------------------------
    def _limited(self, alerts: list[Alert], now: float) -> list[Alert]:
        """Down and up are told once per outage already; the rest once per key per repeat_after,
        and none past max_per_hour (counted and said in the next that goes)."""
        out = []
        while self.recent and self.recent[0] <= now - 3600:
            self.recent.popleft()
        for a in alerts:
            if a.kind not in ("down", "up"):
                last = self.sent_at.get(a.key)
                if last is not None and now - last < self.settings.repeat_after:
                    continue
            if len(self.recent) >= self.settings.max_per_hour and a.kind not in ("up",):
                self.held_back += 1
                continue
            self.sent_at[a.key] = now
            self.recent.append(now)
            if self.held_back:
                a = a._replace(text=f"{a.text}\n\n({self.held_back} more alerts were held back by max_per_hour.)")
                self.held_back = 0
            out.append(a)
        return out
