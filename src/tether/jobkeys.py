"""The job keys every kind shares, defined once so they mean one thing in every kind: the
filters, the rsync program and its extra options, the commands around a pass and its time
limits, ssh and the far side's python.  Each kind's schema is these plus its own keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tether.errors import UsageError
from tether.filters import Filter
from tether.hooks import BEFORE_FAILS, PassHooks

if TYPE_CHECKING:
    from tether.alerts.config import Settings
from tether.schema import (
    SECONDS,
    Doc,
    Key,
    Schema,
    choice,
    is_command,
    is_int,
    is_seconds,
    is_str,
    is_str_list,
    parse_size,
)

# what a job's `preserve` may name (modes and mtimes are always kept); transport/rsync.py maps each
# to its rsync option
PRESERVE = ("owner", "group", "acl", "xattr", "hardlinks")

# rsync options that would break what tether promises (exact copies, its own file lists,
# its own ssh settings), refused in `rsync_args`.
DENIED_RSYNC_ARGS = (
    "--delete", "--del", "--remove-source-files", "--files-from", "--from0", "-0",
    "--rsh", "-e", "--dry-run", "-n", "--list-only", "--read-batch", "--write-batch",
    "--only-write-batch", "--server", "--sender", "--daemon", "--config", "--secluded-args",
    "--protect-args", "-s", "--old-args", "--ignore-existing", "--existing",
)  # fmt: skip


MAX_LOG_KEEP = 99  # old log files kept at most (readers look this far: service/joblog.py)
_PROGRAM = re.compile(r"[\w./+-]+")


def _rate(v: Any) -> bool:
    from tether.transport.rsync import RATE_RE  # only when a job sets bwlimit: a bisync pass has no other use for it

    return (is_int(v) and v >= 0) or (isinstance(v, str) and RATE_RE.fullmatch(v) is not None)


SHARED: Schema = {
    "exclude": Key("a list of patterns", is_str_list, 'exclude = ["*.tmp", "node_modules/"]', []),
    "include": Key("a list of patterns", is_str_list, 'include = ["!keep.tmp"]', []),
    "exclude_from": Key("a path", is_str, 'exclude_from = "~/.config/tether/ignore"'),
    "bwlimit": Key("a rate like 5M or a number of KiB/s", _rate, 'bwlimit = "5M"'),
    "rsync": Key("the path of the rsync program", is_str, 'rsync = "/usr/local/bin/rsync"', "rsync"),
    "rsync_args": Key("a list of rsync options", is_str_list, 'rsync_args = ["--hard-links"]', []),
    "trash_days": Key("a whole number of days (0 to 36500)", lambda v: is_int(v) and 0 <= v <= 36500, "trash_days = 30",
                      30),
    "before": Key("a command as a list of strings", is_command, 'before = ["/usr/local/bin/snapshot"]', []),
    "after": Key("a command as a list of strings", is_command, 'after = ["notify-send", "synced"]', []),
    "command_timeout": Key(SECONDS, is_seconds, "command_timeout = 300", 300.0),
    "before_fails": choice("before_fails", BEFORE_FAILS),
    "after_on_error": Key("true or false", lambda v: isinstance(v, bool), "after_on_error = false", True),
    "max_time_soft": Key(SECONDS, is_seconds, "max_time_soft = 3600", also=("max_time_warn",)),
    "max_time_hard": Key(SECONDS, is_seconds, "max_time_hard = 7200", also=("max_time_kill",)),
    "ssh_config": Key("a file path", is_str, 'ssh_config = "~/.ssh/config-backup"'),
    "python": Key("a program name or path", lambda v: is_str(v) and _PROGRAM.fullmatch(v) is not None,
                  'python = "python3"', "auto"),
    "alerts": Key("a table of alert settings", lambda v: isinstance(v, dict),
                  '[alerts] then: webhook = "https://example.com/hook"'),
    "log_max_size": Key("a size of at least 1K, like 10M", lambda v: (parse_size(v) or 0) >= 1024,
                        'log_max_size = "10M"', "10M"),
    "log_keep": Key(f"a whole number from 1 to {MAX_LOG_KEEP}", lambda v: is_int(v) and 1 <= v <= MAX_LOG_KEEP,
                    "log_keep = 5", 5),
    "json_log": Key("true or false", lambda v: isinstance(v, bool), "json_log = true", False),
    "preserve": Key("a list of " + ", ".join(PRESERVE), lambda v: is_str_list(v) and set(v) <= set(PRESERVE),
                    'preserve = ["owner", "group", "acl", "xattr", "hardlinks"]', []),
}  # fmt: skip


class LogSettings(NamedTuple):
    """How a running job logs (tether.service.joblog): rotated at `max_bytes`, `keep` old files."""

    max_bytes: int = 10 << 20
    keep: int = 5
    json: bool = False


NO_LOG_SETTINGS = LogSettings()  # the defaults


def log_settings(doc: Doc) -> LogSettings:
    return LogSettings(parse_size(doc["log_max_size"]) or 10 << 20, doc["log_keep"], doc["json_log"])


def kind_key(kind: str) -> Key:
    """`kind` as each schema lists it: the loader has chosen the schema by it already."""
    return Key(f'the string "{kind}"', lambda v: v == kind, f'kind = "{kind}"', kind)


def validate_rsync_args(args: list[str]) -> str | None:
    """The first argument that tether cannot allow, or None."""
    for a in args:
        name = a.split("=", 1)[0]
        if name in DENIED_RSYNC_ARGS or name.startswith("--delete") or name.startswith("--backup"):
            return a
        if re.fullmatch(r"-[A-Za-z]+", a) and set(a[1:]) & set("ens0"):
            return a
    return None


def rsync_args(doc: Doc) -> tuple[str, ...]:
    bad = validate_rsync_args(doc["rsync_args"])
    if bad:
        raise doc.error(
            "rsync_args",
            f"rsync_args may not contain {bad!r}: tether manages that itself",
            "use the job keys delete, exclude, bwlimit instead",
        )
    return tuple(doc["rsync_args"])


def job_filter(doc: Doc) -> Filter:
    """exclude, include and exclude_from (relative to the job file), as one filter."""
    files = []
    if "exclude_from" in doc:
        path = Path(os.path.expanduser(doc["exclude_from"]))
        files.append(path if path.is_absolute() else doc.file.parent / path)
        try:
            Filter.build(exclude_from=files)
        except UsageError as e:
            hint = "give a readable file of patterns; a relative path is taken from the job file's folder"
            raise doc.error("exclude_from", e.message, hint) from None
    try:
        return Filter.build(doc["exclude"], doc["include"], files)
    except UsageError as e:
        hint = e.hint or "patterns are gitignore-style: *.tmp, build/, /top-only, docs/**/*.pdf"
        raise doc.error("exclude" if "exclude" in doc else "include", e.message, hint) from None


def hooks(doc: Doc, job: str, kind: str) -> PassHooks:
    """The commands around a pass and its limits; `commands_on` is each kind's own key."""
    soft, hard = doc["max_time_soft"], doc["max_time_hard"]
    if soft is not None and hard is not None and soft > hard:
        raise doc.error(
            "max_time_soft", "max_time_soft is longer than max_time_hard", "the soft limit warns before the hard"
        )
    return PassHooks(
        tuple(doc["before"]), tuple(doc["after"]), float(doc["command_timeout"]),
        None if soft is None else float(soft), None if hard is None else float(hard),
        doc["before_fails"], bool(doc["after_on_error"]), doc["commands_on"], job, kind,
    )  # fmt: skip


def alerts(doc: Doc) -> Settings:
    from tether.alerts.config import NONE, from_table

    return from_table(doc.file, doc.text, doc["alerts"]) if "alerts" in doc else NONE


def bwlimit(doc: Doc) -> str | None:
    bw = doc["bwlimit"]
    return None if bw is None else str(bw)


def ssh_config(doc: Doc) -> str | None:
    cfg = doc["ssh_config"]
    return os.path.expanduser(cfg) if cfg else None
