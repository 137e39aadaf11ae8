"""A running job's log: plain lines or, with `--json-log` / `json_log = true`, one JSON object
per line for log shippers (time in ISO 8601, level, job, message, and the event's fields where a
line tells one of the job's events). `tether run` in the foreground writes it to stderr, which
systemd's journal or a container runtime keeps; under `tether start` it is the job's log file,
rotated by size (`log_max_size`, `log_keep` old files as NAME.log.1, .2, ...), and `tether log`
reads the newest lines across a rotation and follows the file through one.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.jobkeys import MAX_LOG_KEEP

if TYPE_CHECKING:
    from tether.events import Event
    from tether.jobkeys import LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# the events a log tells, at the level each is told at (per-path events stay in the event stream)
TOLD = {"pass-end": "INFO", "up": "INFO", "conflict": "WARNING", "down": "WARNING", "warning": "WARNING",
        "error": "ERROR", "refused": "ERROR"}  # fmt: skip


def json_line(
    created: float, level: str, job: str, message: str, event: Event | None = None, exc: str | None = None
) -> str:
    """One JSON log line; an event's own fields (kind, target, path, detail, counts, ok) join it."""
    import datetime

    when = datetime.datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")
    doc: dict[str, Any] = {"time": when, "level": level.lower(), "job": job, "message": message}
    if event is not None:
        doc |= {k: v for k, v in event.to_json().items() if k not in ("at", "job")}
    if exc:
        doc["exc"] = exc
    return json.dumps(doc, ensure_ascii=False)


def readable(raw: bytes) -> str:
    """A log line for a person: a JSON line as the plain format would have said it, any other
    line (plain log, a crash's traceback, a tool's words) as it is."""
    text = raw.decode("utf-8", "backslashreplace")
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            import datetime

            when = datetime.datetime.fromisoformat(doc["time"]).astimezone().strftime(DATE_FORMAT)
            line = f"{when} {str(doc['level']).upper()} {doc['message']}"
            return line + ("\n" + str(doc["exc"]) if doc.get("exc") else "")
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    return text


def setup(job: str, settings: LogSettings, *, file: Path | None = None, quiet: bool = False) -> None:
    """The process's logging, before anything logs: to `file` rotated (under `tether start`) or
    to stderr; `quiet` keeps warnings and errors only (a running job's failures are warnings:
    it retries them). With JSON, the job's events are told in the log too."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = _Rotating(file, maxBytes=settings.max_bytes, backupCount=settings.keep, encoding="utf-8")
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(_Json(job) if settings.json else logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    if settings.json and job:
        from tether.events import listen

        listen(job, _tell)


def _tell(events: list[Event]) -> None:
    log = logging.getLogger("tether.events")
    for e in events:
        level = TOLD.get(e.kind)
        if level:
            log.log(logging.getLevelName(level), "%s", e.text(), extra={"event": e})


class _Json(logging.Formatter):
    def __init__(self, job: str) -> None:
        super().__init__()
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        event = getattr(record, "event", None)
        return json_line(record.created, record.levelname, self.job, record.getMessage(), event, exc)


class _Rotating(logging.handlers.RotatingFileHandler):
    """A log file rotated by size. stdout and stderr, where they are this file (as `tether
    start` leaves them: a tool's words and a crash's traceback land there), follow it into the
    new file at each rollover, so nothing keeps writing to the rotated one."""

    def doRollover(self) -> None:
        ours = self.stream is not None and _same_file(self.stream.fileno(), 2)
        super().doRollover()
        if ours and self.stream is not None:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(self.stream.fileno(), 1)
            os.dup2(self.stream.fileno(), 2)


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def rotated(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def last_lines(path: Path, count: int) -> tuple[list[bytes], tuple[int, int] | None]:
    """The last `count` lines of a job's log, from the rotated files where the current one
    holds fewer; and where the current file ended (inode, offset), for following it on."""
    lines: list[bytes] = []
    at = None
    for n in range(0, MAX_LOG_KEEP + 1):
        p = path if n == 0 else rotated(path, n)
        try:
            with open(p, "rb") as f:
                data = f.read()
                if n == 0:
                    at = (os.fstat(f.fileno()).st_ino, len(data))
        except FileNotFoundError:
            if n == 0:
                continue  # between a rollover's rename and its new file
            break
        lines = data.splitlines() + lines
        if len(lines) >= count:
            break
    return (lines[-count:] if count > 0 else []), at


def follow(
    path: Path, at: tuple[int, int] | None, emit: Callable[[bytes], None], stop: Callable[[], bool],
    poll: float = 0.2,
) -> None:  # fmt: skip
    """Hand each whole new line of the log to `emit` until stop(): from `at` (inode, offset) in
    the file that was current then, or from the start of the oldest file (there was no log yet),
    and on through each file rotations made since, oldest first: a busy job may rotate more than
    once between two looks."""
    f = None
    pending = b""
    done = -1 if at is None else None  # the inode read to its end (-1: none yet, take the oldest)
    try:
        while not stop():
            if f is None:
                f = _open_next(path, done, at[0] if at else None)
                if f is None:
                    time.sleep(poll)
                    continue
                if at is not None and os.fstat(f.fileno()).st_ino == at[0]:
                    f.seek(at[1])
                at = None
            chunk = f.read()
            if chunk:
                *whole, pending = (pending + chunk).split(b"\n")
                _each(whole, emit)
                continue
            try:
                moved = os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                moved = False  # the new file is about to appear
            if moved:  # what reached it before its rename, then on to the file after it
                *whole, last = (pending + f.read()).split(b"\n")
                _each([*whole, last] if last else whole, emit)
                pending = b""
                done = os.fstat(f.fileno()).st_ino
                f.close()
                f = None
                continue
            time.sleep(poll)  # a person watching a log; tail -f polls the same way
    finally:
        if f is not None:
            f.close()


def _open_next(path: Path, done: int | None, resume: int | None = None) -> Any:
    """The log file to read next: the file of inode `resume` if it is still kept (rotated since,
    maybe), else the current one (`done` None), or the one after the file of inode `done` in
    rotation order; the oldest kept when `done` was dropped already (or is -1: nothing read
    yet). None while no file exists."""
    while True:
        files = _kept(path)  # (inode, path), oldest first
        while (again := _kept(path)) != files:  # a rotation ran during the look: its order is no order
            files = again
        if not files:
            return None
        inodes = [ino for ino, _ in files]
        if resume in inodes:
            want = files[inodes.index(resume)]
        elif done is None:
            want = files[-1]
        elif done in inodes:
            i = inodes.index(done)
            want = files[min(i + 1, len(files) - 1)]
        else:
            want = files[0]
        try:
            f = open(want[1], "rb")  # noqa: SIM115 (the caller keeps it open)
        except FileNotFoundError:
            continue
        if os.fstat(f.fileno()).st_ino == want[0]:  # no rotation between the look and the open
            return f
        f.close()


def _kept(path: Path) -> list[tuple[int, Path]]:
    """The log's files as (inode, path), oldest first, as one look saw them."""
    files = []
    for p in [*(rotated(path, n) for n in range(MAX_LOG_KEEP, 0, -1)), path]:
        try:
            files.append((os.stat(p).st_ino, p))
        except FileNotFoundError:
            continue
    return files


def _each(lines: Iterable[bytes], emit: Callable[[bytes], None]) -> None:
    for ln in lines:
        emit(ln)
