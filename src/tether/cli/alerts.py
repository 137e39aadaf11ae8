"""`tether alert test [NAME]`: one message through every channel a job (or alerts.toml) has,
so a broken mail setup is found on the day it is written, not on the day it is needed."""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from typing import Any

from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, UsageError


def add_parser(sub: Any) -> None:
    a = sub.add_parser("alert", help="alerts: send a test message through every channel")
    verbs = a.add_subparsers(dest="verb", metavar="VERB", required=True)
    t = verbs.add_parser("test", help="send a test alert by every configured email, webhook and heartbeat")
    t.add_argument("name", nargs="?", help="a job (its [alerts] beside alerts.toml); default: alerts.toml alone")
    t.add_argument("--json", action="store_true")


def cmd_alert(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.alerts.config import NONE, merged
    from tether.alerts.dispatch import deliver, tried
    from tether.alerts.rules import Alert, Ping

    own, job = NONE, args.name or "tether"
    if args.name:
        from tether.jobs import load_named

        own = load_named(dirs, args.name).alerts or NONE
    settings = merged(job, own, dirs.config)
    if not settings.any:
        raise UsageError(
            f"no alerts are set up{' for ' + args.name if args.name else ''}",
            f"add an [alerts] table to the job, or write {dirs.config / 'alerts.toml'}, e.g.\n"
            '  webhook = "https://example.com/hook"\n'
            '  email = { host = "smtp.example.com", to = ["me@example.com"] }',
        )
    alert = Alert("test", job, "", f"{job}: test alert", "This is a test of tether's alerts: if you read it, "
                  "this channel works.", time.time())  # fmt: skip
    results = deliver(settings, alert, retries=())
    from tether.alerts import send

    for url in settings.heartbeats:  # a success ping: the check on the other side turns green
        results.append((f"heartbeat {url}", tried(partial(send.heartbeat, url, Ping(job, "success")), ())))
    if args.json:
        print(json.dumps({"sent": [{"channel": c, "ok": w is None, "error": w} for c, w in results]}, indent=2))
    else:
        for channel, why in results:
            print(f"{'sent' if why is None else 'FAILED'}  {channel}" + (f": {why}" if why else ""))
    return EXIT_OK if all(w is None for _c, w in results) else EXIT_ERRORS
