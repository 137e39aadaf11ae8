"""One overview of every job and target: what `tether status`, `tether serve`'s page, its JSON
and its metrics all show, so the four never disagree.

Built from three things, each read only at the edge (`gather`): the pid lock (is the job
running), a running job's status file (service/status.py), and the job's event stream
(events.py: the one record that job kinds run by hand or from cron also keep). Everything
between reading and printing is plain data in, plain data out (`Tally.add`, `build`,
`to_json`, `table`, `window_rate`), so it is tested in memory.

Definitions (the README's *Status* says the same):

- state: the job's (running, waiting, starting, stopping, failed, stopped) and, while it runs,
  the target's (idle, syncing, retrying, down, waiting).
- last success: the last time the target was left equal to the source: the running job's own
  word, else the last `pass-end` with ok in the event stream.
- lag: 0 while the target is caught up (no change pending, not syncing or failing); otherwise
  seconds since it fell behind: since the first change it has not caught up with since (the
  status file's `behind_since`; a job started before that field existed: since its last
  success). An upper bound on how stale the target is: while it works through a queue, the
  oldest change still queued may be younger. None for a job that is not running.
- rate: bytes per second. `tether serve` samples bytes sent at each look and gives the rate over
  the last WINDOW seconds ("window"); where there is one look only (`tether status`) it is the
  target's last pass: its bytes over its time from pass-begin to pass-end ("last-pass").
- conflicts, errors: counted in the event stream (both its files, current and rotated);
  errors count `error` and `refused` events.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.watchlimit import max_user_watches

if TYPE_CHECKING:
    from tether.dirs import Dirs
    from tether.events import Event

WINDOW = 10.0  # seconds of bytes-sent samples the live rate is taken over
RECENT = 5  # recent errors kept per job
_TALLIED = re.compile(rb'"(?:pass-begin|pass-end|error|refused|conflict)"')
_FAILING = ("retrying", "down")


@dataclass
class TargetTally:
    conflicts: int = 0
    errors: int = 0
    last_ok: float | None = None
    last_pass: Event | None = None
    last_pass_seconds: float | None = None  # pass-begin to pass-end of the last pass
    began: float | None = None  # the pass in flight
    last_error: Event | None = None


@dataclass
class Tally:
    """What a job's event stream says, per target (target "" is the whole job: bisync, a one-shot
    mirror's start). Fed events in order, oldest first."""

    targets: dict[str, TargetTally] = field(default_factory=dict)
    recent: deque[Event] = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, e: Event) -> None:
        t = self.targets.setdefault(e.target, TargetTally())
        if e.kind == "pass-begin":
            t.began = e.at
        elif e.kind == "pass-end":
            began = t.began if t.began is not None else self.targets.get("", TargetTally()).began
            t.last_pass, t.began = e, None
            t.last_pass_seconds = e.at - began if began is not None and e.at >= began else None
            if e.ok:
                t.last_ok = e.at
        elif e.kind == "conflict":
            t.conflicts += 1
        elif e.kind in ("error", "refused"):
            t.errors += 1
            t.last_error = e
            self.recent.append(e)

    def add_all(self, events: Iterable[Event]) -> Tally:
        for e in events:
            self.add(e)
        return self


def parse(data: bytes) -> Iterable[Event]:
    """The events a tally needs from whole lines of a stream; the lines that cannot be one are
    skipped before any parsing (a stream is mostly `sent` lines: a full 8 MB file of them took
    0.22 s to parse line by line, 0.07 s to skip this way)."""
    from tether.events import Event

    end = 0
    for m in _TALLIED.finditer(data):
        if m.start() < end:
            continue  # a second hit in a line already taken
        start = data.rfind(b"\n", 0, m.start()) + 1
        end = data.find(b"\n", m.end())
        end = len(data) if end < 0 else end
        try:
            yield Event.from_json(json.loads(data[start:end]))
        except (ValueError, KeyError, TypeError):
            continue


class StreamFollower:
    """A job's event stream read once, then only what was appended since: `tether serve` looks
    every half second and must not parse megabytes each time. A rotation (the current file
    replaced) starts the count again from both files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tally = Tally()
        self._ino: int | None = None
        self._offset = 0

    def poll(self) -> Tally:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or st.st_ino != self._ino or st.st_size < self._offset:
            self.tally, self._offset = Tally(), 0
            self._ino = st.st_ino if st else None
            self.tally.add_all(parse(_whole_lines(self.path.with_name(self.path.name + ".1"), 0)[0]))
        if st is not None:
            data, self._offset = _whole_lines(self.path, self._offset)
            self.tally.add_all(parse(data))
        return self.tally


def _whole_lines(path: Path, offset: int) -> tuple[bytes, int]:
    """The whole lines from offset on, and the offset after the last one (a line being written
    is read at the next look)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return b"", offset
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def read_tally(path: Path) -> Tally:
    return StreamFollower(path).poll()


@dataclass
class Row:
    """One target of one job: a line of the table, a row of the page, a set of metric samples."""

    job: str
    target: str
    state: str  # the job's state, and the target's while the job runs: "running/idle"
    target_state: str | None
    up: bool
    last_success: float | None
    lag_seconds: float | None
    pending: int | None
    rate_bps: float | None
    rate_basis: str | None  # "window" or "last-pass"
    files_sent: int | None  # since the running job started (its status file)
    bytes_sent: int | None
    conflicts: int
    errors: int
    last_error: str | None
    last_error_at: float | None
    last_pass: dict[str, Any] | None


@dataclass
class JobView:
    job: str
    running: bool
    pid: int | None
    state: str
    message: str | None
    started: float | None
    watches: int
    watch_limit: int | None
    conflicts: int
    errors: int
    status_targets: list[dict[str, Any]]  # the running job's own words, as `--json` always gave them
    last_passes: list[dict[str, Any]]
    recent_errors: list[dict[str, Any]]
    rows: list[Row]
    edited: bool = False  # the job file changed since the running job read it: a restart applies it
    watcher: str = "inotify"  # a running job's: inotify, fanotify, or none (its full passes only)


def _event_doc(e: Event) -> dict[str, Any]:
    return {"at": e.at, "kind": e.kind, "target": e.target, "path": e.path, "detail": e.detail}


def _pass_doc(e: Event | None, seconds: float | None = None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"target": e.target, "at": e.at, "ok": e.ok, "counts": e.counts, "seconds": seconds}


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t]
    return max(known) if known else None


def build(
    job: str,
    pid: int | None,
    status: Mapping[str, Any] | None,
    tally: Tally,
    now: float,
    limit: int | None = None,
    rates: Mapping[str, float] | None = None,
    edited_at: float | None = None,
) -> JobView:
    """A job's view from what was read: its pid lock's holder, its status file, its events'
    tally, and live rates per target where the caller sampled them (`window_rate`); `edited_at`
    is when the job file was last written."""
    st = dict(status or {})
    running = pid is not None
    if running and st.get("pid") != pid:  # the last run's words: this run has written none yet
        st = {"state": "starting"}
    state = st.get("state", "stopped") if running else ("failed" if st.get("state") == "failed" else "stopped")
    live: list[dict[str, Any]] = list(st.get("targets") or []) if running else []
    # a running job's rows are its targets; a stopped one's, the targets its events name
    names = [str(t.get("target", "")) for t in live] or sorted(t for t in tally.targets if t)
    whole = tally.targets.get("", TargetTally())  # events about the whole job (bisync's, a run that failed)
    if not names or (whole.last_pass is not None and len(names) > 1 and not live):
        names.insert(0, "")  # a job-wide row: no target known, or a one-shot run that failed as a whole
    sole = len(names) == 1  # then the job-wide events are its one target's
    rows = []
    for name in names:
        t = tally.targets.get(name, TargetTally())
        if sole and name:
            t = _merged(t, whole)
        s = next((x for x in live if x.get("target") == name), None)
        rows.append(_row(job, name, state, s, t, st.get("started"), now, (rates or {}).get(name)))
    conflicts = sum(t.conflicts for t in tally.targets.values())
    errors = sum(t.errors for t in tally.targets.values())
    passes = [_pass_doc(t.last_pass) for _, t in sorted(tally.targets.items()) if t.last_pass is not None]
    return JobView(
        job, running, pid, state, st.get("message"), st.get("started") if running else None,
        int(st.get("watches") or 0) if running else 0, limit, conflicts, errors, live,
        [{k: v for k, v in p.items() if k != "seconds"} for p in passes if p],
        [_event_doc(e) for e in tally.recent], rows,
        running and edited_at is not None and edited_at > float(st.get("started") or edited_at),
        str(st.get("watcher") or "inotify"),
    )  # fmt: skip


def _merged(t: TargetTally, whole: TargetTally) -> TargetTally:
    """A sole target's tally with the job-wide events (bisync's, a failed run's) counted in."""
    later = whole if (whole.last_pass and (not t.last_pass or whole.last_pass.at > t.last_pass.at)) else t
    errs = [e for e in (t.last_error, whole.last_error) if e is not None]
    return TargetTally(
        t.conflicts + whole.conflicts, t.errors + whole.errors, _latest(t.last_ok, whole.last_ok),
        later.last_pass, later.last_pass_seconds, t.began, max(errs, key=lambda e: e.at) if errs else None,
    )  # fmt: skip


def _row(
    job: str, name: str, job_state: str, s: Mapping[str, Any] | None, t: TargetTally,
    started: float | None, now: float, window: float | None,
) -> Row:  # fmt: skip
    last = t.last_pass
    if window is not None:
        rate, basis = window, "window"
    elif last is not None and t.last_pass_seconds:
        rate, basis = last.counts.get("bytes", 0) / t.last_pass_seconds, "last-pass"
    else:
        rate, basis = None, None
    if s is None:  # not running, or a target the running job does not have (any more)
        err = t.last_error
        return Row(
            job, name, job_state, None, False, t.last_ok, None, None, rate, basis, None, None, t.conflicts,
            t.errors, (err.detail or err.kind) if err else None, err.at if err else None,
            _pass_doc(last, t.last_pass_seconds),
        )  # fmt: skip
    tstate = str(s.get("state", "idle"))
    success = _latest(s.get("last_success"), t.last_ok)
    pending = int(s.get("pending") or 0)
    caught_up = pending == 0 and tstate not in (*_FAILING, "syncing")
    since = s.get("behind_since") or s.get("last_success") or started
    lag = 0.0 if caught_up else (max(0.0, now - since) if since else None)
    return Row(
        job, name, f"{job_state}/{tstate}", tstate, tstate not in _FAILING, success, lag, pending, rate, basis,
        int(s.get("files_sent") or 0), int(s.get("bytes_sent") or 0), t.conflicts, t.errors,
        s.get("last_error"), s.get("last_error_at"), _pass_doc(last, t.last_pass_seconds),
    )  # fmt: skip


def window_rate(samples: Sequence[tuple[float, int]], now: float, window: float = WINDOW) -> float | None:
    """Bytes per second over the samples (time, bytes sent so far) of the last `window` seconds;
    None with fewer than two. A counter that went down (the job restarted) starts again there."""
    recent = [(t, b) for t, b in samples if now - t <= window]
    for i in range(len(recent) - 1, 0, -1):
        if recent[i][1] < recent[i - 1][1]:
            recent = recent[i:]
            break
    if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
        return None
    return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])


class RateSampler:
    """Samples of bytes sent per (job, target), kept for WINDOW seconds: the live rate."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._samples: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def rates(self, job: str, status: Mapping[str, Any] | None, running: bool, now: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in (status or {}).get("targets") or [] if running else []:
            key = (job, str(t.get("target", "")))
            q = self._samples.setdefault(key, deque())
            q.append((now, int(t.get("bytes_sent") or 0)))
            while q and now - q[0][0] > self.window:
                q.popleft()
            r = window_rate(list(q), now, self.window)
            if r is not None:
                out[key[1]] = r
        return out


def to_json(view: JobView) -> dict[str, Any]:
    """A job as `tether status --json` and `/api/status` give it: the keys status always had
    (job, running, pid, state, message, watches, targets, last_passes), then the overview's."""
    return {
        "job": view.job, "running": view.running, "pid": view.pid, "state": view.state, "message": view.message,
        "job_file_changed": view.edited,
        "watches": view.watches, "watcher": view.watcher if view.running else None,
        "targets": view.status_targets, "last_passes": view.last_passes,
        "started": view.started, "watch_limit": view.watch_limit, "conflicts": view.conflicts,
        "errors": view.errors, "recent_errors": view.recent_errors, "rows": [asdict(r) for r in view.rows],
    }  # fmt: skip


class Gatherer:
    """Reads the overview of every job (or one) from disk. One per `tether status`; `tether serve`
    keeps one, so the event streams are followed, not reread, and rates have their window."""

    def __init__(self, dirs: Dirs, live_rates: bool = False) -> None:
        self.dirs = dirs
        self._followers: dict[str, StreamFollower] = {}
        self._sampler = RateSampler() if live_rates else None

    def gather(self, name: str | None = None) -> list[JobView]:
        from tether.events import path_of
        from tether.jobs import job_file, list_jobs
        from tether.service.daemon import JobPaths
        from tether.service.locks import PidLock
        from tether.service.status import read_status

        if name is not None and not job_file(self.dirs, name).exists():  # a bad name is an error, not a row
            from tether.errors import UsageError

            raise UsageError(f"no job named {name!r}", "`tether jobs` lists the jobs")
        names = [name] if name else list_jobs(self.dirs)
        limit = max_user_watches()
        views = []
        for n in names:
            paths = JobPaths.of(self.dirs, n)
            pid = PidLock(paths.pid).holder()
            status = read_status(paths.status)
            follower = self._followers.get(n) or self._followers.setdefault(
                n, StreamFollower(path_of(self.dirs.state, n))
            )
            now = time.time()
            rates = self._sampler.rates(n, status, pid is not None, now) if self._sampler else None
            try:
                edited_at: float | None = job_file(self.dirs, n).stat().st_mtime
            except OSError:
                edited_at = None
            views.append(build(n, pid, status, follower.poll(), now, limit, rates, edited_at))
        for gone in set(self._followers) - set(list_jobs(self.dirs)):
            del self._followers[gone]
        return views


def ago(t: float | None, now: float) -> str:
    if not t:
        return "never"
    d = now - t
    return f"{d:.0f}s ago" if d < 120 else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s"
    return f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.0f}h"


def rate(bps: float | None) -> str:
    from tether.output import human_bytes

    return "-" if bps is None else f"{human_bytes(bps)}/s"


def table(views: Sequence[JobView], now: float) -> str:
    """What `tether status` prints: a row per job target, then a line per job (pid, watches, what
    it waits for, a stopped job's last passes), then the recent errors."""
    from tether.output import shown

    head = ("JOB", "TARGET", "STATE", "LAST OK", "LAG", "PENDING", "RATE", "ERRORS")
    cells = [head]
    for v in views:
        for r in v.rows:
            cells.append((
                v.job, shown(r.target) or "-", r.state, ago(r.last_success, now), seconds(r.lag_seconds),
                "-" if r.pending is None else str(r.pending), rate(r.rate_bps), str(r.errors),
            ))  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    out.append("")
    for v in views:
        line = f"{v.job}: {v.state}"
        if v.running:
            limit = f" of {v.watch_limit}" if v.watch_limit else ""
            how = {"fanotify": "fanotify, one filesystem mark", "none": "no watcher: its full passes only"}
            line += f" (pid {v.pid}, {how.get(v.watcher) or f'{v.watches}{limit} watches'})"
        if v.conflicts or v.errors:
            line += f"; {v.conflicts} conflicts, {v.errors} errors in its events"
        out.append(line)
        if v.message and v.state in ("failed", "waiting"):
            out.append(f"  {shown(v.message)}")
        if v.edited:
            out.append(
                f"  its job file changed since it started; it runs as it was: `tether restart {v.job}` applies it"
            )
        for r in v.rows:
            if r.last_error and v.running:
                out.append(f"  {shown(r.target)}: last error ({ago(r.last_error_at, now)}): {shown(r.last_error)}")
        for p in [] if v.running else v.last_passes:  # a running job's rows said it already
            counts = ", ".join(f"{n} {k}" for k, n in p["counts"].items() if n) or "nothing to do"
            where = f" to {shown(p['target'])}" if p["target"] else ""
            out.append(f"  last pass{where}: {'ok' if p['ok'] else 'NOT ok'}, {ago(p['at'], now)} ({counts})")
    recent = sorted((e | {"job": v.job} for v in views for e in v.recent_errors), key=lambda e: e["at"])[-RECENT:]
    if recent:
        out += ["", "recent errors:"]
        for e in recent:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
            where = " ".join(x for x in (e["target"] and f"[{shown(e['target'])}]", shown(e["path"])) if x)
            out.append("  " + " ".join(x for x in (when, e["job"], e["kind"], where, "-", shown(e["detail"])) if x))
    return "\n".join(out)
