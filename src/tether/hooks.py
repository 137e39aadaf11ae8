"""What a job does around a pass, the same for every job kind: `before` and `after` commands
and the pass's time limits (`max_time_soft` warns, `max_time_hard` stops it cleanly).

A bisync pass, a one-shot mirror, each full pass of a continuous mirror and each destination of
a locations action all use these, so the keys mean one thing whatever the job's kind.  Each
command learns what it runs around from its environment (see `environment`), like osync's and
rsnapshot's hooks, so one script can serve every job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from tether.errors import TetherError

# Runs a command somewhere else (a replica's root, through its agent), with extra environment:
# (exit code, stderr), or None when it did not finish within the timeout.
RemoteRun = Callable[[list[str], float, dict[str, str]], "tuple[int, str] | None"]

BEFORE_FAILS = ("skip", "continue")  # what a failing `before` does to the pass
COUNTS = ("sent", "deleted", "conflicts", "errors", "bytes")  # TETHER_SENT... in `after`'s environment


class PassHooks(NamedTuple):
    """A job's commands around each pass and its time limits; the defaults are none.
    (A NamedTuple, not a dataclass: `tether bisync` starts without importing dataclasses.)"""

    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    command_timeout: float = 300.0
    max_time_soft: float | None = None
    max_time_hard: float | None = None
    before_fails: str = "skip"  # "skip": the pass does not run; "continue": said, and the pass runs
    after_on_error: bool = True  # False: `after` runs only after a pass that succeeded
    on: str = "local"  # the job's commands_on: "local", or where its kind allows (targets, path1, path2)
    job: str = ""  # the job's name and kind, for the commands' environment
    kind: str = ""

    def clock(self) -> PassClock:
        return PassClock(self.max_time_soft, self.max_time_hard)

    def run_before(self, remote: RemoteRun | None = None, **where: str) -> Before:
        """`before`, told where the pass goes (target="..." is TETHER_TARGET): whether the pass
        may go on, and what to say."""
        env = self.environment("before", "starting", None, where)
        failed = run_command("before", self.before, self.command_timeout, remote, env)
        if failed and self.before_fails == "continue":
            return Before(True, failed + '; the pass runs anyway (before_fails = "continue")')
        return Before(not failed, failed)

    def run_after(
        self, status: str, counts: Mapping[str, int] | None = None, remote: RemoteRun | None = None, **where: str
    ) -> str | None:
        """`after`, told how the pass went (status "ok", "error", "refused" or "stopped") and its
        counts; None when it succeeded or was not to run (a failed pass, after_on_error = false)."""
        if status != "ok" and not self.after_on_error:
            return None
        env = self.environment("after", status, counts, where)
        return run_command("after", self.after, self.command_timeout, remote, env)

    def environment(
        self, event: str, status: str, counts: Mapping[str, int] | None, where: Mapping[str, str]
    ) -> dict[str, str]:
        """What a command is told: TETHER_JOB, TETHER_KIND, TETHER_EVENT ("before" or "after"),
        TETHER_STATUS ("starting" for before), the counts (TETHER_SENT, TETHER_DELETED,
        TETHER_CONFLICTS, TETHER_ERRORS, TETHER_BYTES; 0 before) and the places (TETHER_TARGET...)."""
        env = {"TETHER_JOB": self.job, "TETHER_KIND": self.kind, "TETHER_EVENT": event, "TETHER_STATUS": status}
        for k in COUNTS:
            env[f"TETHER_{k.upper()}"] = str((counts or {}).get(k, 0))
        env.update({f"TETHER_{k.upper()}": v for k, v in where.items()})
        return env


class Before(NamedTuple):
    go: bool  # the pass runs
    said: str | None  # the failure, to report (as a refusal when not go, else as a warning)


NO_HOOKS = PassHooks()


def run_command(
    which: str, argv: Sequence[str], timeout: float, remote: RemoteRun | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:  # fmt: skip
    """A before/after command (an argument list, never a shell), here or through `remote`, with
    `env` added to the environment; None when it succeeded, else one line saying why not."""
    if not argv:
        return None
    # here, not at the top: every job's parse imports this module, and a job without commands
    # (a quick bisync pass of a 20,000-file pair: 0.4 s) should not pay for subprocess's import
    import subprocess

    from tether.procs import run_captured

    extra = dict(env or {})
    try:
        if remote is None:
            proc = run_captured(list(argv), timeout=timeout, env={**os.environ, **extra})
            rc, err = proc.returncode, proc.stderr.decode("utf-8", "replace")
        else:
            got = remote(list(argv), timeout, extra)
            if got is None:
                raise subprocess.TimeoutExpired(list(argv), timeout)
            rc, err = got
    except subprocess.TimeoutExpired:
        return f"{which} command {argv[0]!r} did not finish within {timeout:g} s"
    except (OSError, TetherError) as e:
        return f"{which} command {argv[0]!r} could not run: {e}"
    if rc != 0:
        last = err.strip().splitlines()[-1:] or ["no message"]
        return f"{which} command {argv[0]!r} failed (exit {rc}): {last[0]}"
    return None


def agent_runner(call: Callable[..., dict[str, object]]) -> RemoteRun:
    """A RemoteRun through an agent's `run` operation (in its root, on its host)."""

    def remote(args: list[str], timeout: float, env: dict[str, str]) -> tuple[int, str] | None:
        res = call("run", argv=args, timeout=timeout, env=env)
        return None if res.get("timed_out") else (int(str(res["rc"])), str(res.get("stderr", "")))

    return remote


class PassClock:
    """One pass's time against its limits, started when the pass starts."""

    def __init__(self, soft: float | None = None, hard: float | None = None) -> None:
        self.soft, self.hard = soft, hard
        self.started = time.monotonic()
        self._warned = False

    @property
    def stop_at(self) -> float | None:
        """The monotonic time at which the pass must stop, or None without a hard limit."""
        return None if self.hard is None else self.started + self.hard

    def soft_warning(self) -> str | None:
        """Once, when the pass has run past max_time_soft: the warning to give."""
        took = time.monotonic() - self.started
        if self.soft is None or took <= self.soft or self._warned:
            return None
        self._warned = True
        return f"the pass has run {took:.0f} s, past max_time_soft={self.soft:g}"

    def over(self) -> str | None:
        """Past max_time_hard: why the pass stops (what it did stays done; the next one continues)."""
        if self.hard is None or time.monotonic() - self.started <= self.hard:
            return None
        return self.stopped()

    def stopped(self) -> str:
        took = time.monotonic() - self.started
        return (
            f"stopped after {took:.0f} s (max_time_hard={self.hard:g}); what was done is kept, the next pass continues"
        )
