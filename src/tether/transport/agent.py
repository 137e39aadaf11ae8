"""Client of the remote agent: one persistent channel for small files and metadata operations.

Why: starting a command over ssh costs ~100+ ms here, a round trip on an open channel well
under a millisecond.  `connect_ssh` sends the agent program on ssh's stdin behind a fixed
bootstrap, so the remote command line holds only the python name and that bootstrap: no path,
no user data, nothing for a shell to interpret.  `local` runs the same `Ops`
in-process, so the mirror engine drives local and ssh targets through one interface.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shlex
import subprocess
import threading
import time
import zlib
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any, Self

from tether import agent_remote
from tether.agent_remote import PROTOCOL_VERSION, OpError, Ops, dispatch, encode_frame, read_frame
from tether.errors import TetherError
from tether.ssh import SshOptions, explain_ssh_failure

# Reads a 4-byte length and that many bytes of zlib-compressed program from stdin and runs it;
# the rest of stdin then carries the messages.  The length travels on stdin, not in the command
# line, so ssh is started before the program is packed and the two overlap.  The program comes
# twice: compiled (marshal) for the Python that compiled it, which the far side runs when its
# version matches (no compile, ~15 ms less per connection), and as source for any other
# version.  No single quote, `$`, `!` or backslash, so any login shell passes it as is.
BOOTSTRAP = (
    'import sys,zlib,marshal;r=sys.stdin.buffer.read;p=zlib.decompress(r(int.from_bytes(r(4),"big")));'
    'n=int.from_bytes(p[2:6],"big")+6;'
    'exec(marshal.loads(p[6:n]) if p[:2]==bytes(sys.version_info[:2]) else compile(p[n:],"tether-agent","exec"))'
)
_PYTHON_NAME = re.compile(r"[A-Za-z0-9_.+/-]+")
_MAX_JUNK = 1 << 20  # bytes of shell start-up noise tolerated before the agent's MAGIC line
_STDERR_KEEP = 64 << 10
# Above this many requests or bytes, write from a thread while reading replies: otherwise a
# big batch could fill both pipes (agent blocked on a reply, we on a request) and hang.
_THREADED_PIPELINE = 32
_DIRECT_WRITE_BYTES = 256 << 10
_CLOSE_TIMEOUT = 5.0

Request = tuple[str, dict[str, Any], bytes]


class AgentError(TetherError):
    """One operation failed on the far side (the agent carries on); errno as the far side saw it."""

    def __init__(self, message: str, errno: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.errno = errno


class AgentDown(TetherError):
    """The channel is gone (ssh failed, agent died): nothing more can be sent on this client."""


def remote_command(python: str, code: str = BOOTSTRAP) -> str:
    """The far side's command line: python and the fixed bootstrap (or, for `tether doctor`, other
    fixed code), the same for every connection.

    `auto` (the default) prefers the system's /usr/bin/python3 and falls back to `python3` on
    PATH, as interpreter discovery in other tools does: the agent needs only the standard
    library, and a version manager's shim on PATH (pyenv) costs ~60 ms per connection.  Only
    `test`, `exec`, `&&` and `||`, which POSIX shells, fish and csh all read alike.
    """
    tail = f"-S -c {shlex.quote(code)}"
    if python == "auto":
        return f"test -x /usr/bin/python3 && exec /usr/bin/python3 {tail} || exec python3 {tail}"
    return f"exec {python} {tail}"


def _agent_code() -> Any:
    """The agent's code object, from the byte-code cache the import of agent_remote already
    validated (compiling it again costs ~10 ms), named `tether-agent` as a compile here would."""
    loader = getattr(agent_remote, "__loader__", None)
    code = None
    with contextlib.suppress(Exception):  # no loader with get_code (frozen, odd importers): compile
        code = loader.get_code(agent_remote.__name__)  # type: ignore[union-attr]
    if code is None:
        return compile(_agent_source(), "tether-agent", "exec")

    def renamed(c: Any) -> Any:
        consts = tuple(renamed(k) if isinstance(k, type(c)) else k for k in c.co_consts)
        return c.replace(co_filename="tether-agent", co_consts=consts)

    return renamed(code)


def _agent_source() -> bytes:
    loader = getattr(agent_remote, "__loader__", None)
    if loader is not None and hasattr(loader, "get_data"):
        return bytes(loader.get_data(agent_remote.__file__))
    with open(agent_remote.__file__, "rb") as f:
        return f.read()


def _payload() -> bytes:
    """What follows the bootstrap: its length, then (compressed) this Python's version, the
    compiled agent, its source.  zlib level 1: a third of level 6's time, 10% more bytes."""
    global _PAYLOAD
    if _PAYLOAD is None:
        import marshal
        import sys

        code = marshal.dumps(_agent_code())
        version = bytes(sys.version_info[:2])
        packed = zlib.compress(version + len(code).to_bytes(4, "big") + code + _agent_source(), 1)
        _PAYLOAD = len(packed).to_bytes(4, "big") + packed
    return _PAYLOAD


_PAYLOAD: bytes | None = None
_SPARES: dict[tuple[SshOptions, str, str], list[_SshAgent]] = {}  # prestarted, by (ssh, host, python)
_SPARE_LOCK = threading.Lock()


def drop_prestarted() -> None:
    """Close the prestarted agents nobody took."""
    with _SPARE_LOCK:
        spares = [a for group in _SPARES.values() for a in group]
        _SPARES.clear()
    for a in spares:
        a.close()


class AgentClient:
    """One interface to an agent: `call` one operation, `pipeline` many in one round trip.

    Results are the operation's reply object (JSON types; paths as surrogateescaped str).
    Thread-safe: one lock serialises each call or pipeline.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.info: dict[str, Any] = {}  # the hello reply: version, pid, host, root
        self.connect_seconds = 0.0
        self._lock = threading.Lock()
        self._next_id = 0

    @classmethod
    def connect_ssh(
        cls, ssh: SshOptions, host: str, root: str, python: str = "auto", create: bool = False
    ) -> AgentClient:
        """Start the agent on host over ssh (or take one `prestart_ssh` started) and shake
        hands; AgentDown with the cause if ssh fails."""
        return _SshAgent.start(ssh, host, root, python, create)

    @classmethod
    def prestart_ssh(cls, ssh: SshOptions, host: str, python: str = "auto") -> None:
        """Start ssh and send the agent program now, without a hello: the far side's start-up
        (ssh's channel, a login shell, a Python: 30 ms and more) then overlaps whatever this
        process does before its `connect_ssh` to the same host, which takes this agent.  It
        touches nothing on the far side until that hello names a root; one never taken ends
        with this process (its ssh sees stdin close) or at `drop_prestarted`."""
        agent = _SshAgent.spawn(ssh, host, python)
        with _SPARE_LOCK:
            _SPARES.setdefault((ssh, host, python), []).append(agent)

    @classmethod
    def local(cls, root: str, create: bool = False) -> AgentClient:
        """The same operations in this process, for local targets."""
        return _LocalAgent(root, create)

    def call(self, op: str, body: bytes = b"", **args: Any) -> dict[str, Any]:
        """One operation; AgentError if it failed on the far side."""
        (reply,) = self.pipeline([(op, args, body)])
        if isinstance(reply, AgentError):
            raise reply
        return reply

    def pipeline(self, requests: Sequence[Request]) -> list[dict[str, Any] | AgentError]:
        """Send all requests, then read all replies: a batch costs one round trip.

        Requests run in order; a failed one does not stop the rest.  Per-request failures
        come back as AgentError values, a dead channel raises AgentDown.
        """
        if not requests:
            return []
        with self._lock:
            try:
                replies = self._exchange(requests)
            except (AgentDown, AgentError):
                raise
            except BaseException:
                self._abandon()  # interrupted half-way: replies could no longer be matched to requests
                raise
        return [self._outcome(r) for r in replies]

    @property
    def down(self) -> bool:
        """The channel is gone: only a new connection helps (an in-process agent never goes)."""
        return False

    def close(self) -> None:
        """Release the channel; safe to call twice."""

    def close_soon(self) -> None:
        """Release the channel without waiting for the far side to finish: for a process about
        to end, whose agents' locks were released already."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _exchange(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _abandon(self) -> None:
        """Stop using a channel whose requests and replies may be out of step."""

    def _outcome(self, reply: dict[str, Any]) -> dict[str, Any] | AgentError:
        if reply.get("ok"):
            result: dict[str, Any] = reply.get("result") or {}
            if "_body" in reply:  # file content, sent beside the JSON
                result["data"] = reply["_body"]
            return result
        return AgentError(f"{self.name}: {reply.get('error', 'unknown agent error')}", reply.get("errno"))


class _LocalAgent(AgentClient):
    """Ops in-process through the same dispatch as the far side, so replies are identical."""

    def __init__(self, root: str, create: bool) -> None:
        super().__init__(root)
        start = time.perf_counter()
        try:
            self._ops = Ops(root, create=create)
        except OpError as e:
            raise AgentError(e.message, e.errno) from None
        self.info = self._ops.hello(PROTOCOL_VERSION)
        self.ops = self._ops  # direct access for work that must not go through messages (a forked scan)
        self.connect_seconds = time.perf_counter() - start

    def _exchange(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        return [dispatch(self._ops, op, args, body) for op, args, body in requests]

    def close(self) -> None:
        with self._lock:
            self._ops.close()


class _SshAgent(AgentClient):
    """The agent as `ssh HOST [exec] python3 -S -c BOOTSTRAP`, messages on its stdin/stdout."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, python: str) -> None:
        super().__init__(host)
        self.host = host
        self.python = "python3" if python == "auto" else python
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._stdin: IO[bytes] = proc.stdin
        self._stdout: IO[bytes] = proc.stdout
        self._stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(proc.stderr,), name=f"agent-stderr-{host}", daemon=True
        )
        self._stderr_thread.start()
        self._down: AgentDown | None = None
        self._started = time.perf_counter()

    @classmethod
    def start(cls, ssh: SshOptions, host: str, root: str, python: str, create: bool) -> _SshAgent:
        with _SPARE_LOCK:
            spares = _SPARES.get((ssh, host, python))
            agent = spares.pop(0) if spares else None
        if agent is None:
            agent = cls.spawn(ssh, host, python)
        try:
            agent._hello(root, create)
        except BaseException:
            agent.close()
            raise
        return agent

    @classmethod
    def spawn(cls, ssh: SshOptions, host: str, python: str) -> _SshAgent:
        """ssh running the bootstrap, the agent program sent: all but the hello."""
        if python != "auto" and not _PYTHON_NAME.fullmatch(python):
            raise AgentError(f"python {python!r} for {host}: only a program name or path is allowed")
        if not host or host.startswith("-"):
            raise AgentError(f"bad ssh host {host!r}")
        # -S: no site-packages to import (the agent is stdlib only), ~35 ms less per connection
        proc = subprocess.Popen(
            [*ssh.argv(), "--", host, remote_command(python)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        agent = cls(proc, host, python)
        try:
            agent._send(_payload())  # packed while ssh connects
        except BaseException:
            agent.close()
            raise
        return agent

    def _send(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except OSError:
            raise self._went_down("while sending the agent") from None

    def _hello(self, root: str, create: bool) -> None:
        """Name the root, read the greeting and the hello's reply."""
        args = {"version": PROTOCOL_VERSION, "root": root, "create": create, **agent_remote.crash_arming()}
        self._send(encode_frame({"id": 0, "op": "hello", "args": args}))
        junk = 0
        while True:
            line = self._stdout.readline(_MAX_JUNK)
            if not line:
                raise self._went_down("before it started")
            if line.endswith(agent_remote.MAGIC):
                break
            junk += len(line)
            if junk > _MAX_JUNK:
                raise self._went_down("no agent greeting: the remote shell printed too much")
        reply = self._read_reply("during the handshake")
        if not reply.get("ok"):
            raise AgentError(f"{self.host}: {reply.get('error')}", reply.get("errno"))
        self.info = reply.get("result") or {}
        if self.info.get("version") != PROTOCOL_VERSION:
            raise AgentError(f"{self.host}: agent speaks protocol {self.info.get('version')}, not {PROTOCOL_VERSION}")
        self._next_id = 1
        self.connect_seconds = time.perf_counter() - self._started

    def _read_reply(self, when: str) -> dict[str, Any]:
        """The next reply header; a broken or closed stream marks the connection down."""
        try:
            frame = read_frame(self._stdout)
        except (OSError, EOFError, ValueError):
            frame = None
        if frame is None:
            raise self._went_down(when)
        reply: dict[str, Any] = frame[0]
        if frame[1] or reply.pop("body", False):
            reply["_body"] = frame[1]
        return reply

    def _exchange(self, requests: Sequence[Request]) -> list[dict[str, Any]]:
        if self._down is not None:
            raise self._down
        first = self._next_id
        self._next_id += len(requests)
        frames = [
            encode_frame({"id": first + i, "op": op, "args": args}, body) for i, (op, args, body) in enumerate(requests)
        ]
        writer: threading.Thread | None = None
        write_error: list[BaseException] = []
        if len(frames) <= _THREADED_PIPELINE and sum(map(len, frames)) <= _DIRECT_WRITE_BYTES:
            try:
                self._write(frames)
            except OSError:
                raise self._went_down("while sending") from None
        else:  # a long batch: keep reading replies while writing, or both pipes could fill up

            def write_all() -> None:
                try:
                    self._write(frames)
                except BaseException as e:
                    write_error.append(e)

            writer = threading.Thread(target=write_all, name=f"agent-writer-{self.host}", daemon=True)
            writer.start()
        replies: list[dict[str, Any]] = []
        try:
            for i in range(len(frames)):
                reply = self._read_reply("while waiting for a reply")
                if reply.get("id") != first + i:
                    raise self._went_down(f"reply {reply.get('id')} out of order (expected {first + i})")
                replies.append(reply)
        finally:
            if writer is not None:
                writer.join()
        if write_error:
            raise self._went_down("while sending")
        return replies

    def _write(self, frames: list[bytes]) -> None:
        for f in frames:
            self._stdin.write(f)
        self._stdin.flush()

    def _abandon(self) -> None:
        if self._down is None:
            self._down = AgentDown(f"agent on {self.host}: interrupted in the middle of a request", "reconnect")
        self._proc.kill()

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        """Keep the last bytes of ssh's (and the agent's) stderr, to explain a failure."""
        while True:
            chunk = stream.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                return
            self._stderr_tail.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > _STDERR_KEEP and len(self._stderr_tail) > 1:
                self._stderr_size -= len(self._stderr_tail.popleft())

    def stderr_text(self) -> str:
        """What ssh and the agent wrote to stderr so far (the last 64 KB)."""
        return b"".join(self._stderr_tail).decode("utf-8", "replace")

    def _went_down(self, when: str) -> AgentDown:
        """Mark the channel dead and explain why, from ssh's exit status and stderr."""
        try:
            rc = self._proc.wait(timeout=_CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait()
        self._stderr_thread.join(timeout=2.0)
        err = self.stderr_text()
        explained = explain_ssh_failure(self.host, err)
        if explained is not None:
            cause, hint = explained
            down = AgentDown(f"agent on {cause}", hint)
        elif rc == 127 or re.search(rf"{re.escape(self.python)}: (?:command )?not found|No such file", err):
            down = AgentDown(
                f"agent on {self.host}: {self.python} is not installed there",
                "install Python 3.8 or newer on the remote host, or name another interpreter for the job",
            )
        else:
            last = err.strip().splitlines()[-3:]
            detail = ("; ".join(last)) if last else "no message"
            down = AgentDown(
                f"agent on {self.host} stopped {when} (ssh exit {rc}): {detail}",
                "the next run will reconnect; check the remote host's logs if it keeps happening",
            )
        self._down = down
        return down

    @property
    def down(self) -> bool:
        return self._down is not None

    def close(self) -> None:
        """Close stdin (the agent exits at EOF), wait a little, kill if it does not."""
        self._close(wait=True)

    def close_soon(self) -> None:
        """Close stdin and leave the rest (the agent's exit, ssh's, reaping) to a background
        thread: ~10 ms less at the end of a one-shot command, which exits without it."""
        self._close(wait=False)

    def _close(self, wait: bool) -> None:
        if not self._lock.acquire(timeout=_CLOSE_TIMEOUT):
            self._proc.kill()  # a call is stuck on a silent peer: this makes it fail with AgentDown
            self._lock.acquire()
        try:
            if self._down is None:
                self._down = AgentDown(f"agent on {self.host}: connection closed")
            with contextlib.suppress(OSError):
                self._stdin.close()
            if wait:
                self._reap()
            else:
                threading.Thread(target=self._reap, name=f"agent-reap-{self.host}", daemon=True).start()
        finally:
            self._lock.release()

    def _reap(self) -> None:
        try:
            self._proc.wait(timeout=_CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr_thread.join(timeout=2.0)
        self._stdout.close()
        if not self._stderr_thread.is_alive() and self._proc.stderr is not None:
            self._proc.stderr.close()
