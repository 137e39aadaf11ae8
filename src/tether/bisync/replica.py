"""One side of a bisync: an endpoint with its agent (in-process for local, over ssh otherwise)."""

from __future__ import annotations

import marshal
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.agent_remote import to_bytes, to_wire
from tether.bisync.plan import Entry, Raw
from tether.endpoints import Endpoint, Local, Ssh
from tether.errors import TetherError
from tether.ssh import SshOptions
from tether.transport.agent import AgentClient, AgentDown, AgentError, Request

META = ".tether"
TRASH = f"{META}/trash"
BACKUPS = f"{META}/backups"
LOCK = f"{META}/lock"


def forked(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start fn() in a forked child; the returned function waits for its (marshal-able) result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, leave without running any of the parent's cleanup
        code = 0
        try:
            os.close(r)
            try:
                data = marshal.dumps((True, fn()))
            except BaseException as e:
                data = marshal.dumps((False, f"{type(e).__name__}: {e}"))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)

    def wait() -> Any:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        if not data:
            raise TetherError("the scan process died")
        ok, result = marshal.loads(data)
        if not ok:
            raise TetherError(f"scan failed: {result}")
        return result

    return wait


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

    def start_scan(self) -> Callable[[], tuple[dict[bytes, Raw], list[bytes]]]:
        """Begin scanning; the returned function waits for (entries by path, unreadable dirs).

        A local replica is walked in a forked child, a remote one by its agent, so both sides of
        a pair (and the state load) proceed at once instead of one after the other under the GIL.
        """
        if isinstance(self.endpoint, Local):
            ops = self.agent.ops  # type: ignore[attr-defined]
            return forked(lambda: ops.scan_raw(META.encode()))
        out: list[Any] = []

        def remote() -> None:
            try:
                res = self.call("scan", skip=META)
                ents: dict[bytes, Raw] = {}
                for r in res["entries"]:
                    lk = r[6]
                    ents[to_bytes(r[0])] = (r[1], r[2], r[3], r[4], r[5], None if lk is None else to_bytes(lk))
                out.append((ents, [to_bytes(u[0]) for u in res.get("unreadable", [])]))
            except BaseException as e:
                out.append(e)

        t = threading.Thread(target=remote, name=f"scan-{self.label}", daemon=True)
        t.start()

        def wait() -> tuple[dict[bytes, Raw], list[bytes]]:
            t.join()
            if isinstance(out[0], BaseException):
                raise out[0]
            return out[0]  # type: ignore[no-any-return]

        return wait

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
