"""Mirror jobs: the keys of a `jobs/NAME.toml` without `kind` (or with kind = "mirror"),
and the job they build.  The loader (tether.jobs) reads the file and checks it against
SCHEMA; `build` adds what a key's type cannot say (absolute paths, overlaps, rsync options).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import jobkeys
from tether.endpoints import ReplicaSpec, as_local, check_overlap, parse_endpoint, parse_replica
from tether.errors import UsageError
from tether.hooks import NO_HOOKS, PassHooks

if TYPE_CHECKING:
    from tether.alerts.config import Settings
from tether.mirror import MirrorSpec
from tether.schema import YEAR, Doc, Key, Schema, choice, is_num, is_str, is_str_list

DELETE_MODES = ("mirror", "keep", "trash")
_PRESERVE_CAPS = {"owner": "owners", "group": "owners", "acl": "acls", "xattr": "xattrs", "hardlinks": "hardlinks"}


def is_owner(v: Any) -> bool:
    return (
        isinstance(v, str)
        and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?", v) is not None
    )


SCHEMA: Schema = {
    "kind": jobkeys.kind_key("mirror"),
    "source": Key("an absolute path", is_str, 'source = "/home/me/project"', required=True),
    "targets": Key(
        "a list of paths", lambda v: is_str_list(v) and bool(v),
        'targets = ["/mnt/backup/project", "server:/srv/project"]', required=True,
    ),
    "delete": choice("delete", DELETE_MODES),
    # continuous mirror (tether start / run)
    "delay": Key("a number of seconds (0 to 60)", lambda v: is_num(v) and 0 <= v <= 60, "delay = 0.005", 0.005),
    "interval": Key("a number of seconds (0 = only at start; at most a year)", lambda v: is_num(v) and 0 <= v <= YEAR,
                    "interval = 3600", 3600),
    # inotify while the tree fits the watch limit, else fanotify (root), else the periodic passes
    "watcher": choice("watcher", ("auto", "inotify", "fanotify")),
    "permissions": Key("a setfacl ACL spec", is_str, 'permissions = "u:www-data:rwX"'),
    "sync_owner": Key("an owner as user or user:group", is_owner, 'sync_owner = "deploy:deploy"'),
    "final_owner": Key("an owner as user or user:group", is_owner, 'final_owner = "www-data:www-data"'),
    "sudo": Key("true or false", lambda v: isinstance(v, bool), "sudo = true", False),
    # where before/after run: here, or in each target's root (through its agent, over ssh)
    "commands_on": choice("commands_on", ("local", "targets")),
    **jobkeys.SHARED,
}  # fmt: skip


@dataclass(frozen=True)
class LiveOptions:
    """Settings of the continuous mirror; the defaults are what a job without them gets."""

    delay: float = 0.005  # event window: a save is a burst of events a few microseconds apart
    interval: float = 3600.0  # full pass period, the safety net; 0 = only at start
    watcher: str = "auto"  # see watchers.py
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
    hooks: PassHooks = NO_HOOKS  # before/after and the time limits of each (full) pass
    alerts: Settings | None = None  # the job's own [alerts]; alerts.toml adds to them
    log: jobkeys.LogSettings = jobkeys.NO_LOG_SETTINGS  # how `tether run/start` logs

    def writes(self) -> tuple[ReplicaSpec, ...]:
        """Where the job writes: its targets."""
        return self.spec.targets

    def reads(self) -> tuple[ReplicaSpec, ...]:
        """Where the job takes changes from: its source."""
        return (self.spec.source,)


def build(doc: Doc, name: str) -> MirrorJob:
    source_text: str = doc["source"]
    expanded = os.path.expanduser(source_text)
    if not os.path.isabs(expanded):
        raise doc.error(
            "source",
            f"source {source_text!r} is a relative path",
            'write an absolute path, e.g. source = "/home/me/project"',
        )
    source = as_local(parse_endpoint(expanded))
    if source is None:
        raise doc.error(
            "source", f"source {source_text!r} must be a local directory", "mirror pushes from this machine"
        )
    targets: list[ReplicaSpec] = []
    for t in doc["targets"]:
        try:
            ep = parse_replica(t, base=str(doc.file.parent))
        except UsageError as e:
            raise doc.error("targets", e.message, e.hint) from None
        if ep.local_path is not None and not os.path.isabs(os.path.expanduser(t)):
            raise doc.error("targets", f"target {t!r} is a relative path", "write an absolute path or host:/path")
        targets.append(ep)
    try:
        check_overlap(source, targets)
    except UsageError as e:
        raise doc.error("targets", e.message, e.hint) from None
    for ep in targets:  # what a target cannot keep is refused here, naming the key's line
        if not (ep.caps.owners and ep.caps.acls):
            for key in ("permissions", "sync_owner", "final_owner"):
                if key in doc.data:
                    hint = "remotes keep no ACLs or owners: drop the key, or mirror to a local or ssh target"
                    raise doc.error(key, f"{key} cannot be applied on the rclone remote target {ep}", hint)
        if doc["commands_on"] == "targets" and not ep.caps.commands:
            raise doc.error("commands_on", f"target {ep} cannot run commands (an rclone remote runs no programs)",
                            'use commands_on = "local" for a job with rclone targets')  # fmt: skip
        lacking = [p for p in doc["preserve"] if not getattr(ep.caps, _PRESERVE_CAPS[p])]
        if lacking:
            raise doc.error(
                "preserve",
                f"target {ep} cannot keep {', '.join(lacking)}",
                "remove it from preserve, or mirror to a local or ssh target",
            )
    spec = MirrorSpec(
        source=source,
        targets=tuple(targets),
        filter=jobkeys.job_filter(doc),
        delete=doc["delete"] != "keep",
        trash=doc["delete"] == "trash",
        trash_days=doc["trash_days"],
        bwlimit=jobkeys.bwlimit(doc),
        rsync_args=jobkeys.rsync_args(doc),
        rsync=doc["rsync"],
        preserve=frozenset(doc["preserve"]),
    )
    live = LiveOptions(
        delay=float(doc["delay"]),
        interval=float(doc["interval"]),
        watcher=doc["watcher"],
        trash_days=doc["trash_days"],
        permissions=doc["permissions"],
        sync_owner=doc["sync_owner"],
        final_owner=doc["final_owner"],
        sudo=doc["sudo"],
        python=doc["python"],
    )
    hooks = jobkeys.hooks(doc, name, "mirror")
    return MirrorJob(
        name, doc.file, spec, jobkeys.ssh_config(doc), live, hooks, jobkeys.alerts(doc), jobkeys.log_settings(doc)
    )
