"""Test hosts in network namespaces: each its own link (a veth pair), address and sshd, behind
50 ms of delay and 1% loss, with a link that can be cut and restored.

Why namespaces: a host on 127.0.0.1 never loses a packet. Here the bytes cross a real link
that a test can cut (`ip link set DEV down` on the host's end: packets stop, the client's side
sees no error, as when a cable is cut beyond the first hop). Delay and loss come from tc's netem
where the kernel has it, else from a user-space relay (tests/rig/relay.py) that ssh connects
through; `Net.mechanism` says which. Either way a token bucket (tbf) holds each link to RATE,
so a transfer of a few MB lasts long enough to be cut halfway.

Names and subnets are unique per process (the pid) and per host (a counter), chosen under a lock
against other suites on the machine, and always removed; namespaces left by a process that
died are removed by the next one to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.rig.relay import Relay
from tests.rig.sshd import SSHD, SshServer

DELAY_MS = 50
LOSS_PERCENT = 1
RATE = "16mbit"  # 2 MB/s: a 4 MB file takes about 2 s
POOL = ipaddress.ip_network("10.250.0.0/16")  # one /30 per host, taken if no route overlaps it
LOCK = Path("/run/lock/tether-netns.lock")
NS_PREFIX = "tether"  # namespaces are tether-PID-N, their veths tnPIDrN (this side), tnPIDhN (the host's)
_NS_NAME = re.compile(rf"^{NS_PREFIX}-(\d+)-(\d+)$")
_counter = itertools.count()


class NetError(RuntimeError):
    """An `ip` or `tc` command failed; the message carries the command and its stderr."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False)
    if check and r.returncode != 0:
        raise NetError(f"{' '.join(argv)} -> exit {r.returncode}: {r.stderr.strip()}")
    return r


def unavailable() -> str | None:
    """Why namespaced hosts cannot be made here (the reason a test skips with), or None."""
    if os.geteuid() != 0:
        return f"network namespaces need root (ip netns add); running as uid {os.geteuid()}"
    missing = [t for t in ("ip", "tc", "ssh", "ssh-keygen") if shutil.which(t) is None]
    missing += [str(SSHD)] if not SSHD.exists() else []
    if missing:
        return f"missing {', '.join(missing)}"
    probe = f"{NS_PREFIX}-{os.getpid()}-probe"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"no network namespace can be made here (ip netns add: {r.stderr.strip()})"
    _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One namespaced host; `alias` names it in the Net's ssh config."""

    alias: str
    ns: str
    dev: str  # this side of the veth pair
    peer: str  # the host's side, inside ns
    addr: str
    server: SshServer | None = None
    relay: Relay | None = None

    def cut(self) -> None:
        """The link goes down at the host's end: nothing passes, nothing is refused either."""
        _run("ip", "-n", self.ns, "link", "set", self.peer, "down")

    def restore(self) -> None:
        _run("ip", "-n", self.ns, "link", "set", self.peer, "up")


@dataclass
class Net:
    hosts: list[Host]
    ssh_config: Path
    mechanism: str  # what made the delay and loss, said in the test's output

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """Environment for tether to reach the hosts by their aliases."""
        return {**base, "TETHER_SSH_CONFIG": str(self.ssh_config)}

    @property
    def stalls(self) -> int:
        """Chunks the relays held for loss so far (0 under netem, which counts its own)."""
        return sum(h.relay.stalls for h in self.hosts if h.relay is not None)


def _alive(pid: int) -> bool:
    """A zombie is dead: a killed process whose parent has not reaped it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _remove(ns: str, dev: str) -> None:
    """Everything still running in ns ends, then its link and the namespace go (the link first:
    deleting a namespace frees its links only later, in the kernel's own time)."""
    pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run("ip", "link", "del", dev, check=False)
    _run("ip", "netns", "del", ns, check=False)


def _sweep() -> None:
    """Namespaces of processes that died without their teardown (kill -9)."""
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        m = _NS_NAME.match(line.split()[0]) if line.split() else None
        if m and not _alive(int(m.group(1))):
            _remove(m.group(0), f"tn{m.group(1)}r{m.group(2)}")


def _taken() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this side has an address or a route in."""
    out: list[ipaddress.IPv4Network] = []
    for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        m = re.search(r"\binet (\S+)", line)
        if m:
            out.append(ipaddress.IPv4Interface(m.group(1)).network)
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        first = line.split()[1] if first in ("local", "broadcast", "unicast") and len(line.split()) > 1 else first
        with contextlib.suppress(ValueError):
            out.append(ipaddress.IPv4Network(first, strict=False))
    return out


def _free_subnet() -> ipaddress.IPv4Network:
    taken = _taken()
    for net in POOL.subnets(new_prefix=30):
        if not any(net.overlaps(t) for t in taken):
            assert isinstance(net, ipaddress.IPv4Network)
            return net
    raise NetError(f"no free /30 left in {POOL}")


def _shape(host: Host) -> tuple[bool, str]:
    """Delay, loss and rate on this side's end of the link: netem where the kernel has it, else
    the rate here and delay and loss in a relay. Returns whether netem took it, and what ran."""
    netem = _run(
        "tc", "qdisc", "add", "dev", host.dev, "root", "netem", "delay", f"{DELAY_MS}ms",
        "loss", f"{LOSS_PERCENT}%", "rate", RATE, check=False,
    )  # fmt: skip
    if netem.returncode == 0:
        return True, f"tc netem (delay {DELAY_MS} ms, loss {LOSS_PERCENT}%, rate {RATE})"
    _run("tc", "qdisc", "add", "dev", host.dev, "root", "tbf", "rate", RATE, "burst", "32kb", "latency", "400ms")
    return False, (
        f"user-space relay (delay {DELAY_MS} ms, {LOSS_PERCENT}% of 16 KB chunks stalled one RTO), "
        f"tc tbf rate {RATE}; sch_netem: {netem.stderr.strip() or 'refused'}"
    )


def _link(index: int) -> Host:
    """A namespace with a veth pair and a /30 to itself, made under the machine-wide lock."""
    k, pid = next(_counter), os.getpid()
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _sweep()
        net = _free_subnet()
        mine, theirs = (str(a) for a in net.hosts())
        host = Host(f"ns{index}", f"{NS_PREFIX}-{pid}-{k}", f"tn{pid}r{k}", f"tn{pid}h{k}", theirs)
        _run("ip", "netns", "add", host.ns)
        try:
            _run("ip", "link", "add", host.dev, "type", "veth", "peer", "name", host.peer, "netns", host.ns)
            _run("ip", "addr", "add", f"{mine}/30", "dev", host.dev)
        except NetError:
            _remove(host.ns, host.dev)
            raise
    _run("ip", "link", "set", host.dev, "up")
    _run("ip", "-n", host.ns, "addr", "add", f"{theirs}/30", "dev", host.peer)
    _run("ip", "-n", host.ns, "link", "set", host.peer, "up")
    _run("ip", "-n", host.ns, "link", "set", "lo", "up")
    # the host's hardware address known for good: a cut is silence, as beyond a router, not the
    # quick "no route to host" of a neighbour that stopped answering ARP
    mac = json.loads(_run("ip", "-n", host.ns, "-j", "link", "show", host.peer).stdout)[0]["address"]
    _run("ip", "neigh", "replace", theirs, "lladdr", mac, "dev", host.dev, "nud", "permanent")
    return host


def _config_block(host: Host, server: SshServer, known_hosts: Path) -> str:
    """The host's alias: through its relay when there is one, straight to its address if not."""
    name, port = ("127.0.0.1", host.relay.port) if host.relay else (host.addr, server.port)
    return (
        f"Host {host.alias}\n    HostName {name}\n    Port {port}\n    HostKeyAlias {host.alias}\n"
        f"    User {server.user}\n    IdentityFile {server.client_key}\n    IdentitiesOnly yes\n"
        f"    IdentityAgent none\n    BatchMode yes\n    StrictHostKeyChecking yes\n"
        f"    UserKnownHostsFile {known_hosts}\n    GlobalKnownHostsFile /dev/null\n    UpdateHostKeys no\n"
        f"    ConnectTimeout 10\n    LogLevel ERROR\n"
    )


@contextlib.contextmanager
def hosts(workdir: Path, count: int) -> Iterator[Net]:
    """`count` namespaced hosts, removed on the way out whatever happened."""
    made: list[Host] = []
    try:
        mechanisms = set()
        for i in range(count):
            host = _link(i)
            made.append(host)
            netem, mechanism = _shape(host)
            mechanisms.add(mechanism)
            host.server = SshServer.start(
                workdir / host.alias, fast_shell=True, host=host.addr, wrap=["ip", "netns", "exec", host.ns]
            )
            if not netem:
                host.relay = Relay((host.addr, host.server.port), delay=DELAY_MS / 1000, loss=LOSS_PERCENT / 100,
                                   seed=i)  # fmt: skip
        known = workdir / "known_hosts"
        lines = []
        for h in made:
            assert h.server is not None
            key = h.server.host_key.with_name(h.server.host_key.name + ".pub").read_text().split()
            lines.append(f"{h.alias} {key[0]} {key[1]}\n")
        known.write_text("".join(lines))
        config = workdir / "ssh_config"
        config.write_text("\n".join(_config_block(h, h.server, known) for h in made if h.server is not None))
        yield Net(made, config, "; ".join(sorted(mechanisms)))
    finally:
        for h in reversed(made):
            if h.relay is not None:
                h.relay.close()
            if h.server is not None:
                h.server.stop()
            _remove(h.ns, h.dev)
