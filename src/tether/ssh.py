"""How tether runs ssh: no prompts, one shared connection per host, the user's host keys.

Host-key checking is never turned off here: an unknown key is an error telling the user
how to accept it. TETHER_SSH_CONFIG (or a job's `ssh_config`) selects another ssh config
file, as `ssh -F` would; otherwise ssh reads ~/.ssh/config and honours its aliases.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from tether.dirs import Dirs


class SshOptions(NamedTuple):
    socket_dir: str
    config_file: str | None = None
    connect_timeout: int = 10

    @classmethod
    def from_env(cls, dirs: Dirs, env: dict[str, str] | None = None) -> SshOptions:
        env = dict(os.environ) if env is None else env
        return cls(str(dirs.ssh_socket_dir()), env.get("TETHER_SSH_CONFIG") or None)

    def argv(self) -> list[str]:
        """ssh and its options, as an argument list."""
        args = ["ssh"]
        if self.config_file:
            args += ["-F", self.config_file]
        args += [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self.socket_dir}/%C",
            "-o", "ControlPersist=60",
            "-o", "ServerAliveInterval=15",
        ]  # fmt: skip
        return args

    def rsync_rsh(self) -> str:
        """The same command as one string for rsync's `-e`.

        rsync splits `-e` on spaces and honours single quotes, so each argument is
        single-quoted; an argument holding a quote itself cannot be passed this way.
        """
        parts = []
        for a in self.argv():
            if "'" in a:
                raise ValueError(f"cannot pass {a!r} to rsync -e: it contains a single quote")
            parts.append(f"'{a}'" if (" " in a or not a) else a)
        return " ".join(parts)


_CAUSES: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(r"Could not resolve hostname|Name or service not known|nodename nor servname"),
        "unknown host: the name does not resolve",
        "check the name, or add a Host entry for it to ~/.ssh/config",
    ),
    (
        re.compile(r"Host key verification failed|No \S+ host key is known|REMOTE HOST IDENTIFICATION"),
        "its host key is not in your known_hosts (or has changed)",
        "connect once by hand with `ssh {host}` to check and accept the key; tether never skips host-key checking",
    ),
    (
        re.compile(r"Permission denied \(|Too many authentication failures"),
        "the server refused the key (permission denied)",
        "check that your public key is in the remote ~/.ssh/authorized_keys; a job never asks for a password",
    ),
    (
        re.compile(r"Connection refused"),
        "connection refused (no ssh server listening)",
        "check the host and port, and that sshd runs there",
    ),
    (
        re.compile(r"Connection timed out|timed out during banner|No route to host|Network is unreachable"),
        "host unreachable (timed out or no route)",
        "check the network and the host name",
    ),
    (
        re.compile(r"rsync: (?:command )?not found|rsync: No such file or directory|exec request failed"),
        "rsync is not installed on the remote host",
        "install rsync there (e.g. `apt-get install rsync`)",
    ),
    (
        re.compile(r"Connection closed by|Connection reset by|Broken pipe|connection unexpectedly closed"),
        "the connection was closed",
        "check the server's logs; the next run will retry",
    ),
]


def explain_ssh_failure(host: str, stderr: str) -> tuple[str, str] | None:
    """Map ssh/rsync stderr to a one-line cause and a hint, or None if not an ssh problem."""
    for pattern, cause, hint in _CAUSES:
        if pattern.search(stderr):
            return f"{host}: {cause}", hint.format(host=host)
    return None
