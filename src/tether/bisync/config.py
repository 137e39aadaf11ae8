"""Bisync jobs: `kind = "bisync"` in jobs/NAME.toml.  The loader (tether.jobs) reads the file
and checks it against SCHEMA, the same framework and shared keys as mirror jobs; `build` adds
what a key's type cannot say (the two replicas and how they pair)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tether import jobkeys
from tether.bisync.plan import POLICIES
from tether.endpoints import ReplicaSpec, check_pair, parse_replica
from tether.errors import UsageError
from tether.filters import Filter
from tether.hooks import NO_HOOKS, PassHooks

if TYPE_CHECKING:
    from tether.alerts.config import Settings
from tether.schema import SECONDS, Doc, Key, Schema, choice, is_int, is_seconds, is_str

SCHEMA: Schema = {
    "kind": jobkeys.kind_key("bisync"),
    "path1": Key("a path, host:/path or remote:path", is_str, 'path1 = "/home/me/notes"', required=True),
    "path2": Key("a path, host:/path or remote:path", is_str, 'path2 = "server:/srv/notes"', required=True),
    "conflict": choice("conflict", POLICIES),
    "max_delete": Key("a percentage 0-100", lambda v: is_int(v) and 0 <= v <= 100, "max_delete = 50", 50),
    "backups_keep": Key("a whole number >= 1", lambda v: is_int(v) and v >= 1, "backups_keep = 10", 10),
    "commands_on": choice("commands_on", ("local", "path1", "path2")),
    "interval": Key(SECONDS, is_seconds, "interval = 60", 60),
    **jobkeys.SHARED,
}  # fmt: skip


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
    hooks: PassHooks = NO_HOOKS  # with commands_on, as hooks.on
    interval: float = 60.0
    bwlimit: str | None = None
    ssh_config: str | None = None
    python: str = "auto"
    rsync: str = "rsync"
    rsync_args: tuple[str, ...] = ()
    preserve: frozenset[str] = frozenset()  # owner, group, acl, xattr (modes and mtimes always)
    alerts: Settings | None = None  # the job's own [alerts]; alerts.toml adds to them
    log: jobkeys.LogSettings = jobkeys.NO_LOG_SETTINGS  # how `tether run/start` logs

    def writes(self) -> tuple[ReplicaSpec, ...]:
        """Where the job writes: both replicas."""
        return (self.path1, self.path2)

    def reads(self) -> tuple[ReplicaSpec, ...]:
        """Where the job takes changes from: both replicas."""
        return (self.path1, self.path2)


def build(doc: Doc, name: str) -> BisyncJob:
    base = str(doc.file.parent)
    replicas = []
    for key in ("path1", "path2"):
        try:
            replicas.append(parse_replica(doc[key], base=base))
        except UsageError as e:
            raise doc.error(key, e.message, e.hint) from None
    p1, p2 = replicas
    try:
        check_pair(p1, p2)
    except UsageError as e:
        raise doc.error("path2", e.message, e.hint) from None
    preserve = frozenset(doc["preserve"])
    if "hardlinks" in preserve:
        raise doc.error(
            "preserve",
            "bisync cannot keep hard links: each path is recorded and installed as a file of its own",
            'remove "hardlinks" from preserve (a mirror job keeps them)',
        )
    for key, spec in (("path1", p1), ("path2", p2)):
        if preserve and not (spec.caps.owners and spec.caps.acls and spec.caps.xattrs):
            raise doc.error(
                "preserve",
                f"{key} {spec} cannot keep {', '.join(sorted(preserve))} (an rclone remote keeps none of them)",
                "remove preserve, or pair the local folder with a local or ssh replica",
            )
    on = {"path1": p1, "path2": p2}.get(doc["commands_on"])
    if on is not None and not on.caps.commands:
        raise doc.error("commands_on", f"{doc['commands_on']} {on} cannot run commands (an rclone remote runs no "
                        "programs)", 'use commands_on = "local", or the other replica')  # fmt: skip
    return BisyncJob(
        name, doc.file, p1, p2, policy=doc["conflict"], filter=jobkeys.job_filter(doc),
        max_delete=doc["max_delete"], backups_keep=doc["backups_keep"], trash_days=doc["trash_days"],
        hooks=jobkeys.hooks(doc, name, "bisync"), interval=float(doc["interval"]),
        bwlimit=jobkeys.bwlimit(doc), ssh_config=jobkeys.ssh_config(doc), python=doc["python"],
        rsync=doc["rsync"], rsync_args=jobkeys.rsync_args(doc), preserve=preserve, alerts=jobkeys.alerts(doc),
        log=jobkeys.log_settings(doc),
    )  # fmt: skip
