"""The agent over a real sshd: bootstrap on stdin, hostile names, pipelining, failures, latency.

Each test gets its own ControlPath directory (short, under /tmp): the rig's aliases share
host, port and user, so a shared master would let `tether-unknownkey` ride on a connection
that `tether-test` opened and hide the host-key failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rig.run import find_named
from tests.rig.sshd import ALIAS_DOWN, ALIAS_UNKNOWN_HOSTKEY, SshServer
from tests.rig.trees import HOSTILE_NAMES
from tether.agent_remote import PROTOCOL_VERSION, to_bytes
from tether.ssh import SshOptions
from tether.transport import agent as agent_mod
from tether.transport.agent import BOOTSTRAP, AgentClient, AgentDown, AgentError

MTIME = 1_600_000_000_123_456_789


@pytest.fixture
def ssh_opts(sshd: SshServer) -> Iterator[SshOptions]:
    """Options with a private, short socket dir; the master is stopped afterwards."""
    sock_dir = tempfile.mkdtemp(prefix="tas-", dir="/tmp")
    try:
        yield SshOptions(sock_dir, str(sshd.ssh_config))
    finally:
        for sock in Path(sock_dir).iterdir():
            subprocess.run(
                ["ssh", "-F", str(sshd.ssh_config), "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return tmp_path / "remote root with space $(touch pwned)"


@pytest.fixture
def client(ssh_opts: SshOptions, sshd: SshServer, remote: Path) -> Iterator[AgentClient]:
    c = AgentClient.connect_ssh(ssh_opts, sshd.alias, str(remote), create=True)
    try:
        yield c
    finally:
        c.close()


def rb(remote: Path, rel: bytes) -> bytes:
    return os.path.join(os.fsencode(remote), rel)


def test_connect_says_hello_and_the_command_line_holds_no_path(client: AgentClient, remote: Path) -> None:
    assert client.info["version"] == PROTOCOL_VERSION
    assert client.info["root"] == str(remote) and remote.is_dir()
    assert isinstance(client.info["pid"], int) and client.info["host"]
    argv = client._proc.args  # type: ignore[attr-defined]
    tail = r"-S -c '[^']+'"
    assert re.fullmatch(rf"test -x /usr/bin/python3 && exec /usr/bin/python3 {tail} \|\| exec python3 {tail}", argv[-1])
    assert BOOTSTRAP in argv[-1]
    assert not any(str(remote) in a or "pwned" in a for a in argv)
    print(f"\nagent connect (spawn + hello): {client.connect_seconds * 1000:.0f} ms")


def test_put_move_trash_remove_round_trip_with_hostile_names(client: AgentClient, remote: Path, tmp_path: Path) -> None:
    names = list(dict.fromkeys([*HOSTILE_NAMES, b"-leading-dash", b"$(touch pwned)", b"caf\xe9"]))
    for i, name in enumerate(names):
        d = b"h%d/" % i
        assert client.call("put", name, path=d + name, mode=0o640, mtime_ns=MTIME) == {"size": len(name)}
        st = os.lstat(rb(remote, d + name))
        assert Path(os.fsdecode(rb(remote, d + name))).read_bytes() == name
        assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, MTIME)
        assert client.call("move", old=d + name, new=d + b"moved/" + name)["moved"] is True
        client.call("symlink", path=d + b"link", target=name, mtime_ns=MTIME)
        assert os.readlink(rb(remote, d + b"link")) == name
        t = client.call("trash", paths=[d + b"moved/" + name], trash_root=b".tether/versions")
        assert t["trashed"] == 1 and os.path.lexists(rb(remote, to_bytes(t["dests"][0])))
        r = client.call("remove", paths=[d + b"moved", d + b"link", d + b"gone"])
        assert r == {"removed": 2, "missing": 1, "failed": []}
        assert os.listdir(rb(remote, d)) == []
    stats = client.call("stat", paths=[b"h0", b"nothing"])["entries"]
    assert [s["type"] for s in stats] == ["d", None]
    for place in (tmp_path, Path.cwd(), Path.home()):
        assert find_named(place, b"pwned") == [], place


def test_a_pipeline_of_200_puts_is_one_batch(client: AgentClient, remote: Path) -> None:
    reqs = [
        ("put", {"path": f"batch/{i:03d} $(touch pwned)", "mode": 0o644, "mtime_ns": MTIME}, b"%d" % i)
        for i in range(200)
    ]
    reqs.insert(100, ("put", {"path": "../escape", "mode": 0o644}, b"x"))
    replies = client.pipeline(reqs)
    assert len(replies) == 201
    bad = replies.pop(100)
    assert isinstance(bad, AgentError) and "refused" in str(bad) and bad.errno is not None
    assert replies == [{"size": len(b"%d" % i)} for i in range(200)]
    assert sorted(os.listdir(remote / "batch")) == [f"{i:03d} $(touch pwned)" for i in range(200)]
    assert not (remote.parent / "escape").exists()
    assert client.call("df")["total"] > 0  # the channel is still in step after the batch


def test_big_bodies_and_a_long_pipeline_do_not_deadlock(client: AgentClient, remote: Path) -> None:
    big = os.urandom(8 << 20)
    client.call("put", big, path="big", mode=0o600)
    assert (remote / "big").read_bytes() == big
    replies = client.pipeline([("stat", {"paths": [f"n{i}" for i in range(50)]}, b"") for _ in range(2000)])
    assert len(replies) == 2000 and all(isinstance(r, dict) for r in replies)


def test_protocol_version_mismatch_is_a_clear_error(
    ssh_opts: SshOptions, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: AgentClient
) -> None:
    with pytest.raises(AgentError, match="protocol version mismatch: tether speaks 999, this agent speaks"):
        client.call("hello", version=999)
    assert client.call("df")["free"] >= 0  # a refused request does not end the session
    monkeypatch.setattr(agent_mod, "PROTOCOL_VERSION", 999)
    with pytest.raises(AgentError, match=r"tether-test: protocol version mismatch.*same tether version"):
        AgentClient.connect_ssh(ssh_opts, sshd.alias, str(tmp_path))


@pytest.mark.parametrize(
    ("alias", "cause"),
    [
        (ALIAS_DOWN, "connection refused"),
        (ALIAS_UNKNOWN_HOSTKEY, "host key is not in your known_hosts"),
    ],
)
def test_unreachable_hosts_raise_agent_down_with_the_cause(
    ssh_opts: SshOptions, alias: str, cause: str, tmp_path: Path
) -> None:
    with pytest.raises(AgentDown) as e:
        AgentClient.connect_ssh(ssh_opts, alias, str(tmp_path / "never"))
    assert cause in e.value.message and alias in e.value.message and e.value.hint
    assert not (tmp_path / "never").exists()


def test_missing_python_and_a_dead_agent_are_explained(
    ssh_opts: SshOptions, sshd: SshServer, client: AgentClient
) -> None:
    with pytest.raises(AgentDown, match="python-nope is not installed there"):
        AgentClient.connect_ssh(ssh_opts, sshd.alias, "/tmp", python="python-nope")
    with pytest.raises(AgentError, match="only a program name"):
        AgentClient.connect_ssh(ssh_opts, sshd.alias, "/tmp", python="python3; touch pwned")
    os.kill(client.info["pid"], signal.SIGKILL)  # the rig's "remote" is this machine
    with pytest.raises(AgentDown, match="agent on tether-test"):
        client.call("df")
    with pytest.raises(AgentDown):  # and it stays down
        client.call("df")


def test_put_round_trip_latency(
    client: AgentClient, remote: Path, record_property: Callable[[str, object], None]
) -> None:
    data = os.urandom(1024)
    client.call("put", data, path="lat/warmup", mode=0o644)
    samples = []
    for i in range(50):
        t0 = time.perf_counter()
        client.call("put", data, path=f"lat/{i}", mode=0o644, mtime_ns=MTIME)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    p50, p95 = statistics.median(samples) * 1000, samples[int(len(samples) * 0.95) - 1] * 1000
    record_property("put_1k_p50_ms", round(p50, 3))
    record_property("put_1k_p95_ms", round(p95, 3))
    connect_ms = client.connect_seconds * 1000
    print(f"\nagent put 1 KB over ssh: p50 {p50:.2f} ms, p95 {p95:.2f} ms (connect {connect_ms:.0f} ms)")
    # speed is bench/'s business (bench.live); here: every put landed whole
    assert all((remote / "lat" / str(i)).read_bytes() == data for i in range(50))
