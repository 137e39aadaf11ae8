"""A mirror whose target is an rclone remote (`remote:path`), one-shot and continuous.

One pass: the source is walked with tether's own filter (the engine the watcher uses, so the two
never disagree on what is synced), the target listed in one rc call, the two compared in lock
step, and the differences applied in batches through the target's rcd: deletes (or trash moves)
first, then one `sync/copy` of every file to send.  Comparing here, not inside `rclone sync`,
gives the delete guard its list before anything changes, and the continuous mirror the same
verdicts as the one-shot pass.  Files are the same when the sizes are and the mtimes agree
within what the backend keeps (operations/fsinfo's precision; size alone where it keeps none).

The continuous mirror is the same Applier as for local and ssh targets, speaking the same agent
words to RcloneTarget; only bulk sends (new directories, big batches) go by `sync/copy`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tether import rclone_scan
from tether.crashpoints import crashpoint
from tether.endpoints import RcloneReached
from tether.errors import TetherError
from tether.filters import Filter
from tether.mirror import MAX_LISTED, VERSIONS, Mirror, MirrorSpec, TargetOutcome, check_source
from tether.rclone_scan import Entry, scan_source
from tether.state import KnownTargets
from tether.transport import rclone_lsf
from tether.transport.agent import AgentError
from tether.transport.rclone_agent import RcError
from tether.transport.rclone_bin import rclone_program
from tether.transport.rclone_lsf import Listing
from tether.transport.rclone_target import RcloneTarget, precision_text

log = logging.getLogger("tether")


@dataclass
class Plan:
    """What one pass changes on the target, in the order it is applied."""

    remove: list[tuple[str, str]] = field(default_factory=list)  # (path, "f"/"d"), topmost only
    replace: list[str] = field(default_factory=list)  # files whose target version the copy replaces
    mkdir: list[str] = field(default_factory=list)  # empty source dirs missing on the target
    copy: list[str] = field(default_factory=list)  # files to send, new or changed
    bytes: int = 0
    blocked: list[str] = field(default_factory=list)  # type clashes left alone (delete = keep)

    def destructive(self) -> list[str]:
        return [f"would overwrite: {p}" for p in self.replace] + [f"would delete: {p}" for p, _ in self.remove]

    def itemized(self) -> list[str]:
        """rsync-style lines, for a dry run's listing."""
        replaced = set(self.replace)
        out = [f"*deleting   {p}{'/' if t == 'd' else ''}" for p, t in self.remove]
        out += [f"cd+++++++++ {p}/" for p in self.mkdir]
        out += [f">f{'.st......' if p in replaced else '+++++++++'} {p}" for p in self.copy]
        return out


def plan_pass(
    src: dict[str, Entry],
    dst: dict[str, Entry],
    flt: Filter,
    same: Callable[[int, int, int, int], bool],
    *,
    delete: bool,
    empty_dirs: bool,
) -> Plan:
    """The differences, as data: a pure function of the two listings.  `same(size, mtime_ns,
    target size, target mtime_ns)` judges a file on both sides; it must hold for equal values."""
    plan = Plan()
    gone: set[str] = set()  # target dirs removed: nothing below them needs removing
    out_dirs: dict[str, bool] = {}  # target dir -> excluded, itself or through a parent

    def under_gone(p: str) -> bool:
        if not gone:
            return False
        parts = p.split("/")
        return any("/".join(parts[:i]) in gone for i in range(1, len(parts)))

    def excluded(p: str, is_dir: bool) -> bool:
        if not flt.rules:
            return False  # .tether is left out of the listing already
        parent = p.rpartition("/")[0]
        if parent and parent not in out_dirs:
            out_dirs[parent] = flt.path_excluded(parent, True)
        if parent and out_dirs[parent]:
            return True
        return flt.excluded(p, is_dir)

    unread = {p for p, e in src.items() if e[0] == "?"}

    def left_alone(p: str) -> bool:
        if not unread:
            return False
        parts = p.split("/")
        return any("/".join(parts[:i]) in unread for i in range(1, len(parts) + 1))

    # target entries the source has as the same type are left alone: only the others, in order
    others = [p for p, d in dst.items() if (s := src.get(p)) is None or s[0] != d[0]]
    for p in sorted(others):
        if under_gone(p) or excluded(p, dst[p][0] == "d") or left_alone(p):
            continue
        t = dst[p][0]
        s = src.get(p)
        if s is None and not delete:
            continue
        if s is not None and not delete:
            plan.blocked.append(f"{p}: a {'directory' if t == 'd' else 'file'} on the target, "
                                f"a {'directory' if s[0] == 'd' else 'file'} in the source")  # fmt: skip
            continue
        plan.remove.append((p, t))
        if t == "d":
            gone.add(p)
    blocked = {b.split(": ", 1)[0] for b in plan.blocked}
    parents: set[str] | None = None  # dirs holding something, made when a dir is missing
    for p, e in src.items():
        d = dst.get(p)
        if d == e and not gone:
            continue  # the same entry on the target (`same` holds for equal values)
        if p in blocked or p in unread:
            continue
        if gone and (under_gone(p) or p in gone):
            d = None
        t, size, mtime = e
        if t == "d":
            if d is None and empty_dirs:
                if parents is None:
                    parents = {p.rpartition("/")[0] for p in src}
                if p not in parents:
                    plan.mkdir.append(p)
            continue
        if d is not None and d[0] == "f" and same(size, mtime, d[1], d[2]):
            continue
        if d is not None and d[0] == "f":
            plan.replace.append(p)
        plan.copy.append(p)
        plan.bytes += size
    return plan


def _exactly(size: int, mtime_ns: int, item_size: int, item_mtime_ns: int) -> bool:
    return size == item_size and mtime_ns == item_mtime_ns


def _listed(lines: list[str]) -> list[str]:
    more = len(lines) - MAX_LISTED
    return lines[:MAX_LISTED] + ([f"... and {more} more"] if more > 0 else [])


def rclone_pass(
    spec: MirrorSpec,
    target: RcloneReached,
    agent: RcloneTarget | None,
    known: KnownTargets,
    *,
    dry_run: bool,
    force: bool,
    scanned: tuple[dict[str, Entry], list[str]] | None = None,
    listed: Listing | dict[str, Entry] | None = None,
    connect: Callable[[], RcloneTarget] | None = None,
) -> tuple[TargetOutcome, list[str]]:
    """One pass to target (agent None: the target root does not exist yet, for a dry run); the
    outcome and the source entries left out (symlinks, names a remote cannot hold).  `scanned`:
    the source's scan and `listed` the target's listing, when the caller made them already.
    With a Listing (`rclone lsf`'s) and `connect`, rcd is started only when there is work."""
    began = time.perf_counter()
    name = str(target)
    src, skipped = scanned if scanned is not None else scan_source(spec.source.path, spec.filter)
    quick = None
    if isinstance(listed, Listing):
        quick, listed = listed, listed.entries
    try:
        dst = listed if listed is not None else agent.listing() if agent is not None else {}
    except (RcError, TetherError) as e:
        return TargetOutcome(name, False, errors=[f"cannot list {name}: {e}"]), skipped
    same: Callable[[int, int, int, int], bool] = agent.same if agent is not None else _exactly
    if quick is not None:
        same = quick.same if agent is None else functools.partial(agent.same, at_least=quick.precision_ns)
    empty_dirs = agent.empty_dirs if agent is not None else True
    plan = plan_pass(src, dst, spec.filter, same, delete=spec.delete, empty_dirs=empty_dirs)
    out = TargetOutcome(name, True, files=len(plan.copy), deleted=len(plan.remove), bytes=plan.bytes)
    out.errors += [f"refused: {b}" for b in plan.blocked]
    out.ok = not plan.blocked
    if spec.delete and not force:
        lost = plan.destructive()
        if not src and plan.remove:
            out = TargetOutcome(name, False, refused=True, hint=target.empty_source_hint, errors=[
                                f"refused: the source is empty and mirroring would delete {len(plan.remove)} "
                                "entries on the target"])  # fmt: skip
            return out, skipped
        if lost and not known.has(target.key(), str(spec.source)):
            out = TargetOutcome(
                name, False, refused=True, changes=plan.itemized() if dry_run else [],
                errors=[f"refused: {known.stranger(target.key())} and mirroring would delete or overwrite "
                        f"{len(lost)} entries there; nothing was changed", *_listed(lost)],
                hint="check the target path; pass --force to make it an exact mirror, or --no-delete to keep "
                     "extra files",
            )  # fmt: skip
            return out, skipped
    if agent is None and connect is not None and not dry_run:
        if not (plan.copy or plan.remove or plan.mkdir):  # nothing to write: no rcd at all
            if spec.delete:
                known.add(target.key(), str(spec.source))
            out.seconds = time.perf_counter() - began
            return out, skipped
        try:
            agent = connect()
        except AgentError as e:
            return TargetOutcome(name, False, errors=[str(e)], hint=e.hint), skipped
        # judged again with what rcd says of the backend (its precision, whether it keeps empty dirs)
        return rclone_pass(spec, target, agent, known, dry_run=False, force=force, scanned=(src, skipped), listed=quick)
    if dry_run or agent is None:
        out.changes = plan.itemized()
        out.seconds = time.perf_counter() - began
        return out, skipped
    if spec.delete and not dst:  # an empty target is tether's from its first file: a pass that fails
        known.add(target.key(), str(spec.source))  # halfway (a file gone meanwhile) leaves no stranger's
    try:
        _apply(spec, agent, plan)
    except (RcError, TetherError, OSError) as e:
        out.ok = False
        out.errors.append(str(e))
        out.errors += _moved_on(spec.source.path, plan.copy, src)
        out.seconds = time.perf_counter() - began
        return out, skipped
    if spec.delete:
        known.add(target.key(), str(spec.source))
    out.seconds = time.perf_counter() - began
    return out, skipped


def _moved_on(root: str, rels: list[str], scanned: dict[str, Entry]) -> list[str]:
    """After a copy that failed: the files it was to send that changed or went since the scan,
    each named with why. rclone's copy job reports one error of many, and its words for a file
    that grew while read ("source file is being updated") do not name the file."""
    said = []
    for rel in rels:
        try:
            st = os.lstat(os.path.join(root, rel))
        except FileNotFoundError:
            said.append(f"{rel}: vanished during the pass")
            continue
        except OSError:
            continue
        _kind, size, mtime_ns = scanned.get(rel, ("f", -1, -1))
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            said.append(f"{rel}: changed while it was sent; left for the next pass")
    return said


def _apply(spec: MirrorSpec, agent: RcloneTarget, plan: Plan) -> None:
    """Deletes (or trash moves) first, then the versions a copy replaces (trash mode), then one copy."""
    if plan.remove:
        if spec.trash:
            r = agent.call("trash", paths=[p for p, _ in plan.remove], trash_root=VERSIONS)
        else:
            r = agent.call("remove", paths=[p for p, _ in plan.remove])
        if r.get("failed"):
            raise TetherError("; ".join(str(f["error"]) for f in r["failed"][:3]))
    if spec.trash and plan.replace:
        with agent._lock:
            agent.keep_versions(plan.replace, VERSIONS)
    crashpoint("rclone.before_copy")
    for d in plan.mkdir:
        agent.call("mkdir", path=d)
    with agent._lock:
        agent.copy_files(spec.source.path, plan.copy, plan.bytes)


def one_shot(mirror: Mirror, spec: MirrorSpec, target: RcloneReached, *, dry_run: bool, force: bool) -> TargetOutcome:
    """`tether mirror`/`tether sync` to an rclone remote: listed by `rclone lsf` (see
    transport/rclone_lsf.py) while the source is walked in a forked child (a walk in this process
    would hand the GIL back and forth with the listing's parse at every stat); its own rcd for
    this pass when there is something to write, or when lsf could not list."""
    check_source(spec.source)
    quick = rclone_lsf.take(rclone_program(), target.fs)
    scanning = rclone_scan.take(spec.source.path, spec.filter)
    agents: list[RcloneTarget] = []
    waited = False  # for the walk: else it is cancelled on the way out

    def connect() -> RcloneTarget:
        agents.append(target.open_target(create=not dry_run, version_later=True))
        agents[-1].check_version()  # before anything is written
        return agents[-1]

    try:
        listed: Listing | dict[str, Entry] | None = quick.result()
        if listed is None:  # rcd lists, and says why lsf could not
            try:
                with contextlib.suppress(RcError, TetherError):  # reported by the pass, which lists again
                    listed = connect().listing()
            except AgentError as e:
                if not (dry_run and e.errno == 2):
                    return TargetOutcome(str(target), False, errors=[str(e)], hint=e.hint)
                listed = {}  # a dry run to a target not made yet: everything would be sent
        waited = True
        try:
            scanned: tuple[dict[str, Entry], list[str]] = scanning()
        except TetherError:  # the child failed: walk here, where its error is raised as it is
            scanned = scan_source(spec.source.path, spec.filter)
        agent = agents[0] if agents else None
        if agent is not None and mirror.verbose:
            mirror.verbose(agent.capabilities_note())
        out, skipped = rclone_pass(
            spec, target, agent, mirror.known, dry_run=dry_run, force=force, scanned=scanned, listed=listed,
            connect=connect if agent is None else None,
        )  # fmt: skip
        if mirror.verbose and isinstance(listed, Listing):
            said = agents[0].capabilities_note() if agents else "nothing to write, so no rcd was started"
            mirror.verbose(f"{target}: listed by rclone lsf, mtimes to {precision_text(listed.precision_ns)}; {said}")
    finally:
        quick.cancel()
        if not waited:
            scanning.cancel()
        for agent in agents:
            agent.close()
    if skipped:
        out.ok = False
        out.errors += _listed(skipped)
        out.hint = out.hint or "exclude them, or rename them, to mirror to this remote"
    return out
