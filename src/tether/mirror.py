"""One-shot mirror: make every target an exact copy of the source, targets in parallel.

Each target is independent: one failing or refused target never stops the others. A
target is either brought up to date or left as it was (rsync writes each file to a
temporary name and renames it into place).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tether.endpoints import Endpoint, Local, Ssh
from tether.errors import UsageError
from tether.filters import META_DIR, Filter
from tether.state import KnownTargets
from tether.transport.rsync import Rsync, RsyncResult

# Shown when a target that tether never wrote would lose files.
MAX_LISTED = 20


@dataclass(frozen=True)
class MirrorSpec:
    """Everything one mirror pass needs, passed in explicitly."""

    source: Local
    targets: tuple[Endpoint, ...]
    filter: Filter = field(default_factory=Filter)
    delete: bool = True
    bwlimit: str | None = None
    rsync_args: tuple[str, ...] = ()


@dataclass
class TargetOutcome:
    target: str
    ok: bool
    files: int = 0
    deleted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    hint: str | None = None
    changes: list[str] = field(default_factory=list)
    refused: bool = False

    @classmethod
    def from_rsync(cls, target: Endpoint, res: RsyncResult) -> TargetOutcome:
        return cls(
            str(target), res.ok, res.files, res.deleted, res.bytes, res.seconds,
            res.errors, res.hint, res.changes,
        )  # fmt: skip


def check_source(source: Local) -> None:
    if not os.path.lexists(source.path):
        raise UsageError(f"source {source} does not exist", "check the path; nothing was changed")
    if not os.path.isdir(source.path):
        raise UsageError(f"source {source} is not a directory", "tether mirrors directories")
    if not os.access(source.path, os.R_OK | os.X_OK):
        raise UsageError(f"source {source} cannot be read", "check its permissions")


class Mirror:
    def __init__(
        self,
        rsync: Rsync,
        known: KnownTargets,
        *,
        verbose: Callable[[str], None] | None = None,
    ) -> None:
        self.rsync = rsync
        self.known = known
        self.verbose = verbose

    def _run(self, argv: list[str], target: Endpoint) -> RsyncResult:
        if self.verbose:
            self.verbose(shlex.join(argv))
        return self.rsync.run(argv, target.host if isinstance(target, Ssh) else None)

    def _argv(self, spec: MirrorSpec, target: Endpoint, **kw: bool) -> list[str]:
        return self.rsync.mirror_argv(
            spec.source, target, filter_args=spec.filter.rsync_args(), delete=spec.delete,
            bwlimit=spec.bwlimit, extra=spec.rsync_args, **kw,
        )  # fmt: skip

    def _target_is_empty(self, target: Endpoint) -> bool | RsyncResult:
        """Whether the target holds nothing yet (or does not exist); rsync's result on failure."""
        if isinstance(target, Local):
            try:
                with os.scandir(target.path) as it:
                    return all(e.name == META_DIR for e in it)
            except FileNotFoundError:
                return True
            except NotADirectoryError:
                return False
        argv = self.rsync.base_argv([target]) + ["--list-only", "--", target.rsync_arg()]
        res = self._run(argv, target)
        if res.returncode == 23 and "No such file or directory" in " ".join(res.errors):
            return True
        if not res.ok:
            return res
        names = [ln.split(None, 4)[-1] for ln in res.stdout.splitlines() if ln.strip()]
        return all(n in (".", META_DIR) for n in names)

    def _foreign_deletions(self, spec: MirrorSpec, target: Endpoint) -> list[str] | RsyncResult:
        """What a first mirror into a target tether never wrote would delete there."""
        if not spec.delete or self.known.has(target.key()):
            return []
        empty = self._target_is_empty(target)
        if isinstance(empty, RsyncResult):
            return empty
        if empty:
            return []
        dry = self._run(self._argv(spec, target, dry_run=True), target)
        if not dry.ok and dry.returncode != 23:
            return dry
        return [c[12:] for c in dry.changes if c.startswith("*deleting")]

    def sync_target(self, spec: MirrorSpec, target: Endpoint, *, dry_run: bool, force: bool) -> TargetOutcome:
        foreign = self._foreign_deletions(spec, target)
        if isinstance(foreign, RsyncResult):
            return TargetOutcome.from_rsync(target, foreign)
        if foreign and not force:
            shown = [f"would delete: {p}" for p in foreign[:MAX_LISTED]]
            if len(foreign) > MAX_LISTED:
                shown.append(f"  ... and {len(foreign) - MAX_LISTED} more")
            return TargetOutcome(
                str(target), False, refused=True,
                errors=["refused: tether never wrote this target and mirroring would "
                        f"delete {len(foreign)} entries there", *shown],
                hint="check the target path; pass --force to delete them, or --no-delete to keep them",
            )  # fmt: skip
        res = self._run(self._argv(spec, target, dry_run=dry_run), target)
        out = TargetOutcome.from_rsync(target, res)
        if res.ok and not dry_run and spec.delete:
            self.known.add(target.key(), str(spec.source))
        return out

    def run(self, spec: MirrorSpec, *, dry_run: bool = False, force: bool = False) -> list[TargetOutcome]:
        check_source(spec.source)
        targets = spec.targets
        if len(targets) == 1:
            return [self.sync_target(spec, targets[0], dry_run=dry_run, force=force)]
        with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
            futures = [pool.submit(self.sync_target, spec, t, dry_run=dry_run, force=force) for t in targets]
            return [f.result() for f in futures]
