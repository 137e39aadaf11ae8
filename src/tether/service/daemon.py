"""start / stop / restart / status / log for jobs that run in the background.

`tether start NAME` spawns `tether run NAME` in its own session with its output appended to
the job's log; the child holds the job's pid lock and publishes a status file. Everything
here talks to a running job through those two files and signals, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.dirs import Dirs
from tether.errors import TetherError, UsageError
from tether.jobs import job_file, list_jobs, load_named
from tether.service.locks import PidLock
from tether.service.status import read_status

if TYPE_CHECKING:
    from tether.endpoints import ReplicaSpec
    from tether.jobs import Job

START_DEADLINE = 60.0


@dataclass(frozen=True)
class JobPaths:
    pid: Path
    status: Path
    log: Path

    @classmethod
    def of(cls, dirs: Dirs, name: str) -> JobPaths:
        run = dirs.runtime / "jobs"
        return cls(run / f"{name}.pid", run / f"{name}.status.json", dirs.state / "logs" / f"{name}.log")


def check_conflicts(dirs: Dirs, job: Job) -> None:
    """Refuse to run beside a running job that writes the same folder (or one inside it): a
    mirror's targets, both replicas of a bisync job, whatever the two jobs' kinds; and beside
    running jobs that would carry its changes back to it (x -> y beside y -> x: every change
    would go round forever)."""
    running: dict[str, Job] = {}
    for other in list_jobs(dirs):
        if other == job.name or PidLock(JobPaths.of(dirs, other).pid).holder() is None:
            continue
        try:
            running[other] = load_named(dirs, other)
        except TetherError:
            continue
    for other, theirs in running.items():
        for mine in job.writes():
            for t in theirs.writes():
                if mine.overlaps(t):
                    raise UsageError(
                        f"jobs {job.name!r} and {other!r} would both write {t}"
                        + ("" if str(t) == str(mine) else f" (and {mine})"),
                        f"stop {other!r} first (`tether stop {other}`) or give the jobs separate folders",
                    )
    loop = feedback_loop(job, list(running.values()))
    if loop:
        said = "; ".join(f"{a.name} writes {w}, which {b.name} reads" for a, w, b in loop)
        names = " and ".join(repr(a.name) for a, _w, _b in loop)
        raise UsageError(
            f"jobs {names} feed each other, so every change would go round forever: {said}",
            f"stop {loop[-1][0].name!r} first (`tether stop {loop[-1][0].name}`), or make the pair one bisync job",
        )


def feedback_loop(job: Job, others: list[Job]) -> list[tuple[Job, ReplicaSpec, Job]]:
    """A chain of jobs from `job` back to it, each writing where the next reads (as (writer,
    where, reader) steps), or [] when there is none."""
    everyone = [job, *others]

    def feeds(a: Job) -> list[tuple[ReplicaSpec, Job]]:
        return [(w, b) for b in everyone if b is not a for w in a.writes() if any(w.overlaps(r) for r in b.reads())]

    path: list[tuple[Job, ReplicaSpec, Job]] = []
    seen: set[str] = set()

    def walk(a: Job) -> bool:
        for w, b in feeds(a):
            path.append((a, w, b))
            if b is job:
                return True
            if b.name not in seen:
                seen.add(b.name)
                if walk(b):
                    return True
            path.pop()
        return False

    return path if walk(job) else []


def said(done: dict[str, Any]) -> str:
    """What `start` or `stop` did, in a line."""
    name, pid, state = done["job"], done.get("pid"), done["state"]
    return {
        "started": f"started {name} (pid {pid}); log: {done.get('log')}",
        "already running": f"{name} is already running (pid {pid})",
        "stopped": f"stopped {name}",
        "not running": f"{name} is not running",
        "killed": f"{name} did not stop within {done.get('timeout', 0):.0f} s and was killed; the next start converges",
    }[state]


def start(dirs: Dirs, name: str, *, json_log: bool = False) -> dict[str, Any]:
    """Spawn `tether run NAME`, which logs to the job's log file, rotated; its stdout and stderr
    go there too (what it prints before its logging starts, a crash's traceback). What it did,
    for `said` or --json."""
    job = load_named(dirs, name)  # a bad job file fails here, with its line, not in the log
    paths = JobPaths.of(dirs, name)
    pid = PidLock(paths.pid).holder()
    if pid is not None:
        return {"job": name, "state": "already running", "pid": pid, "log": str(paths.log)}
    check_conflicts(dirs, job)
    _kill_leftovers(PidLock(paths.pid).last_pid())
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    paths.status.unlink(missing_ok=True)
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "run", name, "--log-file", str(paths.log)]
            + (["--json-log"] if json_log else []),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        st = read_status(paths.status)
        if st and st.get("pid") == proc.pid and st.get("state") == "running":
            return {"job": name, "state": "started", "pid": proc.pid, "log": str(paths.log)}
        code = proc.poll()
        if code is not None:
            raise TetherError(f"{name} stopped at once (exit {code}):\n{_tail(paths.log, 8)}", f"see {paths.log}")
        time.sleep(0.05)
    raise TetherError(f"{name} did not report running within {START_DEADLINE:.0f} s", f"see {paths.log}")


def stop(dirs: Dirs, name: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """SIGTERM, then the group killed after `timeout`; what it did, for `said` or --json."""
    job_file(dirs, name)  # validates the name
    paths = JobPaths.of(dirs, name)
    lock = PidLock(paths.pid)
    pid = lock.holder()
    if pid is None:
        return {"job": name, "state": "not running", "pid": None}
    os.kill(pid, signal.SIGTERM)  # the job ends its transfer in flight, then exits
    deadline = time.monotonic() + timeout
    while lock.holder() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if lock.holder() is not None:
        # The transfer did not end in time: stop the whole group. rsync and the agent write to
        # temporary names, so no half-written file is left under a real name; the next start
        # begins with a full pass.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while lock.holder() is not None:
            time.sleep(0.05)
        return {"job": name, "state": "killed", "pid": pid, "timeout": timeout}
    return {"job": name, "state": "stopped", "pid": pid}


def _kill_leftovers(old: int | None) -> None:
    """Kill what a job killed by -9 left running in its session (an rsync still writing).

    Such a writer would race the new start's full pass and leave stale files or times after it.
    The group is only ours when its leader is gone (or a zombie): Linux never hands out a pid
    that is still some live group's id, so a dead leader with live members means orphans of
    that job.
    """
    if old is None or old <= 1:
        return
    if _alive(old):
        return  # the leader's pid is alive: not a leftover group (a stop is in progress, or reuse)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            os.killpg(old, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Running and not a zombie: a killed job's leader stays a zombie until its parent reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
