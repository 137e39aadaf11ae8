"""One side of a bisync: an endpoint with its agent (in-process for local, over ssh otherwise)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.agent_remote import to_bytes, to_wire
from tether.bisync.plan import Entry
from tether.endpoints import Endpoint, Local, Ssh
from tether.errors import TetherError
from tether.ssh import SshOptions
from tether.transport.agent import AgentClient, AgentDown, AgentError, Request

META = ".tether"
TRASH = f"{META}/trash"
BACKUPS = f"{META}/backups"
LOCK = f"{META}/lock"


def entry_of(row: Sequence[Any], link: bytes | None = None) -> Entry:
    """An Entry from the agent's [type, size, mtime_ns, mode, ino] form."""
    return Entry(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), link)


@dataclass
class Replica:
    label: str  # path1 / path2
    endpoint: Endpoint
    agent: AgentClient

    @classmethod
    def open(cls, label: str, endpoint: Endpoint, ssh: SshOptions, *, create: bool, python: str = "python3") -> Replica:
        try:
            if isinstance(endpoint, Ssh):
                agent = AgentClient.connect_ssh(ssh, endpoint.host, endpoint.path or ".", python, create=create)
            else:
                agent = AgentClient.local(endpoint.path, create=create)
        except AgentError as e:
            raise TetherError(
                f"{label} {endpoint} cannot be opened: {e}",
                "is the disk mounted and the path right? tether does not create a replica that vanished",
            ) from None
        return cls(label, endpoint, agent)

    @property
    def host(self) -> str:
        return str(self.agent.info.get("host") or "localhost")

    @property
    def root(self) -> str:
        return str(self.agent.info.get("root") or "")

    def __str__(self) -> str:
        return f"{self.label} ({self.endpoint})"

    def close(self) -> None:
        self.agent.close()

    def call(self, op: str, body: bytes = b"", **args: Any) -> dict[str, Any]:
        return self.agent.call(op, body, **args)

    def pipeline(self, requests: Sequence[Request]) -> list[dict[str, Any] | AgentError]:
        return self.agent.pipeline(requests)

    def scan(self) -> tuple[dict[bytes, Entry], list[bytes]]:
        res = self.call("scan", skip=META)
        out: dict[bytes, Entry] = {}
        for row in res["entries"]:
            out[to_bytes(row[0])] = Entry(
                row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]),
                to_bytes(row[6]) if row[6] is not None else None,
            )  # fmt: skip
        return out, [to_bytes(u[0]) for u in res.get("unreadable", [])]

    def rsync_root(self) -> str:
        """The replica root as rsync names it (a trailing slash: the contents)."""
        if isinstance(self.endpoint, Ssh):
            return f"{self.endpoint.host}:{self.root}/"
        assert isinstance(self.endpoint, Local)
        return self.root.rstrip("/") + "/"


def wire(path: bytes) -> str:
    return to_wire(path)


def shown(path: bytes) -> str:
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = ["BACKUPS", "LOCK", "META", "TRASH", "AgentDown", "AgentError", "Replica", "entry_of", "shown", "wire"]
