"""The commands around a pass: what they are told, and what their failure does to the pass.

Real programs (true, false, sh) run here; they are quick, and the environment is the point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tether.hooks import PassHooks

DUMP = [sys.executable, "-c", "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"]


def seen(path: Path) -> dict[str, str]:
    """The TETHER_ variables the hook was given, leaving out what the test run itself holds
    (the scorecard's TETHER_SCORECARD_DIR, inherited like any variable)."""
    env: dict[str, str] = json.loads(path.read_text())
    return {k: v for k, v in env.items() if k.startswith("TETHER_") and os.environ.get(k) != v}


def test_before_and_after_are_told_the_job_the_event_the_status_and_the_counts(tmp_path: Path) -> None:
    b, a = tmp_path / "before.json", tmp_path / "after.json"
    h = PassHooks(before=(*DUMP, str(b)), after=(*DUMP, str(a)), job="photos", kind="mirror")
    assert h.run_before(target="host:/srv/photos") == (True, None)
    assert seen(b) == {
        "TETHER_JOB": "photos", "TETHER_KIND": "mirror", "TETHER_EVENT": "before", "TETHER_STATUS": "starting",
        "TETHER_SENT": "0", "TETHER_DELETED": "0", "TETHER_CONFLICTS": "0", "TETHER_ERRORS": "0",
        "TETHER_BYTES": "0", "TETHER_TARGET": "host:/srv/photos",
    }  # fmt: skip
    assert h.run_after("error", {"sent": 3, "errors": 1, "bytes": 4096}, target="host:/srv/photos") is None
    told = seen(a)
    assert (told["TETHER_EVENT"], told["TETHER_STATUS"]) == ("after", "error")
    assert (told["TETHER_SENT"], told["TETHER_ERRORS"], told["TETHER_BYTES"], told["TETHER_DELETED"]) == (
        "3", "1", "4096", "0",
    )  # fmt: skip


def test_a_failing_before_skips_the_pass_unless_the_job_says_continue() -> None:
    go, said = PassHooks(before=("false",)).run_before()
    assert not go and said == "before command 'false' failed (exit 1): no message"
    go, said = PassHooks(before=("false",), before_fails="continue").run_before()
    assert go and said is not None and said.endswith('the pass runs anyway (before_fails = "continue")')
    assert PassHooks(before=("true",)).run_before() == (True, None)
    assert PassHooks().run_before() == (True, None)


@pytest.mark.parametrize("status", ["error", "refused", "stopped"])
def test_after_runs_after_a_failed_pass_unless_after_on_error_is_false(tmp_path: Path, status: str) -> None:
    mark = tmp_path / "ran"
    touch = ("touch", str(mark))
    assert PassHooks(after=touch, after_on_error=False).run_after(status) is None
    assert not mark.exists()
    assert PassHooks(after=touch, after_on_error=False).run_after("ok") is None
    assert mark.exists()
    mark.unlink()
    assert PassHooks(after=touch).run_after(status) is None
    assert mark.exists()


def test_a_command_that_fails_is_said_in_one_line() -> None:
    h = PassHooks(after=("sh", "-c", "echo first >&2; echo last words >&2; exit 4"))
    assert h.run_after("ok") == "after command 'sh' failed (exit 4): last words"
    assert PassHooks(before=("/no/such/program",)).run_before().said == (
        "before command '/no/such/program' could not run: [Errno 2] No such file or directory: '/no/such/program'"
    )
    slow = PassHooks(before=("sleep", "30"), command_timeout=0.2)
    assert slow.run_before().said == "before command 'sleep' did not finish within 0.2 s"
