"""Work done in a forked child, so that it runs on another core beside the parent's threads."""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from tether.errors import TetherError


class Forked:
    """A forked child computing one result: call to wait for it, or cancel."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def __call__(self) -> Any:
        with os.fdopen(self.fd, "rb") as f:
            data = f.read()
        os.waitpid(self.pid, 0)
        if not data:
            raise TetherError("the scan process died")
        ok, result = marshal.loads(data)
        if not ok:
            raise TetherError(f"scan failed: {result}")
        return result

    def cancel(self) -> None:
        """Kill the child and reap it: its result is not wanted."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.close(self.fd)
        os.waitpid(self.pid, 0)


def forked(fn: Callable[[], Any]) -> Forked:
    """Start fn() in a forked child; the result (marshal-able) is had by calling what this returns."""
    if threading.active_count() > 1:
        # A module that registers fork handlers (logging, concurrent.futures.thread: take a lock
        # before a fork, release it after) must not be imported first by another thread while
        # this one forks: the fork runs an "after" handler whose "before" never ran, and prints
        # "release unlocked lock" with a traceback (a pool's probe threads beside a bisync scan).
        # Imported here first (or waited for, if that thread is importing it now). Alone, this
        # thread has no one to race: a local pass does not pay the 10 ms these imports cost.
        import concurrent.futures.thread  # noqa: F401
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, leave without running any of the parent's cleanup
        code = 0
        try:
            # hold no descriptor of the parent's but stdio and the result pipe: a pipe another thread there
            # is reading (a Popen waiting for its child's exec) would otherwise wait for this child
            os.closerange(3, w)
            os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))
            try:
                data = marshal.dumps((True, fn()))
            except BaseException as e:
                data = marshal.dumps((False, f"{type(e).__name__}: {e}"))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    return Forked(pid, r)
