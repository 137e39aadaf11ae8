"""Running a program whose output is read after it ends, without pipes.

A pipe's reader sees its end only when every process holding the write end has closed it,
and a program that runs ssh hands its stderr to ssh, which may pass it on to a process that
outlives the program: ssh's ControlPersist master (forked by the first ssh to a host, living
60 s past its last session) or a daemon a user's hook starts. The output then arrives at once
and the reader waits a minute, or a hook's timeout, for nothing. Unnamed temporary files
instead of pipes: the wait is for the program alone, and output of any size never blocks it.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Mapping
from typing import Any


def run_captured(
    argv: list[str],
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """As `subprocess.run(argv, input=input, capture_output=True, timeout=timeout)`, stdin
    /dev/null without `input`; `started` sees the process (to stop it from a timer). OSError if
    it cannot start; TimeoutExpired after killing it at the timeout."""
    import tempfile  # here: with random, 2 ms of every bisync start, which runs no command

    with contextlib.ExitStack() as files:
        out, err = files.enter_context(tempfile.TemporaryFile()), files.enter_context(tempfile.TemporaryFile())
        stdin: Any = subprocess.DEVNULL
        if input is not None:
            stdin = files.enter_context(tempfile.TemporaryFile())
            stdin.write(input)
            stdin.seek(0)
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, env=env)
        with proc:
            if started is not None:
                started(proc)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, rc, out.read(), err.read())
