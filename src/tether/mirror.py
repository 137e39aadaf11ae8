"""One-shot mirror: make every target an exact copy of the source, targets in parallel.

Each target is independent: one failing or refused target never stops the others. A
target is either brought up to date or left as it was (rsync writes each file to a
temporary name and renames it into place).
"""

from __future__ import annotations

import os
import shlex
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tether import agent_remote
from tether.crashpoints import crashpoint
from tether.endpoints import Endpoint, Local, RcloneReached, ReplicaSpec, as_rclone, by_rsync
from tether.errors import TetherError, UsageError
from tether.filters import Filter
from tether.hooks import PassClock
from tether.state import KnownTargets
from tether.transport.rsync import MAX_DELETE_HIT, PARTIAL, Rsync, RsyncResult, literal_rule, preserve_args

# Shown when a target that tether never wrote would lose files.
MAX_LISTED = 20
MAX_UNLISTED = 1000  # more unreadable places than this in one pass: rsync's safety stands (no deletions)


@dataclass(frozen=True)
class MirrorSpec:
    """Everything one mirror pass needs, passed in explicitly."""

    source: Local
    targets: tuple[ReplicaSpec, ...]  # local, ssh, or rclone remotes (rclone_mirror.py)
    filter: Filter = field(default_factory=Filter)
    delete: bool = True
    trash: bool = False  # deleted and overwritten files are kept in the target's .tether/versions/
    trash_days: int = 30  # ... and pruned after this many days
    bwlimit: str | None = None
    rsync_args: tuple[str, ...] = ()
    rsync: str = "rsync"
    preserve: frozenset[str] = frozenset()  # owner, group, acl, xattr, hardlinks (modes and mtimes always)


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
    try:
        st = os.stat(source.path)
    except FileNotFoundError:
        raise UsageError(f"source {source} does not exist", "check the path; nothing was changed") from None
    except OSError as e:
        raise UsageError(f"source {source} cannot be read: {e.strerror}", "check its permissions") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"source {source} is not a directory", "tether mirrors directories")
    if not os.access(source.path, os.R_OK | os.X_OK):
        raise UsageError(f"source {source} cannot be read", "check its permissions")


# deleted and overwritten files are kept as versions (agent_remote.version_name); rsync's
# --backup-dir would replace a version it kept earlier, so each rsync run keeps them in its own
# folder under INCOMING, and the agent's fold_trash then files them in the versions tree
VERSIONS = agent_remote.VERSIONS.decode()
INCOMING = agent_remote.INCOMING.decode()


def destructive(changes: list[str]) -> list[str]:
    """Itemized changes that would remove or replace data already on the target.

    rsync's codes are `YXcstpoguax`: Y the update type, X the file type, then c(hecksum or
    changed link), s(ize), t(ime); a new entry shows `+++++++++`.
    """
    deletes, overwrites = [], []
    for c in changes:
        code, name = c[:11], c[12:]
        if code.startswith("*deleting"):
            deletes.append(f"would delete: {name}")
        elif (
            code[1] in "fL"
            and code[0] in "<>ch"
            and "+" not in code
            and (code[2] == "c" or code[3] == "s" or code[4] in "tT")
        ):
            overwrites.append(f"would overwrite: {name}")
    return overwrites + deletes


class RemotePass(Protocol):
    def __call__(
        self, mirror: Mirror, spec: MirrorSpec, target: RcloneReached, *, dry_run: bool, force: bool
    ) -> TargetOutcome: ...


class Mirror:
    """Runs mirror passes; remembers which targets it wrote so it never wipes a foreign one."""

    def __init__(
        self,
        rsync: Rsync,
        known: KnownTargets,
        *,
        verbose: Callable[[str], None] | None = None,
        progress: Callable[[str, int, int, str], None] | None = None,
        remote_pass: RemotePass | None = None,
    ) -> None:
        self.rsync = rsync
        self.known = known
        self.remote_pass = remote_pass  # how a target rsync cannot reach gets its pass (rclone_mirror.one_shot)
        self.verbose = verbose
        self.progress = progress  # (target, percent, bytes, rate), for transfers that change things

    def _run(
        self, argv: list[str], target: Endpoint, input: bytes | None = None, clock: PassClock | None = None
    ) -> RsyncResult:
        """One rsync run; with a `clock`, it stops at the pass's max_time_hard."""
        if self.verbose:
            self.verbose(shlex.join(argv))
        report = None
        if self.progress and "--dry-run" not in argv and input is None:
            on_progress = self.progress

            def report(pct: int, done: int, rate: str) -> None:
                on_progress(str(target), pct, done, rate)

        stop_at = clock.stop_at if clock is not None else None
        res = self.rsync.run(argv, target.ssh_host, report, input, stop_at)
        if res.stopped and clock is not None:
            res.errors = [clock.stopped()]
        return res

    def _argv(
        self,
        spec: MirrorSpec,
        target: Endpoint,
        *,
        dry_run: bool = False,
        first_contact: bool = False,
        checksum: bool = False,
    ) -> list[str]:
        extra = [*self._trash_args(spec), *preserve_args(spec.preserve), *spec.rsync_args]
        if checksum:
            extra.append("--checksum")
        if first_contact:  # add what is missing, touch nothing that is there (and list what was added,
            # and how each file that was there compares with the source's)
            extra += ["--ignore-existing", "--max-delete=0", "--info=skip2"]
        return self.rsync.mirror_argv(
            spec.source, target, filter_args=spec.filter.rsync_args(), delete=spec.delete,
            bwlimit=spec.bwlimit, extra=extra, dry_run=dry_run, itemize=first_contact,
        )  # fmt: skip

    @staticmethod
    def _trash_args(spec: MirrorSpec, rel: str = "") -> list[str]:
        """rsync keeps what it overwrites or deletes; a relative --backup-dir is taken relative
        to the destination, which is the target's `rel` for a subtree run."""
        if not spec.trash:
            return []
        up = "../" * (rel.count("/") + 1) if rel else ""
        run = f"{time.time_ns():016x}-{os.getpid()}"  # its own folder: no run replaces another's versions
        # --delete-delay: deleted during the transfer, rsync's generator and receiver both make
        # the backup dir's folders, and one loses the race ("make_backup(d/b.txt) failed: File
        # exists", exit 23 or 11: 45 of 300 passes here that replace one file of a folder and
        # delete another); deleted after it, never
        return ["--backup", "--delete-delay", f"--backup-dir={up}{INCOMING}/{run}" + (f"/{rel}" if rel else "")]

    def fold_trash(self, target: Endpoint, trash_days: int | None = None) -> None:
        """File what rsync kept in the versions tree, and prune it by age, through one agent on
        the target (a cron job of one-shot passes prunes as the continuous mirror does)."""
        with target.connector(self.rsync.ssh)() as agent:
            agent.call("fold_trash", path=INCOMING, trash_root=VERSIONS)
            if trash_days is not None:
                agent.call("prune_versions", versions_root=VERSIONS, days=trash_days)

    def _pass(
        self,
        spec: MirrorSpec,
        target: Endpoint,
        *,
        dry_run: bool = False,
        clock: PassClock | None = None,
        checksum: bool = False,
    ) -> TargetOutcome:
        if not dry_run:
            crashpoint("mirror.planned")
        res = self._run(self._argv(spec, target, dry_run=dry_run, checksum=checksum), target, clock=clock)
        if res.deletes_skipped and spec.delete and not dry_run:
            res = self._deletes_past_unlisted(spec, target, res, clock, checksum)
        if not dry_run:
            crashpoint("mirror.synced")
        if res.ok and not dry_run and spec.delete:
            self.known.add(target.key(), str(spec.source))
        return TargetOutcome.from_rsync(target, res)

    def _deletes_past_unlisted(
        self, spec: MirrorSpec, target: Endpoint, first: RsyncResult, clock: PassClock | None, checksum: bool
    ) -> RsyncResult:
        """rsync deleted nothing, as part of the source could not be listed (a directory without
        read or search permission): one unreadable folder would keep every deletion in the tree
        from the target for as long as it stays. The pass runs again with what could not be
        listed excluded (so left as it is on the target, never deleted there), and deletes the
        rest. Its errors still name what could not be read."""
        root = os.fsencode(spec.source.path).rstrip(b"/")
        if not first.unlisted or not all(p.startswith(root + b"/") for p in first.unlisted):
            return first  # the root itself, or something elsewhere: rsync's safety stands
        rels = sorted({p[len(root) + 1 :] for p in first.unlisted})
        if len(rels) > MAX_UNLISTED:
            return first  # too many to name: rsync's safety stands
        argv = self._argv(spec, target, checksum=checksum)
        cut = argv.index("--")
        argv[cut:cut] = [f"--exclude={literal_rule(rel)}" for rel in rels]
        again = self._run(argv, target, clock=clock)
        if not again.ok and again.returncode not in (PARTIAL, MAX_DELETE_HIT):
            return again
        for key in ("files", "bytes", "deleted", "created"):
            setattr(again, key, getattr(first, key) + getattr(again, key))
        again.changes = first.changes + again.changes
        if first.returncode == PARTIAL and again.returncode == 0:
            again.returncode = PARTIAL
        again.errors = first.errors + [e for e in again.errors if e not in first.errors]
        again.hint = again.hint or (
            "the rest was copied and deleted as the source says; what could not be read is left as it is "
            "on the target: make it readable (or exclude it) and run again"
        )
        return again

    def _guarded(
        self,
        spec: MirrorSpec,
        target: Endpoint,
        *,
        dry_run: bool,
        added: int = 0,
        mine: frozenset[str] = frozenset(),
        clock: PassClock | None = None,
    ) -> TargetOutcome:
        """A target tether never wrote holds data: show what a mirror would destroy, refuse if anything.
        What tether itself just put there (`mine`: a file the source held for a moment during the
        first pass) is tether's to delete or replace: a target that held nothing but what the
        source held is tether's from then on (taking over from lsyncd or a cron'd rsync)."""
        plan = self._run(self._argv(spec, target, dry_run=True), target, clock=clock)
        if not plan.ok and (plan.returncode != PARTIAL or plan.stopped):
            return TargetOutcome.from_rsync(target, plan)
        lost = destructive([c for c in plan.changes if c[12:] not in mine])
        if not dry_run and plan.ok and not plan.changes:
            # nothing to send, set or delete: the target holds the source already (a copy another
            # tool made), so that look was the pass, and the target is tether's from now on
            self.known.add(target.key(), str(spec.source))
            return TargetOutcome.from_rsync(target, plan)
        if not lost:
            return TargetOutcome.from_rsync(target, plan) if dry_run else self._pass(spec, target, clock=clock)
        shown = lost[:MAX_LISTED] + ([f"... and {len(lost) - MAX_LISTED} more"] if len(lost) > MAX_LISTED else [])
        note = (
            f"; nothing there was deleted or overwritten ({added} missing files were added)"
            if added
            else "; nothing was changed"
        )
        return TargetOutcome(
            str(target), False, files=added, refused=True, changes=plan.changes if dry_run else [],
            errors=[f"refused: {self.known.stranger(target.key())} and mirroring would delete or overwrite "
                    f"{len(lost)} entries there{note}", *shown],
            hint="check the target path; pass --force to make it an exact mirror, or --no-delete to keep extra files",
        )  # fmt: skip

    def _emptied_source(
        self, spec: MirrorSpec, target: Endpoint, clock: PassClock | None = None
    ) -> TargetOutcome | None:
        """An empty source (an unmounted disk leaves an empty mount point) must not empty a target."""
        if not agent_remote.holds_nothing(spec.source.path):
            return None
        plan = self._run(self._argv(spec, target, dry_run=True), target, clock=clock)
        if plan.stopped:
            return TargetOutcome.from_rsync(target, plan)
        gone = [c[12:] for c in plan.changes if c.startswith("*deleting")]
        if not plan.ok or not gone:
            return None
        return TargetOutcome(
            str(target), False, refused=True,
            errors=[f"refused: the source is empty and mirroring would delete {len(gone)} entries on the target"],
            hint="is the source's disk mounted? pass --force if the target really should be emptied",
        )  # fmt: skip

    def _taken_over(
        self, spec: MirrorSpec, target: Endpoint, first: RsyncResult, watched: bool, clock: PassClock | None
    ) -> TargetOutcome | None:
        """After an add-only first pass that deleted nothing: if every file that was there is the
        source's (type, size and mtime by rsync's quick check, as --info=skip2 tells), the target
        held nothing but what the source held as the pass began, and is tether's from now on.
        When the attributes matched too, that pass was the whole mirror; otherwise one ordinary
        pass sets them. Without a watcher, that pass also removes what the first one added and
        the source has lost since. None: not shown (a file differs, or rsync did not say)."""
        hows = {how for _, how in first.kept}
        if not hows or not hows <= {"uptodate", "attr change"}:
            return None
        self.known.add(target.key(), str(spec.source))
        added = any(c[2:11] == "+++++++++" for c in first.changes)
        if hows == {"uptodate"} and (watched or not added):
            return TargetOutcome.from_rsync(target, first)
        out = self._pass(spec, target, clock=clock)
        out.files += first.files
        out.bytes += first.bytes
        out.seconds += first.seconds
        return out

    def sync_target(
        self,
        spec: MirrorSpec,
        target: Endpoint,
        *,
        dry_run: bool,
        force: bool,
        clock: PassClock | None = None,
        watched: bool = False,
        checksum: bool = False,
        target_empty: bool | None = None,
    ) -> TargetOutcome:
        """One target brought up to date; with a `clock`, stopped at the pass's max_time_hard.
        `watched`: the source is watched since before this pass (a continuous mirror), so what
        changes in it meanwhile reaches the target as events. `checksum`: files are compared by
        content (rsync -c), for a pass that stands in for changes nobody saw. `target_empty`:
        whether the target holds nothing yet, when the caller already knows (an agent it holds
        open asked in one round trip); None: a remote target is learned by an add-only pass."""
        if spec.delete and not force:
            refused = self._emptied_source(spec, target, clock)
            if refused:
                return refused
        if force or not spec.delete or self.known.has(target.key(), str(spec.source)):
            return self._pass(spec, target, dry_run=dry_run, clock=clock, checksum=checksum)
        if target_empty is None and target.local_path is not None and (dry_run or target.caps.in_process):
            target_empty = agent_remote.holds_nothing(target.local_path)
        if dry_run or target.caps.in_process or target_empty is not None:
            # a new target is tether's from its first file; one that holds anything is looked at
            # first, by a dry run that is the whole pass when it lists nothing (a continuous
            # mirror's start on a matching million-file ssh target: 1.15-1.20x a bare rsync pass;
            # the add-only pass below, one line per file, made it 2.05x)
            if target_empty:
                if spec.delete and not dry_run:  # tether's from its first file: a pass killed
                    self.known.add(target.key(), str(spec.source))  # halfway leaves no stranger's target
                return self._pass(spec, target, dry_run=dry_run, clock=clock)
            return self._guarded(spec, target, dry_run=dry_run, clock=clock)
        # A remote target tether never wrote: one pass that only adds what is missing. For a new
        # target (the usual case) that is the whole mirror, at the cost of a plain rsync; for a
        # target another tool kept in sync it usually is too (see _taken_over); otherwise look
        # closer before deleting or overwriting anything there.
        res = self._run(self._argv(spec, target, first_contact=True), target, clock=clock)
        if res.ok and not res.deletes_held:
            if res.created >= res.total - 1:
                self.known.add(target.key(), str(spec.source))
                return TargetOutcome.from_rsync(target, res)
            taken = self._taken_over(spec, target, res, watched, clock)
            if taken is not None:
                return taken
        if not res.ok and (res.returncode not in (PARTIAL, MAX_DELETE_HIT) or res.stopped):
            return TargetOutcome.from_rsync(target, res)
        # (files that vanished from a live source during that pass are no reason to stop here:
        # the add-only pass is not the mirror, the guarded pass below is)
        added = frozenset(c[12:] for c in res.changes if c[2:11] == "+++++++++")
        return self._guarded(spec, target, dry_run=False, added=res.files, mine=added, clock=clock)

    def send_paths(
        self, spec: MirrorSpec, target: Endpoint, paths: list[str], *, changed: bool = False
    ) -> TargetOutcome:
        """One rsync run for a batch of paths (directories recursively), given as a NUL list.

        `changed`: the paths are files the watcher saw change, so each is sent whatever its
        size and mtime (-I): tether has decided, rsync's quick check must not decide again."""
        argv = self._argv(spec, target)
        cut = argv.index("--")
        argv[cut:cut] = ["-r", "--files-from=-", "--from0", *(["--ignore-times"] if changed else [])]
        data = b"".join(os.fsencode(p) + b"\0" for p in paths)
        return TargetOutcome.from_rsync(target, self._run(argv, target, input=data))

    def send_subtree(self, spec: MirrorSpec, target: Endpoint, rel: str) -> TargetOutcome:
        """A plain recursive rsync of one directory. Unlike a --files-from run it keeps rsync's
        incremental recursion: the transfer starts while the file list is still being built.
        Only for filters without root-anchored rules (those would not mean the same below rel)."""
        argv = self.rsync.mirror_argv(
            spec.source, target, filter_args=spec.filter.rsync_args(root=False), delete=spec.delete,
            bwlimit=spec.bwlimit,
            extra=[*self._trash_args(spec, rel), *preserve_args(spec.preserve), *spec.rsync_args, "--mkpath"],
        )  # fmt: skip
        cut = argv.index("--")
        argv[cut + 1 :] = [f"{argv[cut + 1]}{rel}/", f"{argv[cut + 2]}{rel}/"]
        return TargetOutcome.from_rsync(target, self._run(argv, target))

    def run(
        self, spec: MirrorSpec, *, dry_run: bool = False, force: bool = False, clock: PassClock | None = None
    ) -> list[TargetOutcome]:
        """Every target, in parallel; a `clock` gives the whole pass one max_time_hard."""
        check_source(spec.source)
        targets = spec.targets
        if len(targets) == 1:
            return [self._one_shot(spec, targets[0], dry_run=dry_run, force=force, clock=clock)]
        from concurrent.futures import ThreadPoolExecutor  # only when there is more than one target

        with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
            futures = [pool.submit(self._one_shot, spec, t, dry_run=dry_run, force=force, clock=clock) for t in targets]
            return [f.result() for f in futures]

    def _one_shot(
        self, spec: MirrorSpec, target: ReplicaSpec, *, dry_run: bool, force: bool, clock: PassClock | None
    ) -> TargetOutcome:
        remote, reached = as_rclone(target), by_rsync(target)
        if reached is None:  # rsync cannot reach it: listed and sent through its rcd
            if remote is None or self.remote_pass is None:
                raise UsageError(f"target {target} cannot be reached by rsync", "mirror to a local or ssh target")
            return self.remote_pass(self, spec, remote, dry_run=dry_run, force=force)
        target = reached
        out = self.sync_target(spec, target, dry_run=dry_run, force=force, clock=clock)
        # filed at every pass that reached the target, not only one that changed something: a pass
        # killed between its rsync run and the filing leaves versions in INCOMING, where no one
        # lists or restores them
        if spec.trash and not dry_run and (out.ok or out.files or out.deleted):
            try:
                self.fold_trash(target, spec.trash_days)
            except TetherError as e:
                out.ok = False
                out.errors.append(f"the versions this pass kept are in {INCOMING}, not filed: {e}")
                out.hint = out.hint or "the next pass files them"
        return out
