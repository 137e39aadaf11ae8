"""serve: the status of every job over HTTP (a live page, JSON, Prometheus metrics)."""

from __future__ import annotations

import argparse
import signal
import stat
import sys
from pathlib import Path
from typing import Any

from tether.cli.common import number
from tether.dirs import Dirs
from tether.errors import EXIT_OK, UsageError


def add_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="serve the status of every job: a live page, /api/status, /metrics")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need a token)")
    s.add_argument(
        "--port", type=number(0, 65535, whole=True), default=8765, help="port (default 8765; 0 picks a free one)"
    )
    s.add_argument("--token-file", type=Path, metavar="FILE", help="file holding the token every request must carry")


def read_token(path: Path) -> str:
    """The token from its file (never from the command line, where `ps` shows it to everyone)."""
    try:
        text = path.read_text(errors="strict").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"--token-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--token-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise UsageError(f"--token-file {path}: the token must be one line of printable text without spaces")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"tether serve: warning: {path} can be read by others (chmod 600 it)", file=sys.stderr)
    return text


def cmd_serve(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.service.web import StatusServer, is_loopback

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: a port is 0 to 65535 (0 picks a free one)")
    token = read_token(args.token_file) if args.token_file else None
    if token is None and not is_loopback(args.host):
        raise UsageError(
            f"--host {args.host} is not a loopback address: serving it without a token would show every job to"
            " the network",
            "write a token into a file only you can read and pass --token-file FILE",
        )
    try:
        server = StatusServer(args.host, args.port, dirs, token)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host} port {args.port}: {e.strerror or e}") from None

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # leaves serve_forever in this thread; the finally closes the socket

    # SIGINT too, not left to Python's default: a shell starts a background command with SIGINT
    # ignored, and Python keeps an inherited ignore (as a running job does, Ctrl-C and kill -INT stop it)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(server.url(), flush=True)  # the first line: what scripts and tests read
    print(f"tether serve: status of jobs in {dirs.config / 'jobs'}; Ctrl-C stops", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("tether serve: stopped", flush=True)
    return EXIT_OK
