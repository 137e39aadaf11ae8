"""What a job does around a pass, the same for every job kind: `before` and `after` commands
and the pass's time limits (`max_time_soft` warns, `max_time_hard` stops it cleanly).

A bisync pass, a one-shot mirror and each full pass of a continuous mirror all use these, so
the keys mean one thing whatever the job's kind.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from tether.errors import TetherError

# Runs a command somewhere else (a replica's root, through its agent): (exit code, stderr),
# or None when it did not finish within the timeout.
RemoteRun = Callable[[list[str], float], "tuple[int, str] | None"]


class PassHooks(NamedTuple):
    """A job's commands around each pass and its time limits; the defaults are none.
    (A NamedTuple, not a dataclass: `tether bisync` starts without importing dataclasses.)"""

    before: tuple[str, ...] = ()  # a failing `before` skips the pass
    after: tuple[str, ...] = ()  # runs after the pass, whatever it did; a failure is an error of the pass
    command_timeout: float = 300.0
    max_time_soft: float | None = None
    max_time_hard: float | None = None

    def clock(self) -> PassClock:
        return PassClock(self.max_time_soft, self.max_time_hard)


NO_HOOKS = PassHooks()


def run_command(which: str, argv: Sequence[str], timeout: float, remote: RemoteRun | None = None) -> str | None:
    """A before/after command (an argument list, never a shell), here or through `remote`;
    None when it succeeded, else one line saying why not."""
    if not argv:
        return None
    try:
        if remote is None:
            proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
            rc, err = proc.returncode, proc.stderr.decode("utf-8", "replace")
        else:
            got = remote(list(argv), timeout)
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
