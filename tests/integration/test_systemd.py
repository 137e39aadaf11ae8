"""`tether service install|uninstall`: the unit systemd's own checker accepts, written where the
user's or the system's systemd reads units, and refused for a job that does not load."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rig.live import write_job
from tests.rig.run import tether

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (package systemd)"
)


@needs_systemd
def test_the_unit_passes_systemd_analyze_verify_even_for_odd_paths(tmp_path: Path, tether_env: dict[str, str]) -> None:
    home = tmp_path / 'a home with spaces, 100% odd $HOME "quotes"'
    env = tether_env | {"TETHER_HOME": str(home)}
    write_job(env, "web-site.v2", tmp_path / "src", [str(tmp_path / "dst")])
    text = tether(["service", "install", "web-site.v2", "--print", "--system"], env, check_rc=0).stdout
    unit = tmp_path / "tether-web-site.v2.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and str(unit) not in proc.stderr, proc.stderr
    assert '"run" "web-site.v2"' in text and "WantedBy=multi-user.target" in text and "Restart=on-failure" in text
    assert 'Environment="TETHER_HOME=' in text and '100%% odd $$HOME \\"quotes\\"' in text


def test_install_and_uninstall_a_user_unit(tmp_path: Path, tether_env: dict[str, str]) -> None:
    env = tether_env | {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    write_job(env, "w", tmp_path / "src", [str(tmp_path / "dst")])
    said = tether(["service", "install", "w", "--user"], env, check_rc=0).stdout
    unit = tmp_path / "cfg" / "systemd" / "user" / "tether-w.service"
    assert unit.exists() and "WantedBy=default.target" in unit.read_text()
    assert "systemctl --user daemon-reload && systemctl --user enable --now tether-w.service" in said
    said = tether(["service", "uninstall", "w", "--user"], env, check_rc=0).stdout
    assert not unit.exists() and "daemon-reload" in said
    assert "no unit" in tether(["service", "uninstall", "w", "--user"], env, check_rc=2).stderr


def test_a_job_that_does_not_load_gets_no_unit(tmp_path: Path, tether_env: dict[str, str]) -> None:
    env = tether_env | {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "bad.toml").write_text('source = "/tmp"\ntargets = ["/tmp/x"]\ninterval = "often"\n')
    proc = tether(["service", "install", "bad", "--user"], env, check_rc=2)
    assert "bad.toml:3" in proc.stderr
    assert not (tmp_path / "cfg" / "systemd").exists()
    assert "no job named 'nope'" in tether(["service", "install", "nope", "--user"], env, check_rc=2).stderr
