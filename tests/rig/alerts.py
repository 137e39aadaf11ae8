"""Real receivers for alert tests: an SMTP server (aiosmtpd) and an HTTP server, on 127.0.0.1,
each keeping what it was sent."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def self_signed(where: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl: the client trusts it by ca_file."""
    cert, key = where / "smtp.crt", where / "smtp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.logins: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m["Subject"]) for m in self.messages]


@contextmanager
def smtp_server(
    security: str = "none", cert: tuple[Path, Path] | None = None, login: tuple[str, str] | None = None
) -> Iterator[tuple[int, Mailbox]]:
    """security "starttls" (required before anything else) or "tls" (TLS from the first byte),
    with `cert` (certificate, key); `login` (user, password): AUTH required, over TLS only."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox()
    port = free_port()
    kw: dict[str, Any] = {}
    if cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*cert)
        kw = {"tls_context": ctx, "require_starttls": True} if security == "starttls" else {"ssl_context": ctx}
    if login is not None:

        def check(_server: Any, session: Any, _env: Any, _mech: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == login
            if ok:
                box.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)  # handled=True: no reply would be sent

        # aiosmtpd counts only STARTTLS as TLS for AUTH (a "tls" server is TLS from the first byte)
        kw |= {"authenticator": check, "auth_required": True, "auth_require_tls": security == "starttls"}
    ctl = Controller(box, hostname="127.0.0.1", port=port, **kw)
    ctl.start()
    try:
        yield port, box
    finally:
        ctl.stop()


class Hits:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, Any]] = []  # method, path, JSON body or None
        self.lock = threading.Lock()

    def posts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [b for m, _p, b in self.got if m == "POST" and b is not None]

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _m, p, _b in self.got]


@contextmanager
def http_server() -> Iterator[tuple[str, Hits]]:
    hits = Hits()

    class Handler(BaseHTTPRequestHandler):
        def _take(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            with hits.lock:
                hits.got.append((self.command, self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_HEAD = _take

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
