"""How one batch of changes reaches one target: moves and deletes through the agent, small
files inside the agent channel, new subtrees and big files by rsync.

The agent is one persistent connection per target (in-process for local targets), so a
small change costs a round trip of about a millisecond instead of an ssh command.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tether import hooks
from tether.agent_remote import read_meta
from tether.config import LiveOptions
from tether.crashpoints import crashpoint
from tether.endpoints import Endpoint
from tether.errors import TetherError
from tether.hooks import NO_HOOKS, PassClock, PassHooks
from tether.leafdirs import dirs_below
from tether.mirror import INCOMING, VERSIONS, Mirror, MirrorSpec
from tether.ssh import SshOptions
from tether.transport.agent import AgentClient, AgentError
from tether.watch import Change

log = logging.getLogger("tether")

SMALL_FILE = 256 * 1024  # up to this size a file travels inside the agent channel
AGENT_BATCH = 256  # more files than this in one batch go to one rsync run instead
SUBTREE_RUNS = 4  # up to this many new directories are sent by one plain rsync run each


SLOW_PASS_S = 10.0  # a full pass that takes this long says where its time went


class _Laps:
    """Where a pass's time went, step by step: for a slow pass, the step to look at."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self._start = self._last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps.append((step, now - self._last))
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._start

    def __str__(self) -> str:
        return ", ".join(f"{step} {took:.1f} s" for step, took in self.steps)


@dataclass
class BatchResult:
    files: int = 0
    bytes: int = 0
    touched_dirs: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # per file, the rest arrived: what a target refused to keep


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _below_any(path: str, tops: set[str]) -> bool:
    """Whether path is one of tops or lies below one."""
    if not tops:
        return False
    parts = path.split("/")
    return any("/".join(parts[:i]) in tops for i in range(1, len(parts) + 1))


def _digest(path: str) -> str | None:
    """The agent's `hash` of a local file (blake2b, 20 bytes, hex); None if it cannot be read."""
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class Applier:
    """Applies coalesced changes to one target, through its agent and, for bulk, rsync."""

    def __init__(
        self,
        target: Endpoint,
        spec: MirrorSpec,
        opts: LiveOptions,
        mirror: Mirror,
        ssh: SshOptions,
        pass_hooks: PassHooks = NO_HOOKS,
    ) -> None:
        self.target, self.spec, self.opts, self.mirror, self.ssh = target, spec, opts, mirror, ssh
        self.hooks = pass_hooks
        self.warning: str | None = None  # the last full pass's warnings (soft time limit, before), for its events
        self.src = spec.source.path
        self._agent: AgentClient | None = None
        # what the agent's writes carry besides mode and mtime (empty: nothing read, nothing sent)
        self.scope = [p for p in ("owner", "group", "acl", "xattr") if p in spec.preserve]
        self.links = "hardlinks" in spec.preserve

    # -- connection -------------------------------------------------------------------------
    def agent(self) -> AgentClient:
        if self._agent is None:
            self._agent = self.target.connector(self.ssh, self.opts.python, create=True)()
        return self._agent

    def degraded(self) -> str | None:
        """Why this target works only in part (a pool member away), to be looked at again; None
        when it is whole. A live worker then runs a full pass every RECHECK_S until it is."""
        return None

    def reset(self) -> None:
        if self._agent is not None:
            with contextlib.suppress(Exception):
                self._agent.close()
            self._agent = None

    def close(self) -> None:
        self.reset()

    # -- passes -----------------------------------------------------------------------------
    def full_pass(self, checksum: bool = False) -> BatchResult:
        """A full pass between the job's `before` and `after` commands, within its time limits
        (as a one-shot pass is): a `before` that fails and skips the pass, or a pass stopped at
        max_time_hard, raises, and the worker tries the full pass again. `checksum`: it stands in
        for changes the worker dropped, so files are compared by content, not by size and mtime."""
        remote = hooks.agent_runner(self.agent().call) if self.hooks.on == "targets" else None
        where = {"source": self.spec.source.path, "target": str(self.target)}
        before = self.hooks.run_before(remote, **where)
        if not before.go:
            raise TetherError(
                before.said or "before failed",
                'the full pass did not run; fix the command, remove `before`, or set before_fails = "continue"',
            )
        clock = self.hooks.clock()
        status, counts = "error", {}
        try:
            res = self._full_pass(clock, checksum)
            status, counts = "ok", {"sent": res.files, "bytes": res.bytes}
            return res
        except Exception:
            status = "stopped" if clock.over() else "error"
            raise
        finally:
            said = [w for w in (before.said, clock.soft_warning()) if w]
            self.warning = "; ".join(said) or None
            for w in said:
                log.warning("%s: %s", self.target, w)
            failed = self.hooks.run_after(status, counts, remote, **where)
            if failed:
                log.error("%s: %s", self.target, failed)

    def _full_pass(self, clock: PassClock, checksum: bool = False) -> BatchResult:
        started = time.time_ns()
        laps = _Laps()
        # connected now, off the path of the first change; and a target that holds anything is
        # looked at before the first pass writes to it (one round trip tells which)
        empty = bool(self.agent().call("empty")["empty"])
        laps.lap("connect")
        outcome = self.mirror.sync_target(
            self.spec, self.target, dry_run=False, force=False, clock=clock, watched=True, checksum=checksum,
            target_empty=empty,
        )  # fmt: skip
        laps.lap("rsync")
        crashpoint("live.full_pass")
        self._fold_trash()  # also what an earlier run left there (a crash, a failed fold)
        laps.lap("filing versions")
        if not outcome.ok:
            raise TetherError("; ".join(outcome.errors) or "full pass failed", outcome.hint)
        # rsync sets a directory's mtime as it was when listed: dirs changed just before or
        # during the pass get theirs set again, exactly
        self._fix_dirs({d for d in self._dirs_below("") if self._mtime_ns(d) >= started - 2_000_000_000})
        laps.lap("directory times")
        self._housekeeping(["."], recursive=True)
        laps.lap("housekeeping")
        if self.spec.trash:
            self.agent().call("prune_versions", versions_root=VERSIONS, days=self.opts.trash_days)
            laps.lap("pruning versions")
        if laps.total >= SLOW_PASS_S:
            log.info("%s: the full pass took %.1f s: %s", self.target, laps.total, laps)
        return BatchResult(outcome.files, outcome.bytes)

    def apply(self, changes: Sequence[Change]) -> BatchResult:
        """Apply in order, grouping runs of the same kind into one round trip each.

        coalesce() puts moves and deletes first and writes last; writes that stand in for a
        move the target could not make join the writes, after every move and delete.
        """
        res = BatchResult()
        changes = self._pair_moves(changes)
        writes: list[Change] = []
        i = 0
        while i < len(changes):
            kind = changes[i].kind
            j = i
            while j < len(changes) and changes[j].kind == kind:
                j += 1
            group = changes[i:j]
            if kind == "move":
                writes += self._moves(group, res)
            elif kind == "delete":
                self._deletes(group, res)
            elif kind == "write":
                writes += group
            i = j
        crashpoint("live.before_writes")
        if writes:
            self._writes(writes, res)
        self._fix_dirs(res.touched_dirs)
        return res

    def _pair_moves(self, changes: Sequence[Change]) -> list[Change]:
        """Recover moves inotify could not pair: a file moved into a directory created the same
        instant arrives as a delete plus a new subtree. A deleted target file whose name, size and
        mtime match a file of the new subtree, and whose bytes are that file's, is moved there
        instead of deleted and re-sent."""
        deletes = [c.path for c in changes if c.kind == "delete"]
        subtrees = [c.path for c in changes if c.kind == "write" and c.is_dir]
        if not deletes or not subtrees or len(deletes) > 10_000:
            return list(changes)
        candidates: dict[tuple[str, int, int], str | None] = {}
        for top in subtrees:
            for dirpath, _dirs, files in os.walk(os.path.join(self.src, top)):
                for name in files:
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(full)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        key = (name, st.st_size, st.st_mtime_ns)
                        rel = os.path.relpath(full, self.src)
                        candidates[key] = None if key in candidates else rel  # ambiguous: no guess
        if not candidates:
            return list(changes)
        found = self.agent().call("stat", paths=deletes)["entries"]
        moved: dict[str, str] = {}
        for old, st in zip(deletes, found, strict=True):
            if st.get("type") == "f":
                new = candidates.get((old.rpartition("/")[2], st["size"], st["mtime_ns"]))
                if new and new not in moved.values():
                    moved[old] = new
        if moved:
            # name, size and mtime are only a guess (archives give whole-second mtimes): a move
            # happens only where the target's old file holds the bytes the source's new one does
            theirs = self.agent().call("hash", paths=list(moved))["digests"]
            moved = {old: new for (old, new), d in zip(moved.items(), theirs, strict=True)
                     if d is not None and d == _digest(os.path.join(self.src, new))}  # fmt: skip
        if not moved:
            return list(changes)
        # each move takes its delete's place: its old path is valid exactly there
        return [Change("move", moved[c.path], False, old=c.path) if c.kind == "delete" and c.path in moved else c
                for c in changes]  # fmt: skip

    def _trash_arg(self) -> dict[str, object]:
        """For the agent's put, symlink and move: with trash on, what they replace is kept."""
        return {"trash_root": VERSIONS} if self.spec.trash else {}

    def _fold_trash(self) -> None:
        """rsync kept what it replaced in INCOMING: file it in the versions tree."""
        if self.spec.trash:
            r = self.agent().call("fold_trash", path=INCOMING, trash_root=VERSIONS)
            for f in r.get("failed", []):
                log.warning("%s: kept version %s stays in %s: %s", self.target, f["path"], INCOMING, f["error"])

    def _moves(self, group: Sequence[Change], res: BatchResult) -> list[Change]:
        """Moves on the target; those it cannot make (it never had the old path) become writes."""
        extra = self._trash_arg()
        replies = self.agent().pipeline([("move", {"old": c.old, "new": c.path, **extra}, b"") for c in group])
        fallback: list[Change] = []
        for c, r in zip(group, replies, strict=True):
            if isinstance(r, AgentError):
                raise r
            res.touched_dirs.update({_parent(c.path), _parent(c.old or "")})
            if not r.get("moved") or not self._as_in_source(c.path, r):
                fallback.append(Change("write", c.path, True))
        if self.scope:
            gone = {c.path for c in fallback}
            self._refresh_meta([c.path for c in group if c.path not in gone], res)
        return fallback

    def _refresh_meta(self, paths: list[str], res: BatchResult) -> None:
        """Mode, owner and xattrs of moved entries as the source has them now. A chown or setfacl
        made just before the rename was reported under the old name, which the write could not
        find any more: the move carried the target's older metadata (mtime and size cannot tell)."""
        requests: list[tuple[str, dict[str, object], bytes]] = []
        for rel in paths:
            full = os.path.join(self.src, rel)
            try:
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    meta = read_meta(b"", st, self.scope)
                else:
                    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                    try:
                        meta = read_meta(fd, st, self.scope)
                    finally:
                        os.close(fd)
            except FileNotFoundError:
                continue  # moved or deleted again: those events follow
            except OSError as e:
                res.errors.append(f"{rel}: cannot read its metadata: {e.strerror}")
                continue
            mode = None if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
            requests.append(("set_meta", {"path": rel, "mode": mode, "meta": meta}, b""))
        for r in self.agent().pipeline(requests) if requests else []:
            if isinstance(r, AgentError):
                if r.errno != 2:
                    raise r
                continue
            res.errors += r.get("meta_errors", [])

    def _as_in_source(self, rel: str, moved: dict[str, object]) -> bool:
        """Whether what a move put at rel is what the source has there (type, mtime; size for a
        non-dir). A write executed after the source had moved on (it copies the source as it
        is then: a full pass running during the changes, a late batch) may have put the
        newer entry under the old name, which the move then carried here: re-send it."""
        try:
            st = os.lstat(os.path.join(self.src, rel))
        except FileNotFoundError:
            return True  # gone again: its delete is on the way
        kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
        if moved.get("type") != kind or moved.get("mtime_ns") != st.st_mtime_ns:
            return False
        return kind == "d" or moved.get("size") == st.st_size

    def _deletes(self, group: Sequence[Change], res: BatchResult) -> None:
        paths = [c.path for c in group]
        res.touched_dirs.update(_parent(p) for p in paths)
        if not self.spec.delete:
            return
        if self.spec.trash:
            r = self.agent().call("trash", paths=paths, trash_root=VERSIONS)
        else:
            r = self.agent().call("remove", paths=paths)
        if r.get("failed"):  # left on the target: say so, and let a full pass try again
            first = r["failed"][0]
            more = f" (and {len(r['failed']) - 1} more)" if len(r["failed"]) > 1 else ""
            raise TetherError(f"{self.target}: {first['error']}{more}")

    def _writes(self, group: Sequence[Change], res: BatchResult) -> None:
        requests: list[tuple[str, dict[str, object], bytes]] = []
        bulk: list[str] = []
        new_dirs: set[str] = set()
        many = len(group) > AGENT_BATCH
        for c in group:
            if not c.path:
                continue  # the root's own metadata: the full pass keeps it
            full = os.path.join(self.src, c.path)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # gone again: its delete is on the way
            res.touched_dirs.add(_parent(c.path))
            if stat.S_ISDIR(st.st_mode):
                if c.is_dir:
                    bulk.append(c.path)
                    new_dirs.add(c.path)
                    # the new dirs get their mtimes from the agent afterwards, like any touched
                    # dir: files arriving below them during the run changed them again
                    res.touched_dirs.update(self._dirs_below(c.path))
                else:
                    d = {"path": c.path, "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
                    if self.scope and not self._meta_into(d, full, st):
                        continue
                    requests.append(("mkdir", d, b""))
            elif stat.S_ISLNK(st.st_mode):
                link = {"path": c.path, "target": os.readlink(full), "mtime_ns": st.st_mtime_ns, **self._trash_arg()}
                if self.scope:
                    link["meta"] = read_meta(b"", st, self.scope)
                requests.append(("symlink", link, b""))
            elif stat.S_ISREG(st.st_mode) and st.st_size <= SMALL_FILE and not many:
                if self.links and st.st_nlink > 1:
                    bulk.append(c.path)  # its other names must stay one file with it: rsync -H
                    continue
                args: dict[str, object] = {"path": c.path, "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
                try:
                    with open(full, "rb") as f:
                        data = f.read()
                        if self.scope:  # from the same open file as the bytes
                            args["meta"] = read_meta(f.fileno(), st, self.scope)
                except OSError as e:
                    log.warning("%s: cannot read %s: %s", self.target, c.path, e.strerror)
                    continue
                requests.append(("put", {**args, **self._trash_arg()}, data))
                res.bytes += len(data)
            else:
                bulk.append(c.path)
        if requests:
            for r in self.agent().pipeline(requests):
                if isinstance(r, AgentError):
                    raise r
                res.errors += r.get("meta_errors", [])
            res.files += sum(1 for op, _, _ in requests if op in ("put", "symlink"))
        if bulk:
            subtrees = [p for p in bulk if p in new_dirs]
            files = [p for p in bulk if not _below_any(p, new_dirs)]  # a subtree run sends those below it
            if self.links and files:
                files += self._linked_names(files)
            outs = []
            if not files and len(subtrees) <= SUBTREE_RUNS and not self.spec.filter.anchored:
                outs += [self.mirror.send_subtree(self.spec, self.target, p) for p in subtrees]
            elif subtrees:
                outs.append(self.mirror.send_paths(self.spec, self.target, subtrees))
            if files:  # changed files: sent whatever rsync's quick check would say
                outs.append(self.mirror.send_paths(self.spec, self.target, files, changed=True))
            self._fold_trash()
            for out in outs:
                if not out.ok:
                    raise TetherError("; ".join(out.errors) or "transfer failed", out.hint)
                res.files += out.files
                res.bytes += out.bytes
        self._housekeeping([c.path for c in group], recursive=False)

    def _meta_into(self, args: dict[str, object], full: str, st: os.stat_result) -> bool:
        """A directory's metadata into its request; False when it is gone again (its delete is
        on the way). One that cannot be read is said and made with its mode and mtime only."""
        try:
            fd = os.open(full, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                args["meta"] = read_meta(fd, st, self.scope)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning("%s: cannot read the metadata of %s: %s", self.target, full, e.strerror)
        return True

    def _linked_names(self, files: list[str]) -> list[str]:
        """The source's other names of the hard-linked files among files, so that one rsync -H
        run sends them together and the target keeps them one file. Found by walking the
        source: only when a job keeps hard links and a changed file has more than one name."""
        want: set[tuple[int, int]] = set()
        for rel in files:
            try:
                st = os.lstat(os.path.join(self.src, rel))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                want.add((st.st_dev, st.st_ino))
        if not want:
            return []
        have, more = set(files), []
        for dirpath, dirnames, names in os.walk(self.src):
            rel = os.path.relpath(dirpath, self.src)
            prefix = "" if rel == "." else rel + "/"
            dirnames[:] = [d for d in dirnames if not self.spec.filter.path_excluded(prefix + d, True)]
            for n in names:
                p = prefix + n
                if p in have or self.spec.filter.path_excluded(p, False):
                    continue
                try:
                    st = os.lstat(os.path.join(dirpath, n))
                except OSError:
                    continue
                if st.st_nlink > 1 and (st.st_dev, st.st_ino) in want:
                    more.append(p)
        return more

    def _dirs_below(self, top: str) -> list[str]:
        """`top` and the included directories below it (symlinks not followed)."""
        return dirs_below(self.src, top, lambda rel: self.spec.filter.path_excluded(rel, True))

    def _mtime_ns(self, rel: str) -> int:
        try:
            return os.lstat(os.path.join(self.src, rel)).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _fix_dirs(self, dirs: set[str]) -> None:
        """Give touched target dirs the source's mode and mtime again (writing inside changed them)."""
        requests: list[tuple[str, dict[str, object], bytes]] = []
        for d in sorted(dirs, key=len, reverse=True):
            if not d:
                continue  # the root's own mtime is the full pass's job
            try:
                st = os.lstat(os.path.join(self.src, d))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                requests.append(
                    ("set_meta", {"path": d or ".", "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}, b"")
                )
        if requests:
            for r in self.agent().pipeline(requests):
                if isinstance(r, AgentError) and r.errno != 2:
                    raise r

    def _housekeeping(self, paths: list[str], recursive: bool) -> None:
        """ACLs and ownership on what was synced (MiMi's permissions and sync_owner)."""
        if not (self.opts.permissions or self.opts.sync_owner) or not paths:
            return
        sudo = ["sudo", "-n"] if self.opts.sudo else []
        flag = ["-R"] if recursive else []
        if self.opts.permissions:
            self._run_on_target([*sudo, "setfacl", *flag, "-m", self.opts.permissions, "--", *paths])
        if self.opts.sync_owner:
            self._run_on_target([*sudo, "chown", *flag, "-h", self.opts.sync_owner, "--", *paths])

    def final_owner(self) -> None:
        if self.opts.final_owner:
            sudo = ["sudo", "-n"] if self.opts.sudo else []
            self._run_on_target([*sudo, "chown", "-R", "-h", self.opts.final_owner, "--", "."])

    def _run_on_target(self, argv: list[str]) -> None:
        r = self.agent().call("run", argv=argv, timeout=120)
        if r.get("rc") != 0:
            err = str(r.get("stderr", "")).strip()
            if "password is required" in err:
                raise TetherError(
                    f"{self.target}: sudo asks for a password for {argv[2]}",
                    "allow it with NOPASSWD in sudoers, or set sudo = false",
                )
            raise TetherError(f"{self.target}: {' '.join(argv[:3])}... failed: {err or 'exit ' + str(r.get('rc'))}")
