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

import concurrent.futures
import contextlib
import logging
import os
import stat
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from tether.apply import Applier, BatchResult
from tether.config import LiveOptions
from tether.crashpoints import crashpoint
from tether.endpoints import Endpoint, Rclone
from tether.errors import TetherError
from tether.filters import Filter
from tether.forked import forked
from tether.hooks import NO_HOOKS, PassClock, PassHooks
from tether.mirror import MAX_LISTED, VERSIONS, Mirror, MirrorSpec, TargetOutcome, check_source
from tether.ssh import SshOptions
from tether.state import KnownTargets
from tether.transport.agent import AgentError
from tether.transport.rclone_agent import _CONTROL, RcError
from tether.transport.rclone_target import RcloneTarget

log = logging.getLogger("tether")

Entry = tuple[str, int, int]  # (type "f" or "d", size, mtime_ns)
UNREAD: Entry = ("?", 0, 0)  # a source path that could not be read: the target's copy is left alone


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


def scan_source(root: str, flt: Filter, top: str = "") -> tuple[dict[str, Entry], list[str]]:
    """Every included entry below root (or below its subdirectory top, whose own path the caller
    checked), paths relative to root; what a remote cannot hold (symlinks, special files, some
    names) is left out, and what cannot be read is marked UNREAD: both listed in the second
    value with why, so nothing is dropped without a word."""
    entries: dict[str, Entry] = {}
    skipped: list[str] = []
    stack = [top]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(os.path.join(root, top) if top else root) as it:
                listing = list(it)
        except FileNotFoundError:
            continue
        except OSError as err:
            entries[top] = UNREAD
            skipped.append(f"skipped {_shown(top)}: {_unread(err)}")
            continue
        twins = _twins([e.name for e in listing])
        for e in listing:
            rel = f"{top}/{e.name}" if top else e.name
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as err:
                entries[rel] = UNREAD
                skipped.append(f"skipped {_shown(rel)}: {_unread(err)}")
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if flt.excluded(rel, is_dir):
                continue
            why = _unstorable(rel) or twins.get(e.name) or _untyped(st.st_mode)
            if why is None and stat.S_ISREG(st.st_mode) and not os.access(e.path, os.R_OK):
                entries[rel] = UNREAD
                why = _unread(PermissionError(13, os.strerror(13)))
            if why is not None:
                skipped.append(f"skipped {_shown(rel)}: {why}")
            elif is_dir:
                entries[rel] = ("d", 0, 0)
                stack.append(rel)
            else:
                entries[rel] = ("f", st.st_size, st.st_mtime_ns)
    return entries, skipped


def _shown(rel: str) -> str:
    """A path on one line: bytes that are not UTF-8 and control characters escaped."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _unread(err: OSError) -> str:
    return f"cannot be read ({err.strerror}); what the target holds there is left alone"


def _untyped(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "a symlink (rclone remotes hold no symlinks)"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file or directory (rclone remotes hold neither devices, FIFOs nor sockets)"
    return None


def _twins(names: list[str]) -> dict[str, str]:
    """Names of one folder that equal another once Unicode-normalised: rclone takes them for one
    name, so one would overwrite the other; the NFC spelling goes, the others are left out."""
    by_key: dict[str, list[str]] = {}
    for n in names:
        by_key.setdefault(unicodedata.normalize("NFC", n), []).append(n)
    out: dict[str, str] = {}
    for key, group in by_key.items():
        if len(group) > 1:
            kept = key if key in group else min(group)
            for n in group:
                if n != kept:
                    out[n] = f"the same name as {_shown(kept)} once Unicode-normalised (rclone takes them for one)"
    return out


def _unstorable(rel: str) -> str | None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 (rclone remotes keep UTF-8 names)"
    if _CONTROL.search(rel):
        return "a control character in the name (rclone's encodings do not keep it)"
    return None


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
    target: Rclone,
    agent: RcloneTarget | None,
    known: KnownTargets,
    *,
    dry_run: bool,
    force: bool,
    scanned: tuple[dict[str, Entry], list[str]] | None = None,
    listed: dict[str, Entry] | None = None,
) -> tuple[TargetOutcome, list[str]]:
    """One pass to target (agent None: the target root does not exist yet, for a dry run); the
    outcome and the source entries left out (symlinks, names a remote cannot hold).  `scanned`:
    the source's scan and `listed` the target's listing, when the caller made them already."""
    began = time.perf_counter()
    name = str(target)
    src, skipped = scanned if scanned is not None else scan_source(spec.source.path, spec.filter)
    try:
        dst = listed if listed is not None else agent.listing() if agent is not None else {}
    except (RcError, TetherError) as e:
        return TargetOutcome(name, False, errors=[f"cannot list {name}: {e}"]), skipped
    same: Callable[[int, int, int, int], bool] = agent.same if agent is not None else _exactly
    empty_dirs = agent.empty_dirs if agent is not None else True
    plan = plan_pass(src, dst, spec.filter, same, delete=spec.delete, empty_dirs=empty_dirs)
    out = TargetOutcome(name, True, files=len(plan.copy), deleted=len(plan.remove), bytes=plan.bytes)
    out.errors += [f"refused: {b}" for b in plan.blocked]
    out.ok = not plan.blocked
    if spec.delete and not force:
        lost = plan.destructive()
        if not src and plan.remove:
            out = TargetOutcome(name, False, refused=True, hint="is the source's disk mounted? pass --force if "
                                "the target really should be emptied", errors=[
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
        out.seconds = time.perf_counter() - began
        return out, skipped
    if spec.delete:
        known.add(target.key(), str(spec.source))
    out.seconds = time.perf_counter() - began
    return out, skipped


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


def one_shot(mirror: Mirror, spec: MirrorSpec, target: Rclone, *, dry_run: bool, force: bool) -> TargetOutcome:
    """`tether mirror`/`tether sync` to an rclone remote: its own rcd for this pass."""
    check_source(spec.source)

    def connect_and_list() -> tuple[RcloneTarget, dict[str, Entry] | Exception]:
        agent = RcloneTarget.connect(f"{target.remote}:", target.path, create=not dry_run, version_later=True)
        try:
            try:
                listed: dict[str, Entry] | Exception = agent.listing()
            except (RcError, TetherError) as e:  # reported by the pass, which lists again
                listed = e
            agent.check_version()  # before anything is written
        except BaseException:
            agent.close()
            raise
        return agent, listed

    # The source is walked in a forked child while a thread here starts rclone and reads its listing:
    # a walk in this process would hand the GIL back and forth with the listing's parse at every stat.
    scanning = forked(lambda: scan_source(spec.source.path, spec.filter))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        connecting = pool.submit(connect_and_list)
        try:
            try:
                scanned: tuple[dict[str, Entry], list[str]] = scanning()
            except TetherError:  # the child failed: walk here, where its error is raised as it is
                scanned = scan_source(spec.source.path, spec.filter)
        except BaseException:  # the walk failed: the target's rcd must not outlive the pass
            with contextlib.suppress(Exception):
                connecting.result()[0].close()
            raise
        listed: dict[str, Entry] | None = None
        try:
            agent, got = connecting.result()
            listed = got if isinstance(got, dict) else None
        except AgentError as e:
            if not (dry_run and e.errno == 2):
                return TargetOutcome(str(target), False, errors=[str(e)], hint=e.hint)
            agent = None  # a dry run to a target not made yet: everything would be sent
    try:
        if agent is not None and mirror.verbose:
            mirror.verbose(agent.capabilities_note())
        out, skipped = rclone_pass(
            spec, target, agent, mirror.known, dry_run=dry_run, force=force, scanned=scanned, listed=listed
        )
    finally:
        if agent is not None:
            agent.close()
    if skipped:
        out.ok = False
        out.errors += _listed(skipped)
        out.hint = out.hint or "exclude them, or rename them, to mirror to this remote"
    return out


class _RcloneSends(Mirror):
    """The Applier's bulk sends (new subtrees, big batches) as one sync/copy through the agent."""

    def __init__(self, mirror: Mirror, applier: RcloneApplier) -> None:
        super().__init__(mirror.rsync, mirror.known, verbose=mirror.verbose)
        self.applier = applier

    def _files_below(self, spec: MirrorSpec, paths: list[str]) -> tuple[list[str], list[str], int]:
        """(files, empty dirs, bytes) at or below these source paths, as the filter admits them."""
        files: list[str] = []
        dirs: list[str] = []
        size = 0
        for top in paths:
            full = os.path.join(spec.source.path, top)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(top)
                size += st.st_size
            elif stat.S_ISDIR(st.st_mode) and not spec.filter.path_excluded(top, True):
                below, _skipped = scan_source(spec.source.path, spec.filter, top)
                files += [p for p, e in below.items() if e[0] == "f"]
                size += sum(e[1] for e in below.values())
                parents = {p.rpartition("/")[0] for p in below} | {top.rpartition("/")[0]}
                dirs += [p for p, e in [(top, ("d", 0, 0)), *below.items()] if e[0] == "d" and p not in parents]
        return files, dirs, size

    def _send(self, spec: MirrorSpec, paths: list[str]) -> TargetOutcome:
        agent = self.applier.rclone_agent()
        files, dirs, size = self._files_below(spec, paths)
        out = TargetOutcome(str(self.applier.target), True, files=len(files), bytes=size)
        try:
            if spec.trash:
                with agent._lock:
                    agent.keep_versions(files, VERSIONS)
            if agent.empty_dirs:
                for d in dirs:
                    agent.call("mkdir", path=d)
            with agent._lock:
                agent.copy_files(spec.source.path, files, size)
        except (RcError, TetherError, OSError) as e:
            out.ok = False
            out.errors.append(str(e))
        return out

    def send_paths(self, spec: MirrorSpec, target: object, paths: list[str], *, changed: bool = False) -> TargetOutcome:
        return self._send(spec, paths)

    def send_subtree(self, spec: MirrorSpec, target: object, rel: str) -> TargetOutcome:
        return self._send(spec, [rel])


class RcloneApplier(Applier):
    """The continuous mirror's Applier for an rclone target: the same agent words, an RcloneTarget
    behind them, and bulk sends and full passes through its rcd."""

    def __init__(
        self,
        target: Rclone,
        spec: MirrorSpec,
        opts: LiveOptions,
        mirror: Mirror,
        ssh: SshOptions,
        pass_hooks: PassHooks = NO_HOOKS,
    ) -> None:
        # the base class hands its target only to the Mirror's rsync runs, which _RcloneSends replaces
        super().__init__(cast(Endpoint, target), spec, opts, mirror, ssh, pass_hooks)
        self.rclone = target
        self.known = mirror.known
        self.mirror = _RcloneSends(mirror, self)
        self._said: set[str] = set()  # what was logged once for this job run

    def _once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            if text.startswith("skipped"):
                log.warning("%s: %s", self.target, text)
            else:
                log.info("%s", text)

    def rclone_agent(self) -> RcloneTarget:
        if self._agent is None:
            agent = RcloneTarget.connect(f"{self.rclone.remote}:", self.rclone.path, create=True)
            self._agent = agent
            self._once(agent.capabilities_note())
            if self.spec.bwlimit:
                self._once(f"{self.target}: bwlimit is not applied to rclone targets")
        assert isinstance(self._agent, RcloneTarget)
        return self._agent

    def agent(self) -> RcloneTarget:
        return self.rclone_agent()

    def _full_pass(self, clock: PassClock, checksum: bool = False) -> BatchResult:
        """(`checksum` is not honoured here: a remote's hashes are its backend's own, and a
        pass through rcd compares what the backend keeps, size and mtime; nor is the clock:
        one pass is one batch of calls.)"""
        out, skipped = rclone_pass(self.spec, self.rclone, self.agent(), self.known, dry_run=False, force=False)
        for s in skipped:
            self._once(s)
        if not out.ok:
            raise TetherError("; ".join(out.errors) or "full pass failed", out.hint)
        if self.spec.trash:
            self.agent().call("prune_versions", versions_root=VERSIONS, days=self.opts.trash_days)
        return BatchResult(out.files, out.bytes)

    def _as_in_source(self, rel: str, moved: dict[str, object]) -> bool:
        """As for other targets, with mtimes compared as far as the backend keeps them."""
        try:
            st = os.lstat(os.path.join(self.src, rel))
        except FileNotFoundError:
            return True
        if stat.S_ISDIR(st.st_mode):
            return moved.get("type") == "d"
        if moved.get("type") != "f" or not stat.S_ISREG(st.st_mode):
            return False
        size, mtime = moved.get("size"), moved.get("mtime_ns")
        if not isinstance(size, int) or not isinstance(mtime, int):
            return False
        return self.agent().same(st.st_size, st.st_mtime_ns, size, mtime)

    def _fix_dirs(self, dirs: set[str]) -> None:
        """A remote keeps no directory modes; the mirror compares files."""

    def _fold_trash(self) -> None:
        """Versions are moved into the trash as they are replaced: nothing to file afterwards."""

    def _housekeeping(self, paths: list[str], recursive: bool) -> None:
        """permissions and owners are refused for rclone targets when the job is loaded."""

    def final_owner(self) -> None:
        """As _housekeeping."""
