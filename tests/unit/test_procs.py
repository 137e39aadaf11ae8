"""run_captured waits for the program it ran, not for whatever inherited its output: what an ssh
ControlPersist master or a hook's daemon does to a reader of pipes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tether.hooks import run_command
from tether.procs import run_captured

# the program ends at once; the process it leaves behind holds its stdout and stderr for 300 s
LEAVES_A_HOLDER = ["sh", "-c", "sleep 300 & echo $!; echo said >&2"]


@pytest.fixture
def holders() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_output_is_read_once_the_program_ends_though_a_child_still_holds_it(holders: list[int]) -> None:
    proc = run_captured(LEAVES_A_HOLDER)
    holders.append(int(proc.stdout))
    assert proc.returncode == 0
    assert proc.stderr == b"said\n"
    assert _alive(holders[0]), "returned only after the child holding the output ended"


def test_a_pipe_reader_would_have_waited_for_that_child(holders: list[int]) -> None:
    """The test above can fail: subprocess.run, reading pipes, returns only when the holder ends."""
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([*LEAVES_A_HOLDER[:2], LEAVES_A_HOLDER[2].replace("300", "3")], capture_output=True, timeout=1)


def test_input_reaches_stdin_and_a_timeout_kills_the_program() -> None:
    assert run_captured(["cat"], input=b"a\0b").stdout == b"a\0b"
    assert run_captured(["cat"]).stdout == b""  # stdin is /dev/null without input
    with pytest.raises(subprocess.TimeoutExpired):
        run_captured(["sleep", "30"], timeout=0.2)


def test_a_hook_that_starts_a_daemon_finishes_with_its_command(holders: list[int], tmp_path: os.PathLike[str]) -> None:
    pidfile = os.path.join(tmp_path, "pid")
    said = run_command("after", ["sh", "-c", f'sleep 300 & echo $! > "{pidfile}"'], timeout=60)
    with open(pidfile) as f:
        holders.append(int(f.read()))
    assert said is None
    assert _alive(holders[0])
