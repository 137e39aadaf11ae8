"""One stream of what every job did, whatever its kind: the words status, logs, alerts and
metrics read.

Every job kind (one-shot and continuous mirror, bisync, locations) says what happened in the
same events, one JSON object per line in `<state>/events/<job>.jsonl`:

    pass-begin   a pass started (target "" for all of a job's targets)
    pass-end     a pass ended; `counts` (sent, deleted, moved, kept, conflicts, errors, bytes)
                 and `ok`: a pass-end with ok=true has left the replicas equal
    sent         a path was written on the target (a directory: its subtree, in one transfer)
    deleted      a path was removed from the target (detail: where its old version was kept)
    moved        a path was renamed on the target (detail: the old path)
    kept         an overwritten path's old version was kept (a delete's detail says it itself)
    conflict     both sides changed a path; detail names the copy that keeps the other version
    error        something could not be done (detail: what, and the path when there is one)
    refused      a pass was refused before it changed anything (delete guard, empty source, hook)
    down / up    a target stopped answering / answers again
    warning      a pass has run past its soft time limit (max_time_soft)

A file, appended to with one write per event (O_APPEND: lines from threads and processes never
interleave), rotated by size to one `.1` file: readable by `tether events`, by `tail -f`, and by
a log shipper, with no daemon to ask. Paths are relative to the job's root, shown as text
(undecodable bytes escaped as `\\xNN`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import concurrent.futures

KINDS = (
    "pass-begin", "pass-end", "sent", "deleted", "moved", "kept", "conflict", "error", "refused", "down", "up",
    "warning",
)  # fmt: skip
COUNTS = ("sent", "deleted", "moved", "kept", "conflicts", "errors", "bytes")
MAX_BYTES = 8 << 20  # one file this size, then it becomes `.1` (the one before is dropped)


class Event:
    """One thing a job did. (A plain class, not a dataclass: `dataclasses` costs every command
    5 ms of start-up.)"""

    __slots__ = ("at", "counts", "detail", "job", "kind", "ok", "path", "target")

    def __init__(
        self, kind: str, job: str, target: str = "", path: str = "", detail: str = "",
        counts: dict[str, int] | None = None, ok: bool | None = None, at: float | None = None,
    ) -> None:  # fmt: skip
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        self.kind, self.job, self.target, self.path, self.detail = kind, job, target, path, detail
        self.counts = counts or {}
        self.ok = ok  # pass-end only
        self.at = time.time() if at is None else at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Event({self.to_json()!r})"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"at": round(self.at, 6), "job": self.job, "kind": self.kind}
        for k in ("target", "path", "detail"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        if self.counts:
            d["counts"] = self.counts
        if self.ok is not None:
            d["ok"] = self.ok
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(
            str(d["kind"]), str(d["job"]), str(d.get("target", "")), str(d.get("path", "")),
            str(d.get("detail", "")), {str(k): int(v) for k, v in (d.get("counts") or {}).items()},
            d.get("ok"), float(d["at"]),
        )  # fmt: skip

    def line(self) -> str:
        """One line for a person: time, job, what, where."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        return " ".join(x for x in (when, self.job, self.text()) if x)

    def text(self) -> str:
        """What and where, without when and which job (a job's log line says those)."""
        where = " ".join(x for x in (self.target and f"[{self.target}]", self.path) if x)
        what = self.kind if self.ok is None else f"{self.kind} ({'ok' if self.ok else 'NOT ok'})"
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        tail = "; ".join(x for x in (self.detail, counts) if x)
        return " ".join(x for x in (what, where, tail and f"- {tail}") if x)


def shown_path(p: str | bytes) -> str:
    """A path as event text: bytes that are not UTF-8 escaped, never an exception."""
    if isinstance(p, bytes):
        return p.decode("utf-8", "backslashreplace")
    return p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_of(state_dir: Path, job: str) -> Path:
    return state_dir / "events" / f"{job}.jsonl"


class EventLog:
    """Appends a job's events. Safe to share between threads; never raises on a full disk
    (an event that cannot be written is not worth failing a transfer for): it says so once."""

    def __init__(
        self, path: Path, max_bytes: int = MAX_BYTES, listeners: list[Callable[[list[Event]], None]] | None = None
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._warned = False
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None  # see in_background
        self._listeners = [] if listeners is None else listeners  # see listen(): shared, not copied

    def in_background(self) -> None:
        """From now on events are made and written by a thread of their own, in order: a running
        mirror's burst of 20,000 paths costs 110 ms of JSON, which must not hold up its next batch.
        flush() waits for what is queued."""
        with self._lock:
            if self._writer is None:
                import concurrent.futures  # only a running job pays for it

                self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="events")

    def emit(self, *events: Event) -> None:
        self.emit_all(events)

    def emit_all(self, events: Iterable[Event]) -> None:
        listed = list(events)
        self.later(lambda: listed)

    def later(self, make: Callable[[], Iterable[Event]]) -> None:
        """Write the events make() returns: now, or by the writer thread when in background."""
        if self._writer is not None:
            self._writer.submit(self._made, make)
        else:
            self._write(make())

    def flush(self, timeout: float = 10.0) -> None:
        if self._writer is not None:  # one writer: what this waits for runs after all queued before it
            import concurrent.futures
            import contextlib

            with contextlib.suppress(concurrent.futures.TimeoutError):  # a hung disk: the job stops anyway
                self._writer.submit(lambda: None).result(timeout)

    def _made(self, make: Callable[[], Iterable[Event]]) -> None:
        try:
            self._write(make())
        except Exception:  # an event is never worth the job: said in the log, the job goes on
            import logging

            logging.getLogger("tether").exception("events: cannot write an event")

    def _write(self, made: Iterable[Event]) -> None:
        events = list(made)
        if not events:
            return
        for listener in self._listeners:
            listener(events)
        data = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in events).encode()
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, data)
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                if size > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except OSError as e:
                if not self._warned:
                    self._warned = True
                    import logging  # not at start-up: most commands never warn

                    logging.getLogger("tether").warning("cannot write events to %s: %s", self.path, e.strerror)


class NoEvents(EventLog):
    """For what runs without a job (an ad hoc `tether mirror A B`): nothing is kept."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    def later(self, make: Callable[[], Iterable[Event]]) -> None:
        return None

    def in_background(self) -> None:
        return None


NO_EVENTS = NoEvents()


def read(path: Path, offset: int = 0) -> Iterator[Event]:
    """A job's events, oldest first (the rotated file, then the current one); with `offset`, the
    current file's from that byte on (what `--follow` has not shown yet). A line that does not
    parse (a crash mid-write) is skipped."""
    for p in [path] if offset else [path.with_name(path.name + ".1"), path]:
        try:
            with open(p, "rb") as f:
                f.seek(offset)
                for raw in f:
                    try:
                        yield Event.from_json(json.loads(raw))
                    except (ValueError, KeyError, TypeError):
                        continue
        except FileNotFoundError:
            continue


def last_passes(path: Path, tail: int = 1 << 20) -> list[Event]:
    """The last pass-end of each target (bisync's: target ""), from the end of a job's stream:
    what `tether status` says of a job that runs from cron or by hand as well as of a service."""
    last: dict[str, Event] = {}
    for p in (path, path.with_name(path.name + ".1")):
        try:
            with open(p, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - tail))
                lines = f.read().splitlines()[1 if size > tail else 0 :]  # the first may be cut
        except FileNotFoundError:
            continue
        for raw in lines:
            if b'"pass-end"' not in raw:
                continue
            try:
                e = Event.from_json(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                continue
            if e.kind == "pass-end":
                last[e.target] = e
        if last:
            break  # the current file has them; the rotated one is older
    return [last[t] for t in sorted(last)]


def pass_end(job: str, target: str, ok: bool, **counts: int) -> Event:
    return Event("pass-end", job, target, counts={k: int(counts.get(k, 0)) for k in COUNTS}, ok=ok)


_LISTENERS: dict[str, list[Callable[[list[Event]], None]]] = {}


def listen(job: str, listener: Callable[[list[Event]], None]) -> Callable[[], None]:
    """Hand every event this process writes for `job` to `listener` (the alerts), whichever
    EventLog writes it: a running bisync opens one per pass. Returns how to stop listening."""
    listeners = _LISTENERS.setdefault(job, [])
    listeners.append(listener)
    return lambda: listeners.remove(listener)


def for_job(state_dir: Path, job: str | None) -> EventLog:
    """A job's event log; None (an ad hoc pair or mirror) keeps none."""
    return NO_EVENTS if not job else EventLog(path_of(state_dir, job), listeners=_LISTENERS.setdefault(job, []))


__all__ = [
    "COUNTS", "KINDS", "NO_EVENTS", "Event", "EventLog", "for_job", "last_passes", "listen", "pass_end", "path_of",
    "read", "shown_path",
]  # fmt: skip
