"""Shared pytest fixtures: a real sshd per xdist worker and an isolated TETHER_HOME.

Why real components: tether shells out to ssh/rsync, so mocks would only test our
assumptions about them.  Each xdist worker gets its own server (session scope is per
worker), and every test gets its own TETHER_HOME so state never leaks between tests.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make ``from tests.rig import ...`` work whatever pytest's import mode / cwd is.
_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.rig.sshd import SSHD, SshServer  # noqa: E402

# rclone_sftp / rclone_webdav: a real backend on loopback; the reliability scorecard
pytest_plugins = ["tests.rig.rclone", "tests.rig.scorecard"]


def _missing_ssh_tools() -> list[str]:
    """Binaries the sshd fixture needs; listed in the skip reason when absent."""
    missing = [str(SSHD)] if not SSHD.exists() else []
    missing += [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
    return missing


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running throwaway sshd on 127.0.0.1 (one per xdist worker)."""
    missing = _missing_ssh_tools()
    if missing:
        pytest.skip(f"sshd not installed: missing {', '.join(missing)}")
    server = SshServer.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tether_home(tmp_path: Path) -> Path:
    """A fresh, empty TETHER_HOME directory for this test."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def tether_env(tether_home: Path) -> dict[str, str]:
    """os.environ copy with TETHER_HOME pointing at this test's private home."""
    env = dict(os.environ)
    env["TETHER_HOME"] = str(tether_home)
    return env


@pytest.fixture
def tether_ssh_env(tether_env: dict[str, str], sshd: SshServer) -> dict[str, str]:
    """tether_env plus TETHER_SSH_CONFIG for the worker's sshd."""
    return sshd.env(tether_env)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The hostile catalogue's table, when its tests ran (their reports carry their verdicts)."""
    import json

    from tests.rig.hostile import scorecard

    cases = []
    for outcome in ("passed", "failed"):
        for rep in terminalreporter.stats.get(outcome, []):
            for key, value in getattr(rep, "user_properties", []):
                if key == "hostile":
                    doc = json.loads(value)
                    cases.append((doc["job"], doc["table"]))
    if cases:
        cases.sort(key=lambda c: ["mirror", "continuous", "bisync", "locations"].index(c[0]))
        terminalreporter.section("hostile catalogue: E exact, S skipped with its reason, F failed, K known")
        for line in scorecard(cases):
            terminalreporter.write_line(line)
