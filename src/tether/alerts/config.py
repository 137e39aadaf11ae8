"""Alert settings, read from a job's `[alerts]` table or from `alerts.toml` (every job's).

    [alerts]
    email = { host = "smtp.example.com", user = "me", password_file = "~/.config/tether/smtp.pass",
              to = ["admin@example.com"] }
    webhook = "https://hooks.example.com/tether"
    heartbeat = "https://hc-ping.com/<uuid>"
    down_after = 60         # seconds a target must stay unreachable before anyone is told
    min_free = "1G"         # tell when a target has less free space than this

A password is never kept in these files (they are read by more people and more backups than a
secret should be): `password_file` names a file holding it, `password_env` an environment
variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from tether.errors import ConfigError
from tether.schema import did_you_mean, is_int, is_num, is_str, is_str_list, parse_size, read_toml

SECRET_KEYS = ("password", "passwd", "pass", "smtp_password", "secret")
SECURITY = ("starttls", "tls", "none")
DEFAULT_PORT = {"starttls": 587, "tls": 465, "none": 25}


class Email(NamedTuple):
    host: str
    port: int
    security: str  # starttls, tls or none
    to: tuple[str, ...]
    sender: str
    user: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_file: Path | None = None  # a private CA's certificate, for a server it signed

    def password(self) -> str | None:
        """Read when a message is sent, not when the job starts: a rotated password is used at once."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None

    def __str__(self) -> str:
        return f"email to {', '.join(self.to)} via {self.host}:{self.port}"


class Settings(NamedTuple):
    emails: tuple[Email, ...] = ()
    webhooks: tuple[str, ...] = ()
    heartbeats: tuple[str, ...] = ()
    down_after: float = 60.0
    min_free: int | None = None  # bytes
    repeat_after: float = 3600.0  # the same alert (job, target, kind) again at most this often
    max_per_hour: int = 30  # per job: more than this are held back and counted in the next

    @property
    def any(self) -> bool:
        return bool(self.emails or self.webhooks or self.heartbeats)


NONE = Settings()
EMAIL_EXAMPLE = 'write email = { host = "smtp.example.com", to = ["me@example.com"] }'
KEYS = ("email", "webhook", "heartbeat", "down_after", "min_free", "repeat_after", "max_per_hour")
EMAIL_KEYS = ("host", "port", "security", "to", "from", "user", "password_file", "password_env", "ca_file")


def line_of(text: str, key: str) -> int | None:
    """The first line setting `key` anywhere in a file (a table's key, an inline table's key):
    schema.key_line finds top-level keys only."""
    rx = re.compile(rf"(?:^|[{{,\s])[\"']?{re.escape(key)}[\"']?\s*=")
    for no, ln in enumerate(text.splitlines(), 1):
        if rx.search(ln.split("#", 1)[0]):
            return no
    return None


def find_secret(data: Any, where: str = "") -> str | None:
    """The dotted name of a key holding a password in clear, or None."""
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{where}.{k}" if where else k
            if k.lower() in SECRET_KEYS and isinstance(v, str):
                return name
            found = find_secret(v, name)
            if found:
                return found
    elif isinstance(data, list):
        for v in data:
            found = find_secret(v, where)
            if found:
                return found
    return None


def refuse_secrets(file: Path, text: str, data: dict[str, Any]) -> None:
    """A password written in a job or alerts file is refused, with where it belongs instead."""
    name = find_secret(data)
    if name is None:
        return
    key = name.rsplit(".", 1)[-1]
    line = line_of(text, key)
    raise ConfigError(
        f"{file}:{line or 1}: {name} holds a password in clear text; tether does not read passwords from its "
        "config files (they are copied, backed up and shown far more than a secret should be)",
        "put the password alone in a file only you can read (chmod 600 ~/.config/tether/smtp.pass) and write "
        'password_file = "~/.config/tether/smtp.pass" instead, or set an environment variable and write '
        'password_env = "TETHER_SMTP_PASSWORD"',
    )


class _Reader:
    """Checks one table of settings, every error naming file:line and what to write."""

    def __init__(self, file: Path, text: str, table: str) -> None:
        self.file, self.text, self.table = file, text, table

    def error(self, key: str, message: str, hint: str) -> ConfigError:
        line = line_of(self.text, key)
        where = f"{self.file}:{line}" if line else str(self.file)
        return ConfigError(f"{where}: {self.table}{key}: {message}", hint)

    def settings(self, data: dict[str, Any]) -> Settings:
        for key in data:
            if key not in KEYS:
                near = did_you_mean(key, list(KEYS))
                raise self.error(key, "unknown key", (near + " " if near else "") + "known keys: " + ", ".join(KEYS))
        emails = data.get("email", [])
        emails = [emails] if isinstance(emails, dict) else emails
        if not isinstance(emails, list) or not all(isinstance(e, dict) for e in emails):
            raise self.error("email", "must be a table", EMAIL_EXAMPLE)
        urls = {}
        for key in ("webhook", "heartbeat"):
            v = data.get(key, [])
            v = [v] if isinstance(v, str) else v
            if not is_str_list(v) or not all(re.match(r"https?://[^\s/]+", u) for u in v):
                raise self.error(key, f"must be an http(s) URL or a list of them, not {data[key]!r}",
                                 f'write {key} = "https://example.com/..."')  # fmt: skip
            urls[key] = tuple(v)
        d = Settings()
        for key in ("down_after", "repeat_after"):
            if key in data and not (is_num(data[key]) and data[key] >= 0):
                raise self.error(key, f"must be a number of seconds, not {data[key]!r}", f"write {key} = 60")
        if "max_per_hour" in data and not (is_int(data["max_per_hour"]) and data["max_per_hour"] > 0):
            raise self.error("max_per_hour", "must be a whole number > 0", "write max_per_hour = 30")
        min_free = None
        if "min_free" in data:
            min_free = parse_size(data["min_free"])
            if min_free is None:
                raise self.error("min_free", f"must be a size, not {data['min_free']!r}", 'write min_free = "1G"')
        return Settings(
            tuple(self.email(e) for e in emails), urls["webhook"], urls["heartbeat"],
            float(data.get("down_after", d.down_after)), min_free, float(data.get("repeat_after", d.repeat_after)),
            int(data.get("max_per_hour", d.max_per_hour)),
        )  # fmt: skip

    def email(self, e: dict[str, Any]) -> Email:
        for key in e:
            if key not in EMAIL_KEYS:
                near = did_you_mean(key, list(EMAIL_KEYS))
                hint = (near + " " if near else "") + "email's keys: " + ", ".join(EMAIL_KEYS)
                raise self.error(key, "unknown key of email", hint)
        if not is_str(e.get("host")):
            raise self.error("email", "needs host", EMAIL_EXAMPLE)
        to = e.get("to")
        to = [to] if isinstance(to, str) else to
        if not is_str_list(to) or not to or not all("@" in a for a in to):
            raise self.error("to", "must be an address or a list of addresses", 'write to = ["admin@example.com"]')
        security = e.get("security", "starttls")
        if security not in SECURITY:
            raise self.error("security", f"must be one of {', '.join(SECURITY)}", 'write security = "starttls"')
        port = e.get("port", DEFAULT_PORT[security])
        if not (is_int(port) and 0 < port < 65536):
            raise self.error("port", f"must be a port number, not {port!r}", "write port = 587")
        for key in ("user", "password_env", "from"):
            if key in e and not is_str(e[key]):
                raise self.error(key, "must be a string", f'write {key} = "..."')
        if ("password_file" in e or "password_env" in e) and "user" not in e:
            raise self.error("user", "a password is given but no user to log in as", 'write user = "me@example.com"')
        files: dict[str, Path | None] = {}
        for key in ("password_file", "ca_file"):
            files[key] = None
            if key in e:
                if not is_str(e[key]):
                    raise self.error(key, "must be a file path", f'write {key} = "~/.config/tether/..."')
                p = Path(os.path.expanduser(e[key]))
                p = p if p.is_absolute() else self.file.parent / p
                if not os.access(p, os.R_OK):
                    raise self.error(key, f"{p} cannot be read", "create it (chmod 600), or fix the path")
                files[key] = p
        import socket  # only a job that mails

        sender = e.get("from") or f"tether@{socket.gethostname()}"
        return Email(str(e["host"]), int(port), str(security), tuple(to), str(sender), e.get("user"),
                     files["password_file"], e.get("password_env"), files["ca_file"])  # fmt: skip


def from_table(file: Path, text: str, data: Any, table: str = "alerts.") -> Settings:
    """A job's `[alerts]` table (already read with its file), as settings."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: alerts must be a table", "write [alerts] on a line of its own, then its keys")
    return _Reader(file, text, table).settings(data)


def load_global(config_dir: Path) -> tuple[Settings, tuple[str, ...] | None]:
    """`alerts.toml`: the settings for every job (or those its `jobs` list names)."""
    file = config_dir / "alerts.toml"
    try:
        text, data = read_toml(file)
    except FileNotFoundError:
        return NONE, None
    refuse_secrets(file, text, data)
    jobs = data.pop("jobs", None)
    if jobs is not None and not is_str_list(jobs):
        raise ConfigError(f"{file}:{line_of(text, 'jobs') or 1}: jobs must be a list of job names",
                          'write jobs = ["photos", "docs"], or leave it out for every job')  # fmt: skip
    return _Reader(file, text, "").settings(data), None if jobs is None else tuple(jobs)


def merged(job: str, own: Settings, config_dir: Path) -> Settings:
    """A job's own settings beside the all-jobs ones: channels of both, the job's thresholds."""
    every, only = load_global(config_dir)
    if only is not None and job not in only:
        every = NONE
    if not every.any:
        return own
    if own == NONE:  # no [alerts] table: alerts.toml's thresholds too
        return every
    return own._replace(
        emails=every.emails + own.emails, webhooks=every.webhooks + own.webhooks,
        heartbeats=every.heartbeats + own.heartbeats,
    )  # fmt: skip
