"""A throwaway, unprivileged-config OpenSSH server on 127.0.0.1 for integration tests.

Why a real sshd: tether drives the system ``ssh``/``rsync`` binaries, so the only honest
test of quoting, host-key handling and auth failures is a real server.  Everything
(keys, config, known_hosts, logs, pid file) lives in one work directory, so parallel
xdist workers each get an isolated server and nothing touches ``~/.ssh``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 5.0

ALIAS = "tether-test"
ALIAS_UNKNOWN_HOSTKEY = "tether-unknownkey"
ALIAS_BAD_CLIENT_KEY = "tether-badkey"
ALIAS_DOWN = "tether-down"


class SshServerError(RuntimeError):
    """sshd failed to come up; the message carries its log so CI failures are debuggable."""


def _free_port() -> int:
    """Ask the kernel for a currently-unused port (racy, so start() retries on EADDRINUSE)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _descendants(pid: int) -> list[int]:
    """All processes below pid, read from /proc (children first found, then theirs)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _keygen(path: Path, comment: str) -> None:
    """Create an ed25519 key pair without passphrase (ssh-keygen refuses to overwrite)."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _openssh_version() -> tuple[int, int]:
    """Client version, used to switch off features newer servers add (e.g. penalties)."""
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _port_accepts(host: str, port: int) -> bool:
    """True once something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class SshServer:
    """A running sshd plus a client config with aliases for the success and failure cases."""

    alias: str = ALIAS

    def __init__(self, workdir: Path, host: str = "127.0.0.1", wrap: Sequence[str] = ()) -> None:
        """Lay out paths only; use :meth:`start` to actually get a server."""
        self.workdir = workdir
        self.host = host  # the address sshd listens on and the aliases connect to
        self.wrap = list(wrap)  # a command sshd runs under (`ip netns exec NS`: a host of its own)
        self.port = 0
        self.down_port = 0
        self.ssh_config = workdir / "ssh_config"
        self.sshd_config = workdir / "sshd_config"
        self.log_path = workdir / "sshd.log"
        self.pid_file = workdir / "sshd.pid"
        self.host_key = workdir / "host_ed25519"
        self.client_key = workdir / "client_ed25519"
        self.bad_client_key = workdir / "badclient_ed25519"
        self.authorized_keys = workdir / "authorized_keys"
        self.known_hosts = workdir / "known_hosts"
        self.empty_known_hosts = workdir / "empty_known_hosts"
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        workdir: Path,
        extra_config: Sequence[str] = (),
        *,
        fast_shell: bool = False,
        host: str = "127.0.0.1",
        wrap: Sequence[str] = (),
    ) -> SshServer:
        """Generate keys/configs in *workdir*, start sshd and wait until ``ssh true`` works.

        host and wrap: listen on another address, with sshd started under a command such as
        ``ip netns exec NS`` (tests/rig/netns.py: a host in a network namespace of its own).

        fast_shell: sessions get an empty HOME (sshd's SetEnv, which wins over the account's),
        so the login shell reads no rc file: a host whose shell starts in milliseconds, where
        this machine's root runs pyenv's init on every command (~0.1 s).
        """
        if not SSHD.exists():
            raise SshServerError(f"{SSHD} not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        if fast_shell:
            home = workdir / "home"
            home.mkdir(exist_ok=True)
            # sshd reads only the first SetEnv line: the caller's variables join this one
            setenv = [w for line in extra_config if line.startswith("SetEnv ") for w in line.split()[1:]]
            rest = [line for line in extra_config if not line.startswith("SetEnv ")]
            extra_config = [" ".join(["SetEnv", f"HOME={home}", *setenv]), *rest]
        server = cls(workdir, host, wrap)
        server._make_keys()
        # Free-port discovery is racy against other workers: retry on bind failure.
        last_error: SshServerError | None = None
        for _attempt in range(5):
            server.port = _free_port()
            server.down_port = _free_port()
            while server.down_port == server.port:
                server.down_port = _free_port()
            server._write_configs(extra_config)
            try:
                server._launch_and_wait()
                return server
            except SshServerError as e:
                server.stop()
                last_error = e
                if "Address already in use" not in str(e):
                    raise
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """SIGTERM sshd, wait, SIGKILL if needed; safe to call any number of times."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Connections live in forked children, some in sessions of their own: end them all, so
        # that a stopped server is a real outage for clients that were connected.
        for pid in _descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_DEADLINE_S)

    def restart(self) -> None:
        """Start again on the same port with the same keys, after stop() (an outage ends)."""
        self._launch_and_wait()

    def __enter__(self) -> Self:
        """Context-manager form so ad-hoc servers cannot leak."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Always stop the server."""
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the sshd child is still alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the listening sshd, for tests that want to kill it mid-transfer."""
        return self._proc.pid if self._proc is not None else None

    # ------------------------------------------------------------------ client helpers

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for running tether against this server (tether reads TETHER_SSH_CONFIG)."""
        env = dict(os.environ if base is None else base)
        env["TETHER_SSH_CONFIG"] = str(self.ssh_config)
        return env

    def ssh_argv(self, alias: str | None = None, *command: str) -> list[str]:
        """argv for running ``ssh`` with the rig's client config (handy for assertions)."""
        return ["ssh", "-F", str(self.ssh_config), alias or self.alias, *command]

    def run_ssh(
        self, *command: str, alias: str | None = None, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a remote command through the client config; never raises on failure."""
        return subprocess.run(
            self.ssh_argv(alias, *command),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def log(self) -> str:
        """sshd's stderr so far (LogLevel ERROR, so usually empty)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ internals

    def _make_keys(self) -> None:
        """Host key, authorized client key, and a second client key that is never authorized."""
        _keygen(self.host_key, "tether-test-host")
        _keygen(self.client_key, "tether-test-client")
        _keygen(self.bad_client_key, "tether-test-unauthorized")
        pub = self.client_key.with_name(self.client_key.name + ".pub").read_text()
        self.authorized_keys.write_text(pub)
        self.authorized_keys.chmod(0o600)
        self.empty_known_hosts.write_text("")

    def _write_configs(self, extra_config: Sequence[str]) -> None:
        """sshd_config, known_hosts for the current port, and the client ssh_config."""
        server_lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "Subsystem sftp internal-sftp",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LogLevel ERROR",
        ]
        if _openssh_version() >= (9, 8):
            # Newer sshd throttles sources that fail auth, which the badkey tests do on purpose.
            server_lines.append("PerSourcePenalties no")
        server_lines.extend(extra_config)
        self.sshd_config.write_text("\n".join(server_lines) + "\n")

        host_pub = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")

        def block(alias: str, port: int, key: Path, known_hosts: Path) -> str:
            return (
                f"Host {alias}\n"
                f"    HostName {self.host}\n"
                f"    Port {port}\n"
                f"    User {self.user}\n"
                f"    IdentityFile {key}\n"
                f"    IdentitiesOnly yes\n"
                f"    IdentityAgent none\n"
                f"    PreferredAuthentications publickey\n"
                f"    BatchMode yes\n"
                f"    StrictHostKeyChecking yes\n"
                f"    UserKnownHostsFile {known_hosts}\n"
                f"    GlobalKnownHostsFile /dev/null\n"
                f"    UpdateHostKeys no\n"
                f"    ConnectTimeout 10\n"
                f"    ControlMaster no\n"
                f"    LogLevel ERROR\n"
            )

        self.ssh_config.write_text(
            "\n".join(
                [
                    block(ALIAS, self.port, self.client_key, self.known_hosts),
                    block(ALIAS_UNKNOWN_HOSTKEY, self.port, self.client_key, self.empty_known_hosts),
                    block(ALIAS_BAD_CLIENT_KEY, self.port, self.bad_client_key, self.known_hosts),
                    block(ALIAS_DOWN, self.down_port, self.client_key, self.known_hosts),
                ]
            )
        )

    def _launch_and_wait(self) -> None:
        """Start ``sshd -D -e`` and poll (TCP, then a real ssh round trip) until ready."""
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        if shutil.which("ssh") is None:
            raise SshServerError("ssh client not installed")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*self.wrap, str(SSHD), "-D", "-e", "-f", str(self.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SshServerError(f"sshd exited with {self._proc.returncode} on port {self.port}:\n{self.log()}")
            if _port_accepts(self.host, self.port):
                remaining = max(1.0, deadline - time.monotonic())
                try:
                    r = self.run_ssh("true", timeout=remaining)
                except subprocess.TimeoutExpired:
                    last = "ssh true timed out"
                    continue
                if r.returncode == 0:
                    return
                last = f"ssh true -> {r.returncode}: {r.stderr.strip()}"
            time.sleep(0.05)  # poll interval, not a timing assumption
        raise SshServerError(
            f"sshd on port {self.port} not usable within {START_DEADLINE_S}s ({last}); log:\n{self.log()}"
        )


def start_sshd(workdir: Path, extra_config: Sequence[str] = (), *, fast_shell: bool = False) -> SshServer:
    """Function form of :meth:`SshServer.start`."""
    return SshServer.start(workdir, extra_config, fast_shell=fast_shell)
