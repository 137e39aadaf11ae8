"""`tether serve`: the overview over HTTP, for a person (a page that updates itself), a program
(JSON) and Prometheus (metrics), from the standard library's threading HTTP server.

Loopback by default. Any other address needs a token, and with a token every request must
carry it (`Authorization: Bearer T`; the page may take it as `?token=T`, a link a person can
open, and sends it on as the header). The server only reads: the same files `tether status`
reads, so it can run beside jobs, start before them and outlive them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tether.dirs import Dirs
from tether.errors import UsageError
from tether.service.metrics import exposition
from tether.service.overview import Gatherer, JobView, to_json
from tether.service.page import PAGE
from tether.watchlimit import max_user_watches


def is_loopback(host: str) -> bool:
    """Every address the name stands for is a loopback one (a name that resolves elsewhere too
    would expose the server)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise UsageError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    return all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


class Overview:
    """One gatherer shared by the request threads: the event streams are followed once, and the
    live rate's samples come from every look."""

    def __init__(self, dirs: Dirs) -> None:
        self._gatherer = Gatherer(dirs, live_rates=True)
        self._lock = threading.Lock()

    def views(self) -> list[JobView]:
        with self._lock:
            return self._gatherer.gather()


class Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "tether"
    sys_version = ""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        route = url.path
        if route not in ("/", "/api/status", "/metrics"):
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
            return
        if not self._authorized(route, url.query):
            self._send(401, "text/plain; charset=utf-8", b"a token is needed: Authorization: Bearer TOKEN\n",
                       {"WWW-Authenticate": 'Bearer realm="tether"'})  # fmt: skip
            return
        if route == "/":
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
            return
        views = self.server.overview.views()
        if route == "/api/status":
            doc = {"at": time.time(), "jobs": [to_json(v) for v in views]}
            self._send(200, "application/json", json.dumps(doc).encode())
        else:
            body = exposition(views, max_user_watches()).encode()
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", body)

    def _authorized(self, route: str, query: str) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            return True
        if route == "/":  # a link a person opens; the page then sends the header
            for t in urllib.parse.parse_qs(query).get("token", []):
                if hmac.compare_digest(t.encode(), token.encode()):
                    return True
        return False

    def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a poll every half second is not worth a line


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True  # a page left open never holds up the stop

    def __init__(self, host: str, port: int, dirs: Dirs, token: str | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.token = token
        self.overview = Overview(dirs)
        super().__init__((host, port), Handler)

    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"
