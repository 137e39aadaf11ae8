"""bisync over ssh: the agent started early (prestart), the lock and the whole scan taken as it
comes up, that scan compared here; the same guards as for a local replica."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.rig.live import small_pair as _pair
from tests.rig.run import contents as _files
from tests.rig.run import tether, tether_json
from tests.rig.sshd import SshServer
from tether.ssh import SshOptions
from tether.transport import agent as agent_mod
from tether.transport.agent import AgentClient


def test_a_live_lock_on_the_ssh_side_is_exit_4_and_nothing_moves(
    tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer
) -> None:
    a, b = _pair(tmp_path)
    remote = f"{sshd.alias}:{b}"
    tether(["bisync", a, remote], tether_ssh_env, check_rc=0)
    with open(b / ".tether" / "lock", "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("tether bisync test (host testbox, pid 4242)\n")
        f.flush()
        (a / "late.txt").write_text("late\n")
        (b / "late-b.txt").write_text("late b\n")
        proc = tether(["bisync", a, remote], tether_ssh_env, check_rc=4)
    assert "in use" in proc.stderr and "testbox" in proc.stderr and "4242" in proc.stderr
    assert not (b / "late.txt").exists() and not (a / "late-b.txt").exists()
    tether(["bisync", a, remote], tether_ssh_env, check_rc=0)
    assert _files(a) == _files(b) and (b / "late.txt").exists()
    assert (b / ".tether" / "lock").read_text() == ""  # released at the end of the pass


def test_a_vanished_ssh_replica_is_refused_not_read_as_deleted(
    tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer
) -> None:
    a, b = _pair(tmp_path)
    tether(["bisync", a, f"{sshd.alias}:{b}"], tether_ssh_env, check_rc=0)
    shutil.rmtree(b)
    proc = tether(["bisync", a, f"{sshd.alias}:{b}"], tether_ssh_env, check_rc=1)
    assert "cannot be opened" in proc.stderr and str(b) in proc.stderr
    assert len(_files(a)) == 4 and not b.exists()


def _other_python() -> str | None:
    """A python3.8+ of another minor version than this one, for the agent's JSON listing."""
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [f"/usr/bin/python3.{m}" for m in range(8, 15)]
    candidates += sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.*/bin/python3"))
    for c in candidates:
        if not os.access(c, os.X_OK):
            continue
        out = subprocess.run([c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                             text=True, check=False)  # fmt: skip
        v = out.stdout.strip()
        if out.returncode == 0 and v != mine and tuple(map(int, v.split("."))) >= (3, 8):
            return c
    return None


@pytest.mark.parametrize("python", ["same", "other"])
def test_changes_both_ways_with_the_agent_on_the_same_or_another_python(
    tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer, python: str
) -> None:
    """The early scan comes back whole (marshal for the same Python, JSON for another) and is
    compared with the state here: changes, new files and deletes on the far side all count."""
    interpreter = "auto"
    if python == "other":
        found = _other_python()
        if found is None:
            pytest.skip("no python3.8+ of another version on this machine")
        interpreter = found
    a, b = _pair(tmp_path, files=6)
    jobs = Path(tether_ssh_env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "p.toml").write_text(
        f'kind = "bisync"\npath1 = "{a}"\npath2 = "{sshd.alias}:{b}"\npython = "{interpreter}"\n'
    )
    tether(["sync", "p"], tether_ssh_env, check_rc=0)
    (b / "f0.txt").write_text("changed on b\n")
    (b / "new-b.txt").write_text("new on b\n")
    (b / "empty-b.txt").write_bytes(b"")  # read over ssh: no bytes, but data all the same
    (b / "f1.txt").unlink()
    (a / "f2.txt").write_text("changed on a\n")
    doc = tether_json(["sync", "p"], tether_ssh_env)
    assert doc["_rc"] == 0, doc["_stderr"]
    assert doc["copied"] == {"to_path1": 3, "to_path2": 1} and doc["deleted"] == {"path1": 1, "path2": 0}
    assert _files(a) == _files(b) and (a / "f0.txt").read_text() == "changed on b\n" and not (a / "f1.txt").exists()
    assert (a / "empty-b.txt").read_bytes() == b""
    quiet = tether_json(["sync", "p"], tether_ssh_env)
    assert quiet["_rc"] == 0 and quiet["copied"] == {"to_path1": 0, "to_path2": 0} and not quiet["plan"]


def test_a_prestarted_agent_is_taken_by_the_connect_and_an_untaken_one_is_dropped(
    sshd: SshServer, tmp_path: Path
) -> None:
    ssh = SshOptions(tempfile.mkdtemp(prefix="tps-", dir="/tmp"), str(sshd.ssh_config))  # a short socket path
    AgentClient.prestart_ssh(ssh, sshd.alias)
    (spare,) = agent_mod._SPARES[(ssh, sshd.alias, "auto")]
    client = AgentClient.connect_ssh(ssh, sshd.alias, str(tmp_path), create=False)
    try:
        assert client is spare and not agent_mod._SPARES[(ssh, sshd.alias, "auto")]
        assert client.call("df")["free"] > 0
    finally:
        client.close()
    AgentClient.prestart_ssh(ssh, sshd.alias)
    (left,) = agent_mod._SPARES[(ssh, sshd.alias, "auto")]
    agent_mod.drop_prestarted()
    assert not agent_mod._SPARES
    assert left._proc.poll() is not None  # it ended; nothing touched the far side
    for sock in Path(ssh.socket_dir).iterdir():
        subprocess.run(["ssh", "-F", str(sshd.ssh_config), "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                       capture_output=True, check=False)  # fmt: skip
    shutil.rmtree(ssh.socket_dir, ignore_errors=True)
