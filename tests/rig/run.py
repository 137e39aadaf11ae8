"""Running the real `tether` command as a user would, and checking it never crashes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def tether(
    args: Sequence[str | Path | bytes],
    env: Mapping[str, str],
    *,
    timeout: float = 300,
    check_rc: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m tether ARGS`; a traceback on stderr is always a test failure."""
    argv: list[str | bytes] = [sys.executable, "-m", "tether"]
    argv += [a if isinstance(a, bytes) else os.fspath(a) for a in args]
    proc = subprocess.run(
        argv, env=dict(env), capture_output=True, text=True, errors="backslashreplace",
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    if check_rc is not None:
        assert proc.returncode == check_rc, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def tether_json(args: Sequence[str | Path | bytes], env: Mapping[str, str], **kw: Any) -> dict[str, Any]:
    proc = tether([*args, "--json"], env, **kw)
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc["_rc"] = proc.returncode
    doc["_stderr"] = proc.stderr
    return doc


def find_named(root: Path, name: bytes) -> list[bytes]:
    """Every path under root whose last component is `name` (bytes-safe walk)."""
    hits: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        hits += [os.path.join(dirpath, n) for n in dirnames + filenames if n == name]
    return hits


def tether_unprivileged(args: Sequence[str | Path], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """tether without root's read-anything capabilities, so a mode-000 file is really unreadable;
    skips when setpriv (util-linux) is missing."""
    import pytest

    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop root's read-anything capabilities")
    argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "tether"]
    proc = subprocess.run(
        [*argv, *(os.fspath(a) for a in args)], env=dict(env), capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def contents(root: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file under root, leaving out tether's own .tether.

    Polls call it while a sync still runs: a file gone between the listing and the read (an
    rclone or rsync temp file renamed into place) is left out, as a later listing would."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        if Path(dirpath) == root and ".tether" in dirs:
            dirs.remove(".tether")
        for n in names:
            try:
                out[str((Path(dirpath) / n).relative_to(root))] = (Path(dirpath) / n).read_bytes()
            except FileNotFoundError:
                continue
    return out
