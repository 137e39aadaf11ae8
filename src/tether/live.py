"""The continuous mirror: watch the source, push each change to every target independently.

    Watcher -> Coalescer -> (one queue per target) -> TargetWorker -> Applier -> agent | rsync

Each target has its own thread and queue, so a slow or unreachable target never delays the
others. A failed batch is never retried piecemeal: the target is marked for a full pass,
which converges whatever was lost (moves included) once the target is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tether.config import LiveOptions
from tether.endpoints import Endpoint, Ssh
from tether.errors import TetherError
from tether.mirror import TRASH, Mirror, MirrorSpec
from tether.service.status import DOWN, IDLE, RETRYING, SYNCING, StatusBoard, TargetStatus
from tether.ssh import SshOptions
from tether.transport.agent import AgentClient, AgentDown, AgentError
from tether.watch import Change, Coalescer, Watcher, coalesce

log = logging.getLogger("tether")

SMALL_FILE = 256 * 1024  # up to this size a file travels inside the agent channel
AGENT_BATCH = 256  # more files than this in one batch go to one rsync run instead
QUEUE_LIMIT = 50_000  # more pending changes than this: a full pass is cheaper than the list
BACKOFF_MAX = 10.0
SUBTREE_RUNS = 4  # up to this many new directories are sent by one plain rsync run each
SETTLE = 0.1  # a bulk batch waits for this much quiet: one transfer for a whole burst
SETTLE_MAX = 5.0  # but never longer than this, for sources that are never quiet


@dataclass
class BatchResult:
    files: int = 0
    bytes: int = 0
    touched_dirs: set[str] = field(default_factory=set)


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


class Applier:
    """Applies coalesced changes to one target, through its agent and, for bulk, rsync."""

    def __init__(self, target: Endpoint, spec: MirrorSpec, opts: LiveOptions, mirror: Mirror, ssh: SshOptions) -> None:
        self.target, self.spec, self.opts, self.mirror, self.ssh = target, spec, opts, mirror, ssh
        self.src = spec.source.path
        self._agent: AgentClient | None = None

    # -- connection -------------------------------------------------------------------------
    def agent(self) -> AgentClient:
        if self._agent is None:
            if isinstance(self.target, Ssh):
                self._agent = AgentClient.connect_ssh(
                    self.ssh, self.target.host, self.target.path or ".", python=self.opts.python, create=True
                )
            else:
                self._agent = AgentClient.local(self.target.path, create=True)
        return self._agent

    def reset(self) -> None:
        if self._agent is not None:
            with contextlib.suppress(Exception):
                self._agent.close()
            self._agent = None

    def close(self) -> None:
        self.reset()

    # -- passes -----------------------------------------------------------------------------
    def full_pass(self) -> BatchResult:
        started = time.time_ns()
        self.agent()  # connected now, off the path of the first change
        outcome = self.mirror.sync_target(self.spec, self.target, dry_run=False, force=False)
        if not outcome.ok:
            raise TetherError("; ".join(outcome.errors) or "full pass failed", outcome.hint)
        # rsync does not reset a directory's mtime that differs only below the second, so dirs
        # changed just before or during the pass get theirs set exactly
        self._fix_dirs({d for d in self._dirs_below("") if self._mtime_ns(d) >= started - 2_000_000_000})
        self._housekeeping(["."], recursive=True)
        if self.spec.trash:
            self.agent().call("purge_trash", trash_root=TRASH, days=self.opts.trash_days)
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
        if writes:
            self._writes(writes, res)
        self._fix_dirs(res.touched_dirs)
        return res

    def _pair_moves(self, changes: Sequence[Change]) -> list[Change]:
        """Recover moves inotify could not pair: a file moved into a directory created the same
        instant arrives as a delete plus a new subtree. A deleted target file whose name, size and
        mtime match a file of the new subtree is moved there instead of deleted and re-sent."""
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
        if not moved:
            return list(changes)
        # each move takes its delete's place: its old path is valid exactly there
        return [Change("move", moved[c.path], False, old=c.path) if c.kind == "delete" and c.path in moved else c
                for c in changes]  # fmt: skip

    def _moves(self, group: Sequence[Change], res: BatchResult) -> list[Change]:
        """Moves on the target; those it cannot make (it never had the old path) become writes."""
        replies = self.agent().pipeline([("move", {"old": c.old, "new": c.path}, b"") for c in group])
        fallback: list[Change] = []
        for c, r in zip(group, replies, strict=True):
            if isinstance(r, AgentError):
                raise r
            res.touched_dirs.update({_parent(c.path), _parent(c.old or "")})
            if not r.get("moved"):
                fallback.append(Change("write", c.path, True))
        return fallback

    def _deletes(self, group: Sequence[Change], res: BatchResult) -> None:
        paths = [c.path for c in group]
        res.touched_dirs.update(_parent(p) for p in paths)
        if not self.spec.delete:
            return
        if self.spec.trash:
            self.agent().call("trash", paths=paths, trash_root=TRASH)
        else:
            self.agent().call("remove", paths=paths)

    def _writes(self, group: Sequence[Change], res: BatchResult) -> None:
        requests: list[tuple[str, dict[str, object], bytes]] = []
        bulk: list[str] = []
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
                    # rsync leaves a directory's mtime alone when it is within the same second,
                    # so the new dirs get theirs from the agent afterwards, like any touched dir
                    res.touched_dirs.update(self._dirs_below(c.path))
                else:
                    requests.append(
                        ("mkdir", {"path": c.path, "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}, b"")
                    )
            elif stat.S_ISLNK(st.st_mode):
                requests.append(
                    ("symlink", {"path": c.path, "target": os.readlink(full), "mtime_ns": st.st_mtime_ns}, b"")
                )
            elif stat.S_ISREG(st.st_mode) and st.st_size <= SMALL_FILE and not many:
                try:
                    with open(full, "rb") as f:
                        data = f.read()
                except OSError as e:
                    log.warning("%s: cannot read %s: %s", self.target, c.path, e.strerror)
                    continue
                args: dict[str, object] = {"path": c.path, "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
                requests.append(("put", args, data))
                res.bytes += len(data)
            else:
                bulk.append(c.path)
        if requests:
            for r in self.agent().pipeline(requests):
                if isinstance(r, AgentError):
                    raise r
            res.files += sum(1 for op, _, _ in requests if op in ("put", "symlink"))
        if bulk:
            subtrees = [p for p in bulk if os.path.isdir(os.path.join(self.src, p))]
            if len(subtrees) == len(bulk) and len(bulk) <= SUBTREE_RUNS and not self.spec.filter.anchored:
                outs = [self.mirror.send_subtree(self.spec, self.target, p) for p in bulk]
            else:
                outs = [self.mirror.send_paths(self.spec, self.target, bulk)]
            for out in outs:
                if not out.ok:
                    raise TetherError("; ".join(out.errors) or "transfer failed", out.hint)
                res.files += out.files
                res.bytes += out.bytes
        self._housekeeping([c.path for c in group], recursive=False)

    def _dirs_below(self, top: str) -> list[str]:
        out = [top]
        for dirpath, dirnames, _ in os.walk(os.path.join(self.src, top) if top else self.src):
            rel = os.path.relpath(dirpath, self.src)
            prefix = "" if rel == "." else rel + "/"
            kept = [d for d in dirnames if not self.spec.filter.path_excluded(prefix + d, True)]
            dirnames[:] = kept
            out += [prefix + d for d in kept]
        return out

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


def _is_bulk(batch: Sequence[Change]) -> bool:
    return len(batch) > AGENT_BATCH or any(c.kind == "write" and c.is_dir for c in batch)


class TargetWorker(threading.Thread):
    def __init__(self, applier: Applier, status: TargetStatus, board: StatusBoard, stopping: threading.Event) -> None:
        super().__init__(name=f"target {applier.target}", daemon=True)
        self.applier, self.status, self.board, self.stopping = applier, status, board, stopping
        self.cond = threading.Condition()
        self.pending: list[Change] = []
        self.full = False
        self.last_submit = 0.0

    def submit(self, changes: Sequence[Change]) -> None:
        with self.cond:
            self.last_submit = time.monotonic()
            if any(c.kind == "rescan" for c in changes) or len(self.pending) + len(changes) > QUEUE_LIMIT:
                self.pending.clear()
                self.full = True
            elif not self.full:
                self.pending.extend(changes)
            self.board.update(self.status, pending=len(self.pending))
            self.cond.notify()

    def request_full(self) -> None:
        with self.cond:
            self.pending.clear()
            self.full = True
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def _settle(self, batch: list[Change], full: bool) -> tuple[list[Change], bool]:
        """Let a burst finish before a bulk transfer, so that it travels in one rsync run."""
        deadline = time.monotonic() + SETTLE_MAX
        with self.cond:
            while not self.stopping.is_set():
                quiet = time.monotonic() - self.last_submit
                if quiet >= SETTLE or time.monotonic() >= deadline:
                    break
                self.cond.wait(SETTLE - quiet)
            batch += self.pending
            self.pending = []
            full = full or self.full
            self.full = False
        return ([] if full else batch), full

    def run(self) -> None:
        backoff = 0.0
        while True:
            with self.cond:
                while not self.stopping.is_set() and not self.pending and not self.full:
                    self.cond.wait()
                if self.stopping.is_set():
                    break
                batch, self.pending = self.pending, []
                full, self.full = self.full, False
            if (full or _is_bulk(batch)) and self.status.full_passes:
                batch, full = self._settle(batch, full)
            self.board.update(self.status, state=SYNCING, pending=len(batch))
            began = time.monotonic()
            try:
                res = self.applier.full_pass() if full else self.applier.apply(coalesce(batch))
            except (AgentDown, AgentError, TetherError, OSError) as e:
                self.applier.reset()
                down = isinstance(e, AgentDown) or "connection" in str(e) or "unreachable" in str(e)
                backoff = min(BACKOFF_MAX, backoff * 2 or 0.5)
                msg = str(e).splitlines()[0]
                log.warning(
                    "%s: %s (%s; retry in %.1f s)", self.applier.target, msg, "down" if down else "error", backoff
                )
                with self.cond:
                    self.full = True  # whatever this batch held, a full pass will converge it
                self.board.update(
                    self.status, state=DOWN if down else RETRYING, last_error=msg, last_error_at=time.time(), force=True
                )
                with self.cond:
                    self.cond.wait_for(self.stopping.is_set, timeout=backoff)
                continue
            backoff = 0.0
            st = self.status
            with self.cond:
                left = len(self.pending)
            if full:
                st.full_passes += 1
                log.info("%s: full pass done (%d files, %d bytes) in %.3f s", self.applier.target, res.files, res.bytes,
                         time.monotonic() - began)  # fmt: skip
            elif res.files or len(batch) > 1:
                log.info("%s: %d changes: sent %d files (%d bytes) in %.3f s", self.applier.target, len(batch),
                         res.files, res.bytes, time.monotonic() - began)  # fmt: skip
            self.board.update(
                st, state=IDLE if not left else SYNCING, last_success=time.time(), pending=left,
                bytes_sent=st.bytes_sent + res.bytes, files_sent=st.files_sent + res.files, force=True,
            )  # fmt: skip


class LiveMirror:
    """Owns the watcher and one worker per target until stopped."""

    def __init__(
        self,
        spec: MirrorSpec,
        opts: LiveOptions,
        mirror: Mirror,
        ssh: SshOptions,
        board: StatusBoard,
        on_batch: Callable[[list[Change]], None] | None = None,
    ) -> None:
        self.spec, self.opts, self.board = spec, opts, board
        self.stopping = threading.Event()
        self.on_batch = on_batch
        self.workers = []
        for t in spec.targets:
            st = TargetStatus(str(t))
            board.status.targets.append(st)
            self.workers.append(TargetWorker(Applier(t, spec, opts, mirror, ssh), st, board, self.stopping))

    def run(self) -> None:
        watcher = Watcher(self.spec.source.path, self.spec.filter)
        watcher.start()  # before the first full pass, so nothing written during it is missed
        self.board.update(state="running", watches=watcher.watch_count, force=True)
        log.info("watching %s (%d directories)", self.spec.source, watcher.watch_count)
        for w in self.workers:
            w.request_full()
            w.start()
        coalescer = Coalescer(watcher, delay=self.opts.delay)
        next_full = time.monotonic() + self.opts.interval if self.opts.interval else None
        try:
            while not self.stopping.is_set():
                wait = 0.5 if next_full is None else max(0.0, min(0.5, next_full - time.monotonic()))
                batch = coalescer.next_batch(timeout=wait)
                if batch:
                    if self.on_batch:
                        self.on_batch(batch)
                    for w in self.workers:
                        w.submit(batch)
                if next_full is not None and time.monotonic() >= next_full:
                    log.info("periodic full pass")
                    for w in self.workers:
                        w.request_full()
                    next_full = time.monotonic() + self.opts.interval
        finally:
            watcher.close()
            self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        for w in self.workers:
            w.wake()
        for w in self.workers:
            if w.is_alive():
                w.join(timeout)
        for w in self.workers:
            try:
                w.applier.final_owner()
            except (TetherError, AgentError, AgentDown, OSError) as e:
                log.warning("%s: final owner not set: %s", w.applier.target, e)
            w.applier.close()
