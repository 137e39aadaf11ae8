"""Helpers for tests of running jobs: job files, start/stop, waiting for convergence."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.rig.compare import diff_trees
from tests.rig.run import tether


def write_job(env: dict[str, str], name: str, source: Path, targets: list[str], **extra: Any) -> Path:
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    lines = [f"source = {json.dumps(str(source))}", f"targets = {json.dumps(targets)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path = jobs / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_job_text(env: dict[str, str], name: str, body: str) -> Path:
    """A job file as written by hand (any kind), in the test's TETHER_HOME."""
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    f = jobs / f"{name}.toml"
    f.write_text(body)
    return f


def small_pair(tmp_path: Path, files: int = 4) -> tuple[Path, Path]:
    """Two replicas: a with a few small files, b empty."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i in range(files):
        (a / f"f{i}.txt").write_text(f"file {i}\n")
    return a, b


@contextmanager
def running(env: dict[str, str], name: str) -> Iterator[None]:
    tether(["start", name], env, check_rc=0)
    try:
        yield
    finally:
        tether(["stop", name], env, check_rc=0)


def wait_for(cond: Callable[[], bool], deadline: float = 60.0, what: str = "condition") -> float:
    """Poll until cond() holds; the deadline is generous, the test asserts behaviour, not speed."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if cond():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}")


def wait_same(src: Path, dst: Path, deadline: float = 60.0) -> None:
    last: list[str] = []

    def same() -> bool:
        nonlocal last
        try:
            last = diff_trees(src, dst)
        except FileNotFoundError as e:  # the tree changes under the walk: look again
            last = [str(e)]
        return not last

    try:
        wait_for(same, deadline, "the target to match the source")
    except AssertionError as e:
        raise AssertionError(f"{e}; differences:\n" + "\n".join(last[:20])) from None


def status(env: dict[str, str], name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(tether(["status", name, "--json"], env, check_rc=0).stdout)["jobs"][0]
    return doc
