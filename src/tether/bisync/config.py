"""Bisync job files: `kind = "bisync"` in jobs/NAME.toml, validated as strictly as mirror jobs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from tether.bisync.plan import POLICIES
from tether.bisync.rclone_spec import Rclone, ReplicaSpec, parse_replica
from tether.endpoints import Local, Ssh, is_inside
from tether.errors import ConfigError, UsageError
from tether.filters import Filter


def _rate(v: str) -> bool:
    from tether.transport.rsync import RATE_RE  # only when a job sets bwlimit

    return RATE_RE.fullmatch(v) is not None


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return (_int(v) or isinstance(v, float)) and v > 0


FIELDS: dict[str, tuple[str, Any, str]] = {
    # key: (what it must be, check, example)
    "kind": ('the string "bisync"', lambda v: v == "bisync", 'kind = "bisync"'),
    "path1": ("a path or host:/path", lambda v: isinstance(v, str) and v != "", 'path1 = "/home/me/notes"'),
    "path2": ("a path or host:/path", lambda v: isinstance(v, str) and v != "", 'path2 = "server:/srv/notes"'),
    "conflict": (f"one of {', '.join(POLICIES)}", lambda v: v in POLICIES, 'conflict = "keep-both"'),
    "exclude": ("a list of patterns", _str_list, 'exclude = ["*.tmp", ".cache/"]'),
    "include": ("a list of patterns", _str_list, 'include = ["keep.tmp"]'),
    "max_delete": ("a percentage 0-100", lambda v: _int(v) and 0 <= v <= 100, "max_delete = 50"),
    "backups_keep": ("a whole number >= 1", lambda v: _int(v) and v >= 1, "backups_keep = 10"),
    "trash_days": ("a whole number of days", lambda v: _int(v) and v >= 0, "trash_days = 30"),
    "max_time_soft": ("seconds > 0", _num, "max_time_soft = 3600"),
    "max_time_hard": ("seconds > 0", _num, "max_time_hard = 7200"),
    "before": ("a command as a list of strings", lambda v: _str_list(v) and v, 'before = ["/usr/local/bin/snap"]'),
    "after": ("a command as a list of strings", lambda v: _str_list(v) and v, 'after = ["notify-send", "synced"]'),
    "commands_on": ("local, path1 or path2", lambda v: v in ("local", "path1", "path2"), 'commands_on = "path2"'),
    "command_timeout": ("seconds > 0", _num, "command_timeout = 300"),
    "interval": ("seconds > 0", _num, "interval = 60"),
    "bwlimit": ("an rsync rate like 5M", lambda v: isinstance(v, str) and _rate(v), 'bwlimit = "5M"'),
    "ssh_config": ("a file path", lambda v: isinstance(v, str) and v != "", 'ssh_config = "~/.ssh/config"'),
    "python": ("a program name", lambda v: isinstance(v, str) and re.fullmatch(r"[\w./+-]+", v), 'python = "python3"'),
    "preserve": (
        "a list of owner, group, acl, xattr",
        lambda v: _str_list(v) and set(v) <= {"owner", "group", "acl", "xattr", "hardlinks"},
        'preserve = ["owner", "group", "acl", "xattr"]',
    ),
}


class BisyncJob(NamedTuple):
    name: str
    file: Path | None
    path1: ReplicaSpec
    path2: ReplicaSpec
    policy: str = "keep-both"
    filter: Filter = Filter()
    max_delete: int = 50
    backups_keep: int = 10
    trash_days: int = 30
    max_time_soft: float | None = None
    max_time_hard: float | None = None
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    commands_on: str = "local"
    command_timeout: float = 300.0
    interval: float = 60.0
    bwlimit: str | None = None
    ssh_config: str | None = None
    python: str = "auto"
    preserve: frozenset[str] = frozenset()  # owner, group, acl, xattr (modes and mtimes always)


def check_pair(p1: ReplicaSpec, p2: ReplicaSpec) -> None:
    """Two replicas that overlap would sync a tree into itself; two remote ones need rsync between hosts."""
    if isinstance(p1, Local) and isinstance(p2, Local):
        a, b = os.path.realpath(p1.path), os.path.realpath(p2.path)
        if is_inside(a, b) or is_inside(b, a):
            raise UsageError(
                f"path1 {p1} and path2 {p2} overlap (one is inside the other)",
                "give two separate directories",
            )
    if isinstance(p1, Rclone) or isinstance(p2, Rclone):
        if not isinstance(p1, Local) and not isinstance(p2, Local):
            raise UsageError(
                f"path1 {p1} and path2 {p2}: an rclone remote pairs with a local directory only",
                "run tether where one replica is a local directory",
            )
        return
    if isinstance(p1, Ssh) and isinstance(p2, Ssh):
        if p1.host == p2.host and os.path.normpath(p1.path) == os.path.normpath(p2.path):
            raise UsageError(f"path1 and path2 are the same place ({p1})", "give two separate directories")
        raise UsageError(
            f"path1 {p1} and path2 {p2} are both remote",
            "run tether on one of the two hosts, so that one replica is local",
        )


def _line(text: str, key: str) -> str:
    rx = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for no, ln in enumerate(text.splitlines(), 1):
        if rx.match(ln):
            return f":{no}"
    return ""


def is_bisync(file: Path) -> bool:
    """Cheap test for the job kind, before choosing a parser."""
    try:
        return bool(re.search(r'(?m)^\s*kind\s*=\s*["\']bisync["\']', file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


def parse_bisync_job(file: Path, name: str) -> BisyncJob:
    import tomllib

    try:
        text = file.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise UsageError(f"no job named {name!r} ({file} does not exist)", "`tether jobs` lists the jobs") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {e}", "fix the TOML syntax") from None

    def err(key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{file}{_line(text, key)}: {message}", hint)

    for key, value in data.items():
        if key not in FIELDS:
            import difflib

            near = difflib.get_close_matches(key, FIELDS, 1)
            raise err(key, f"unknown key {key!r}", f"did you mean {near[0]!r}?" if near else "see README: bisync jobs")
        what, check, example = FIELDS[key]
        if not check(value):
            raise err(key, f"{key} must be {what}, not {value!r}", f"for example: {example}")
    for key in ("path1", "path2"):
        if key not in data:
            raise err(key, f"missing {key}", f"add a line like: {FIELDS[key][2]}")
    base = str(file.parent)
    p1, p2 = parse_replica(data["path1"], base=base), parse_replica(data["path2"], base=base)
    try:
        check_pair(p1, p2)
    except UsageError as e:
        raise err("path2", e.message, e.hint) from None
    try:
        flt = Filter.build(data.get("exclude", ()), data.get("include", ()))
    except UsageError as e:
        raise err("exclude", e.message, e.hint) from None
    soft, hard = data.get("max_time_soft"), data.get("max_time_hard")
    if soft is not None and hard is not None and soft > hard:
        raise err("max_time_soft", "max_time_soft is longer than max_time_hard", "the soft limit warns before the hard")
    preserve = frozenset(data.get("preserve", ()))
    if "hardlinks" in preserve:
        raise err(
            "preserve",
            "bisync cannot keep hard links: each path is recorded and installed as a file of its own",
            'remove "hardlinks" from preserve (a mirror job keeps them)',
        )
    for key, spec in (("path1", p1), ("path2", p2)):
        if preserve and isinstance(spec, Rclone):
            raise err(
                "preserve",
                f"{key} {spec} is an rclone remote: it cannot keep {', '.join(sorted(preserve))}",
                "remove preserve, or pair the local folder with a local or ssh replica",
            )
    ssh_config = data.get("ssh_config")
    return BisyncJob(
        name, file, p1, p2, policy=data.get("conflict", "keep-both"), filter=flt,
        max_delete=data.get("max_delete", 50), backups_keep=data.get("backups_keep", 10),
        trash_days=data.get("trash_days", 30), max_time_soft=soft, max_time_hard=hard,
        before=tuple(data.get("before", ())), after=tuple(data.get("after", ())),
        commands_on=data.get("commands_on", "local"), command_timeout=float(data.get("command_timeout", 300)),
        interval=float(data.get("interval", 60)), bwlimit=data.get("bwlimit"),
        ssh_config=os.path.expanduser(ssh_config) if ssh_config else None, python=data.get("python", "auto"),
        preserve=preserve,
    )  # fmt: skip
