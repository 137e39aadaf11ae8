"""`--summary`: one paragraph per run, for cron mail and logs, in the same words for every job
kind. Built from the events a run emitted (tether.events), so a mirror, a bisync pass and a
locations action are told alike:

    tether sync photos: 2 targets, 1 ok, 1 failed; 312 files sent (48.2 MB), 3 deleted (kept in
    .tether/versions), 0 conflicts, 41 s. Failed: host2:/srv/photos: connection refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tether.events import Event, EventLog
from tether.output import human_bytes, shown


class Recorder(EventLog):
    """An event log that keeps what passes through it, for the paragraph, and hands it on to
    `inner` (the job's log, or none for an ad hoc run)."""

    def __init__(self, inner: EventLog) -> None:
        super().__init__(inner.path)
        self.inner = inner
        self.seen: list[Event] = []

    def later(self, make: Callable[[], Iterable[Event]]) -> None:
        made = list(make())
        self.seen += made
        self.inner.later(lambda: made)

    def in_background(self) -> None:
        self.inner.in_background()

    def flush(self, timeout: float = 10.0) -> None:
        self.inner.flush(timeout)


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def paragraph(title: str, events: Iterable[Event], seconds: float, whole: str = "", kept_in: str = "") -> str:
    """What a run did. A target's result is its last pass-end, and a refusal fails it whatever
    follows; a result for target "" (a bisync pass, or a pass that failed before its targets)
    stands for every target without one of its own, named `whole` when no target has a name.
    Deletes are said to be kept where their events say, else in `kept_in` (a mirror's trash)."""
    order: dict[str, None] = {}
    ok: dict[str, bool] = {}
    refused: set[str] = set()
    why: dict[str, str] = {}
    totals = dict.fromkeys(("sent", "bytes", "deleted", "conflicts"), 0)
    kept: dict[str, None] = {}
    for e in events:
        if e.kind in ("pass-begin", "pass-end", "refused"):
            order.setdefault(e.target)
        if e.kind in ("error", "refused") and e.detail:
            why.setdefault(e.target, e.detail.splitlines()[0])  # a hint's line is the error's, not the run's
        if e.kind == "refused":
            refused.add(e.target)
        elif e.kind == "pass-end":
            ok[e.target] = bool(e.ok)
            for k in totals:
                totals[k] += e.counts.get(k, 0)
        elif e.kind == "deleted" and e.detail.startswith("kept in "):
            kept.setdefault(e.detail[len("kept in ") :])
    for t in refused:
        ok[t] = False
    targets = [t for t in order if t] or list(order)
    failed: list[tuple[str, str]] = []
    whole_told = False  # whether a failure below says the run's own error (target "")
    for t in targets:
        if not ok.get(t, ok.get("", False)):  # no pass-end at all: it did not finish
            own = why.get(t) if t else None
            whole_told |= own is None
            failed.append((t or whole or "the pass", own or why.get("") or "did not finish"))
    # an error of the run as a whole that no target's failure tells (an `after` command that failed)
    loose = None if whole_told else why.get("")
    n, sent, conflicts = len(targets), totals["sent"], totals["conflicts"]
    text = f"{title}: {n} target{_s(n)}, {n - len(failed)} ok, {len(failed)} failed; {sent} file{_s(sent)} sent"
    if totals["bytes"]:
        text += f" ({human_bytes(totals['bytes'])})"
    text += f", {totals['deleted']} deleted"
    where = list(kept) or ([kept_in] if kept_in else [])
    if totals["deleted"] and where:
        text += f" (kept in {', '.join(where)})"
    text += f", {conflicts} conflict{_s(conflicts)}, {duration(seconds)}."
    if failed:
        text += " Failed: " + "; ".join(f"{shown(t)}: {shown(r)}" for t, r in failed) + "."
    if loose:
        text += f" Error: {shown(loose)}."
    return text


def _s(n: int) -> str:
    return "" if n == 1 else "s"
