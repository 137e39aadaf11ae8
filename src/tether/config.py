"""Job files: `jobs/NAME.toml` under the config dir, validated strictly.

Every error names the file, the line and the key, and says what to write instead; a job
that does not validate never runs, so a typo cannot turn into a partial sync.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.bisync.rclone_spec import Rclone, ReplicaSpec, check_targets, parse_replica
from tether.dirs import Dirs
from tether.endpoints import Local, parse_endpoint
from tether.errors import ConfigError, UsageError
from tether.filters import Filter
from tether.mirror import MirrorSpec
from tether.transport.rsync import RATE_RE

JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DELETE_MODES = ("mirror", "keep", "trash")

# rsync options that would break what tether promises (exact copies, its own file lists,
# its own ssh settings), refused in `rsync_args`.
DENIED_RSYNC_ARGS = (
    "--delete", "--del", "--remove-source-files", "--files-from", "--from0", "-0",
    "--rsh", "-e", "--dry-run", "-n", "--list-only", "--read-batch", "--write-batch",
    "--only-write-batch", "--server", "--sender", "--daemon", "--config", "--secluded-args",
    "--protect-args", "-s", "--old-args", "--ignore-existing", "--existing",
)  # fmt: skip


@dataclass(frozen=True)
class Field:
    kind: str  # a word for the error message
    check: Callable[[Any], bool]
    example: str
    required: bool = False


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


def is_owner(v: Any) -> bool:
    return (
        isinstance(v, str)
        and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?", v) is not None
    )


MIRROR_FIELDS: dict[str, Field] = {
    "kind": Field("string", lambda v: v == "mirror", 'kind = "mirror"'),
    "source": Field("absolute path", lambda v: isinstance(v, str), 'source = "/home/me/project"', True),
    "targets": Field(
        "list of paths",
        lambda v: _is_str_list(v) and bool(v),
        'targets = ["/mnt/backup/project", "server:/srv/project"]',
        True,
    ),
    "exclude": Field("list of patterns", _is_str_list, 'exclude = ["*.tmp", "node_modules/"]'),
    "include": Field("list of patterns", _is_str_list, 'include = ["!keep.tmp"]'),
    "exclude_from": Field("path", lambda v: isinstance(v, str), 'exclude_from = "~/.config/tether/ignore"'),
    "delete": Field("one of " + ", ".join(DELETE_MODES), lambda v: v in DELETE_MODES, 'delete = "mirror"'),
    "bwlimit": Field(
        "rate like 5M or a number of KiB/s",
        lambda v: (
            (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            or (isinstance(v, str) and RATE_RE.fullmatch(v) is not None)
        ),
        'bwlimit = "5M"',
    ),
    "rsync_args": Field("list of rsync options", _is_str_list, 'rsync_args = ["--hard-links"]'),
    "ssh_config": Field("path", lambda v: isinstance(v, str), 'ssh_config = "~/.ssh/config-backup"'),
    # continuous mirror (tether start / run)
    "delay": Field("number of seconds (0 to 60)", lambda v: _is_num(v) and 0 <= v <= 60, "delay = 0.005"),
    "interval": Field("number of seconds (0 = never)", lambda v: _is_num(v) and v >= 0, "interval = 3600"),
    "trash_days": Field("whole number of days", lambda v: _is_int(v) and v >= 0, "trash_days = 30"),
    "permissions": Field(
        "setfacl ACL spec", lambda v: isinstance(v, str) and bool(v), 'permissions = "u:www-data:rwX"'
    ),
    "sync_owner": Field("owner as user or user:group", is_owner, 'sync_owner = "deploy:deploy"'),
    "final_owner": Field("owner as user or user:group", is_owner, 'final_owner = "www-data:www-data"'),
    "sudo": Field("true or false", lambda v: isinstance(v, bool), "sudo = true"),
    "rsync": Field(
        "path of the rsync program", lambda v: isinstance(v, str) and bool(v), 'rsync = "/usr/local/bin/rsync"'
    ),
    "python": Field("python program on ssh targets", lambda v: isinstance(v, str) and bool(v), 'python = "python3"'),
}


@dataclass(frozen=True)
class LiveOptions:
    """Settings of the continuous mirror; the defaults are what a job without them gets."""

    delay: float = 0.005  # event window: a save is a burst of events a few microseconds apart
    interval: float = 3600.0  # full pass period, the safety net; 0 = only at start
    trash_days: int = 30
    permissions: str | None = None
    sync_owner: str | None = None
    final_owner: str | None = None
    sudo: bool = False
    python: str = "auto"


@dataclass(frozen=True)
class MirrorJob:
    name: str
    file: Path
    spec: MirrorSpec
    ssh_config: str | None = None
    live: LiveOptions = LiveOptions()


def _key_line(text: str, key: str) -> int | None:
    rx = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=")
    for no, line in enumerate(text.splitlines(), 1):
        if rx.match(line):
            return no
    return None


class _Located:
    """Builds errors that point at file:line for a key."""

    def __init__(self, file: Path, text: str) -> None:
        self.file, self.text = file, text

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        line = _key_line(self.text, key) if key else None
        where = f"{self.file}:{line}" if line else str(self.file)
        return ConfigError(f"{where}: {message}", hint)


def validate_rsync_args(args: list[str]) -> str | None:
    """The first argument that tether cannot allow, or None."""
    for a in args:
        name = a.split("=", 1)[0]
        if name in DENIED_RSYNC_ARGS or name.startswith("--delete") or name.startswith("--backup"):
            return a
        if re.fullmatch(r"-[A-Za-z]+", a) and set(a[1:]) & set("ens0"):
            return a
    return None


def parse_job(file: Path, name: str) -> MirrorJob:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no job named {name!r} ({file} does not exist)", "`tether jobs` lists the jobs") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {e}") from None
    loc = _Located(file, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line = m.group(1) if m else str(max(1, len(text.splitlines())))  # "at end of document"
        where = f"{file}:{line}"
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise ConfigError(
            f"{where}: invalid TOML: {msg}",
            "see https://toml.io for the syntax; strings need quotes",
        ) from None

    kind = data.get("kind", "mirror")
    if kind != "mirror":
        raise loc.error("kind", f"kind {kind!r} is not supported", 'write kind = "mirror"')
    for key, value in data.items():
        f = MIRROR_FIELDS.get(key)
        if f is None:
            close = difflib.get_close_matches(key, MIRROR_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise loc.error(key, f"unknown key {key!r}", hint + "known keys: " + ", ".join(MIRROR_FIELDS))
        if not f.check(value):
            raise loc.error(key, f"{key} must be a {f.kind}, not {value!r}", f"write for example: {f.example}")
    for key, f in MIRROR_FIELDS.items():
        if f.required and key not in data:
            raise loc.error(None, f"missing key {key!r}", f"add a line like: {f.example}")

    base = str(file.parent)
    source_text: str = data["source"]
    expanded = os.path.expanduser(source_text)
    if not os.path.isabs(expanded):
        raise loc.error(
            "source",
            f"source {source_text!r} is a relative path",
            'write an absolute path, e.g. source = "/home/me/project"',
        )
    source = parse_endpoint(expanded)
    if not isinstance(source, Local):
        raise loc.error(
            "source",
            f"source {source_text!r} must be a local directory",
            "mirror pushes from this machine",
        )
    targets: list[ReplicaSpec] = []
    for t in data["targets"]:
        try:
            ep = parse_replica(t, base=base)
        except UsageError as e:
            raise loc.error("targets", e.message, e.hint) from None
        if isinstance(ep, Local) and not os.path.isabs(os.path.expanduser(t)):
            raise loc.error(
                "targets",
                f"target {t!r} is a relative path",
                "write an absolute path or host:/path",
            )
        targets.append(ep)
    try:
        check_targets(source, targets)
    except UsageError as e:
        raise loc.error("targets", e.message, e.hint) from None
    remote = next((t for t in targets if isinstance(t, Rclone)), None)
    for key in ("permissions", "sync_owner", "final_owner"):
        if remote is not None and key in data:
            hint = "remotes keep no ACLs or owners: drop the key, or mirror to a local or ssh target"
            raise loc.error(key, f"{key} cannot be applied on the rclone remote target {remote}", hint)

    rsync_args = data.get("rsync_args", [])
    bad = validate_rsync_args(rsync_args)
    if bad:
        raise loc.error(
            "rsync_args",
            f"rsync_args may not contain {bad!r}: tether manages that itself",
            "use the job keys delete, exclude, bwlimit instead",
        )
    exclude_from = [Path(os.path.expanduser(data["exclude_from"]))] if "exclude_from" in data else []
    try:
        flt = Filter.build(
            data.get("exclude", []),
            data.get("include", []),
            [p if p.is_absolute() else file.parent / p for p in exclude_from],
        )
    except UsageError as e:
        raise loc.error("exclude", e.message, e.hint) from None
    bw = data.get("bwlimit")
    spec = MirrorSpec(
        source=source,
        targets=tuple(targets),
        filter=flt,
        delete=data.get("delete", "mirror") != "keep",
        trash=data.get("delete") == "trash",
        bwlimit=str(bw) if bw is not None else None,
        rsync_args=tuple(rsync_args),
        rsync=data.get("rsync", "rsync"),
    )
    ssh_config = data.get("ssh_config")
    live = LiveOptions(
        delay=float(data.get("delay", LiveOptions.delay)),
        interval=float(data.get("interval", LiveOptions.interval)),
        trash_days=data.get("trash_days", LiveOptions.trash_days),
        permissions=data.get("permissions"),
        sync_owner=data.get("sync_owner"),
        final_owner=data.get("final_owner"),
        sudo=data.get("sudo", False),
        python=data.get("python", "auto"),
    )
    return MirrorJob(name, file, spec, os.path.expanduser(ssh_config) if ssh_config else None, live)


def job_file(dirs: Dirs, name: str) -> Path:
    if not JOB_NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a valid job name", "use letters, digits, '-', '_' and '.'")
    return dirs.jobs / f"{name}.toml"


def list_jobs(dirs: Dirs) -> list[str]:
    if not dirs.jobs.is_dir():
        return []
    return sorted(p.stem for p in dirs.jobs.glob("*.toml"))
