"""The channels an alert goes out by. Each send either succeeds or raises SendError with one
line saying why; the caller decides about retries. Nothing here builds a shell command."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tether import __version__
from tether.alerts.config import Email
from tether.alerts.rules import Alert, Ping

TIMEOUT = 20.0
PING_PATH = {"start": "/start", "success": "", "fail": "/fail"}  # healthchecks.io's way


class SendError(Exception):
    pass


def email(e: Email, alert: Alert, timeout: float = TIMEOUT) -> None:
    import smtplib  # only a job that mails pays for it

    msg = EmailMessage()
    msg["Subject"] = f"[tether] {alert.subject}"
    msg["From"] = e.sender
    msg["To"] = ", ".join(e.to)
    msg["Date"] = formatdate(alert.at, localtime=True)
    msg["Message-ID"] = make_msgid("tether")
    msg["X-Tether-Alert"] = alert.kind
    msg["X-Tether-Job"] = alert.job
    msg.set_content(f"{alert.text}\n\n-- tether {__version__} on {socket.gethostname()}\n")
    ctx = ssl.create_default_context(cafile=str(e.ca_file) if e.ca_file else None)
    try:
        smtp: smtplib.SMTP
        if e.security == "tls":
            smtp = smtplib.SMTP_SSL(e.host, e.port, timeout=timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(e.host, e.port, timeout=timeout)
        with smtp:
            if e.security == "starttls":
                smtp.starttls(context=ctx)
            if e.user:
                password = e.password()
                if password is None:
                    raise SendError(f"no password: the environment variable {e.password_env} is not set")
                smtp.login(e.user, password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as err:
        raise SendError(str(err)) from None  # the caller names the channel


def _post(url: str, body: bytes | None, timeout: float) -> None:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("User-Agent", f"tether/{__version__}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        raise SendError(f"the server answered {err.code} {err.reason}") from None
    except (OSError, ValueError) as err:
        raise SendError(str(getattr(err, "reason", err))) from None


def webhook(url: str, alert: Alert, timeout: float = TIMEOUT) -> None:
    body = {"source": "tether", "host": socket.gethostname(), **alert.to_json()}
    _post(url, json.dumps(body).encode(), timeout)


def heartbeat(url: str, ping: Ping, timeout: float = TIMEOUT) -> None:
    _post(url.rstrip("/") + PING_PATH[ping.what], None, timeout)
