"""`tether wait NAME`: return once every target of a running job holds what the source held
when it was called (deploy scripts: push, wait, then restart the far service).

The protocol is a signal and the status file, like everything else between tether and its
jobs.  The waiter notes the time, then sends SIGUSR1; the job, on its next turn, takes in every
change the kernel has queued (all made before the signal), hands them to its targets, and
stamps each target's `caught_up` with that turn's time once the target has applied them (a
bisync job: once a full pass begun after the signal has ended well).  The waiter reads the
status file until every target's stamp is past its own time.  Signals merge, and one turn
answers every waiter who signalled before it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.service.status import read_status

SIGNAL = signal.SIGUSR1
POLL = 0.02  # how often the waiter reads the status file: a small local file


class Asked:
    """The job's side: set from the signal handler, taken by the job's loop (which owns the
    turn's time, so the time is never earlier than the signal)."""

    def __init__(self) -> None:
        self._asked = False

    def ask(self) -> None:
        self._asked = True  # one store: safe in a signal handler

    def take(self) -> int | None:
        """The time of this turn (ns) if a waiter asked since the last take, else None."""
        if not self._asked:
            return None
        self._asked = False
        return time.time_ns()


@dataclass
class Outcome:
    ok: bool
    seconds: float
    behind: list[dict[str, Any]] = field(default_factory=list)  # the targets not caught up, as in the status
    why: str = ""  # when not ok: the job stopped, or the timeout


def wait(status_path: Path, pid: int, timeout: float, alive: Any) -> Outcome:
    """Signal the job `pid` and poll `status_path` until every target caught up, the job is no
    longer `alive()`, or `timeout` passes.  The job must be running (its handler installed)
    before the signal: SIGUSR1 would end a process that has none yet."""
    began = time.monotonic()
    deadline = began + timeout
    doc = read_status(status_path) or {}
    while doc.get("state") != "running" or doc.get("pid") != pid:  # not a crashed run's last words
        if not alive():
            return Outcome(False, time.monotonic() - began, why="the job stopped")
        if time.monotonic() >= deadline:
            return Outcome(False, time.monotonic() - began, doc.get("targets", []), "the job did not get to running")
        time.sleep(POLL)
        doc = read_status(status_path) or {}
    asked = time.time_ns()
    os.kill(pid, SIGNAL)
    while True:
        doc = read_status(status_path) or doc
        behind = [t for t in doc.get("targets", []) if (t.get("caught_up") or 0) < asked]
        if not behind:
            return Outcome(True, time.monotonic() - began)
        if not alive():
            return Outcome(False, time.monotonic() - began, behind, "the job stopped")
        if time.monotonic() >= deadline:
            return Outcome(False, time.monotonic() - began, behind, f"not caught up within {timeout:g} s")
        time.sleep(POLL)
