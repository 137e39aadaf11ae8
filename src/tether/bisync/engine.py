"""One bisync pass: lock both replicas, scan, reconcile, guard, then act, recording as it goes.

Every action re-checks on the far side that the entry is still what the scan saw (the agent's
`expect`), so a file edited while the pass runs is skipped, never overwritten by a stale copy;
the next pass picks it up.  Each finished batch of actions is recorded in the state at once,
so a crash between any two actions leaves a state the next pass can trust.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from tether.bisync.plan import Action, Entry, Plan, Prev, Raw, SideView, ordered, reconcile
from tether.bisync.replica import META, TMP, VERSIONS, AgentError, Replica, entry_of, shown, wire
from tether.bisync.state import State
from tether.crashpoints import crashpoint
from tether.errors import LockedError, TetherError
from tether.filters import Filter
from tether.hooks import PassClock
from tether.procs import run_captured
from tether.ssh import SshOptions

Item = tuple[bytes, bytes, Entry, Entry | None]  # (source path, dest path, source entry, expected dest entry)
SMALL = 4 << 20  # files up to this size travel inside agent messages; bigger ones go by rsync
BATCH = 128


class Crash(BaseException):
    """Raised by the crash-injection seam of the tests: an abrupt stop between two actions."""


class Options:
    """How a pass behaves; the tests' seams (crash_after, after_scan) are plain attributes too."""

    def __init__(
        self,
        *,
        policy: str = "keep-both",
        dry_run: bool = False,
        force: bool = False,
        max_delete: int = 50,  # percent of a replica's files one pass may delete
        filter: Filter | None = None,
        backups_keep: int = 10,
        trash_days: int = 30,
        max_time_soft: float | None = None,
        max_time_hard: float | None = None,
        bwlimit: str | None = None,
        rsync: str = "rsync",
        rsync_args: tuple[str, ...] = (),
        preserve: frozenset[str] = frozenset(),  # owner, group, acl, xattr: carried with every copy
    ) -> None:
        self.policy, self.dry_run, self.force, self.max_delete = policy, dry_run, force, max_delete
        self.preserve = preserve
        self.scope = [p for p in ("owner", "group", "acl", "xattr") if p in preserve]
        self.filter = filter if filter is not None else Filter()
        self.backups_keep, self.trash_days, self.bwlimit = backups_keep, trash_days, bwlimit
        self.max_time_soft, self.max_time_hard = max_time_soft, max_time_hard
        self.rsync, self.rsync_args = rsync, rsync_args  # the job's rsync program and extra options
        self.crash_after: int | None = None  # tests: stop abruptly after this many actions
        self.after_scan: Callable[[], None] | None = None  # tests: runs between the scans and the actions


class Report:
    """What a pass did (or would do); `to_json` is the --json document."""

    def __init__(
        self,
        path1: str,
        path2: str,
        *,
        dry_run: bool = False,
        refused: str | None = None,
        errors: list[str] | None = None,
    ) -> None:
        self.path1, self.path2, self.dry_run = path1, path2, dry_run
        self.first_run = False
        self.copied = {"to_path1": 0, "to_path2": 0}
        self.deleted = {"path1": 0, "path2": 0}
        self.conflicts: list[dict[str, str]] = []
        self.plan: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.errors: list[str] = list(errors or [])
        self.warnings: list[str] = []
        self.refused = refused
        self.hint: str | None = None
        self.stopped: str | None = None
        self.seconds = 0.0
        self.narrow = False  # a continuous job's pass that looked only at the paths events named
        self.looked = 0  # how many paths (tops) such a pass looked at
        self.answered: int | None = None  # the `tether wait` (its time, ns) this pass answers

    @property
    def ok(self) -> bool:
        return not self.errors and not self.refused and not self.stopped and not self.skipped

    def to_json(self) -> dict[str, Any]:
        """Refusals and stops are also in "errors", so a script reading errors sees every reason."""
        d = dict(self.__dict__)
        d["errors"] = [*self.errors, *(m for m in (self.refused, self.stopped) if m)]
        d["ok"] = self.ok
        return d


class Pass:
    """One pass between two opened replicas, recorded in `state`; `run()` returns the report."""

    def __init__(
        self, r1: Replica, r2: Replica, state: State, opts: Options, ssh: SshOptions, narrow: list[bytes] | None = None
    ) -> None:
        """`narrow`: look only at these paths (and below them), on both sides: a continuous job's
        pass started by events.  The same table decides; only fewer paths are fed to it."""
        self.r = {1: r1, 2: r2}
        self.narrow = narrow
        self.state = state
        self.opts = opts
        self.ssh = ssh
        self.report = Report(str(r1.endpoint), str(r2.endpoint), dry_run=opts.dry_run)
        self.clock = PassClock(opts.max_time_soft, opts.max_time_hard)
        self.done = 0
        self.t0: dict[int, int | None] = {1: None, 2: None}  # each side's racily-clean mtime floor
        self.digests: dict[bytes, tuple[str | None, str | None]] = {}  # content compared this pass
        self.held: dict[bytes, tuple[str | None, str | None]] = {}  # what each side holds now, where known
        self.losers: set[bytes] = set()  # paths whose version on the side written to lost a conflict

    # ------------------------------------------------------------------ the pass

    def run(self) -> Report:
        """The pass, with the cycle collector paused: it builds tens of thousands of tuples and
        no cycles, and the collector would rescan them again and again (a third of a quiet
        pass's time on 20,000 files).  Re-enabled after, so a long-running job collects as usual."""
        rep = self.report
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._run()
        finally:
            if collecting:
                gc.enable()
            for i in (1, 2):
                self.r[i].unlock()
            rep.seconds = round(time.monotonic() - self.clock.started, 3)
        return rep

    def _scan_both(self, prev: Prev) -> tuple[dict[int, SideView], list[tuple[int, bytes]]]:
        """Each side locks, then scans, both at once (local ones in forked children, remote ones
        by their agents); each reduces its scan to the difference from the state where it runs.
        Every lock is held before any action, and each scan is taken under its side's lock."""
        owner = f"tether bisync {self.r[1].endpoint} <-> {self.r[2].endpoint}"
        flt = self._filtered

        tops = self.narrow
        if tops is None:

            def known(i: int) -> Callable[[], dict[bytes, Raw]]:
                return lambda: {p: e for p, s in prev.items() if (e := s[i - 1]) is not None}

        else:
            near = {t: s for t in tops if (s := prev.get(t)) is not None}
            dirs = tuple(t + b"/" for t, s in near.items() if _kind(s) == "d")
            if dirs:  # only a directory known to the state has known entries below it
                near.update((p, s) for p, s in prev.items() if p.startswith(dirs))
            f = self.opts.filter
            if f.rules:
                near = {p: s for p, s in near.items() if not f.path_excluded(os.fsdecode(p), _kind(s) == "d")}

            def known(i: int) -> Callable[[], dict[bytes, Raw]]:
                return lambda: {p: e for p, s in near.items() if (e := s[i - 1]) is not None}

        waits = {1: self.r[1].start_scan(owner, known(1), flt, tops)}
        got: dict[int, Any] = {}
        try:
            waits[2] = self.r[2].start_scan(owner, known(2), flt, tops)
        finally:
            for i, wait in waits.items():
                try:
                    got[i] = wait()
                except BaseException as e:
                    got[i] = e
        for i in (1, 2):
            self.report.warnings += self.r[i].warnings
            self.r[i].warnings.clear()
        locked = [got[i] for i in (1, 2) if isinstance(got[i], LockedError)]
        if locked:
            raise locked[0]
        sides: dict[int, SideView] = {}
        unreadable: list[tuple[int, bytes]] = []
        for i in (1, 2):
            if isinstance(got[i], BaseException):
                raise got[i]
            changed, missing, count, bad, self.t0[i] = got[i]
            if tops is not None:  # a narrow scan saw a few paths; the side holds what the state knows
                count = max(1, len(prev))
            sides[i] = SideView(prev, i - 1, changed, missing, count)
            unreadable += [(i, b) for b in bad]
        return sides, unreadable

    def _filtered(self, entries: dict[bytes, Raw]) -> dict[bytes, Raw]:
        f = self.opts.filter
        if not f.rules:
            return entries
        return {p: e for p, e in entries.items() if not f.path_excluded(os.fsdecode(p), e[0] == "d")}

    def _run(self) -> None:
        rep, opts = self.report, self.opts
        prev = self.state.load()
        if not prev:
            self.narrow = None  # a first run looks at everything
        if opts.filter.rules and self.narrow is None:
            prev = {p: s for p, s in prev.items() if not opts.filter.path_excluded(os.fsdecode(p), _kind(s) == "d")}
        rep.first_run = not prev
        sides, unreadable = self._scan_both(prev)
        if self.state.reset_note:
            rep.warnings.append(self.state.reset_note)
            self.state.reset_note = None  # said once, not by every pass of a running job
        if self.narrow is None and self._emptied(prev, sides):
            return
        plan = reconcile(
            prev, sides[1], sides[2], policy=opts.policy, hashes=self._hashes,
            hosts=(self.r[1].host, self.r[2].host), unreadable=unreadable,
        )  # fmt: skip
        for p, why in plan.skipped:
            rep.skipped.append({"path": shown(p), "reason": why})
        actions = ordered(plan.actions)
        rep.plan = [_describe(a) for a in actions if a.kind not in ("record", "forget")]
        if self._too_many_deletes(plan, prev):
            return
        if opts.dry_run:
            self._count(plan.actions)
            return
        if opts.after_scan is not None:
            opts.after_scan()
        crashpoint("bisync.planned")
        self._execute(actions)
        self._housekeeping()

    # ------------------------------------------------------------------ guards

    def _emptied(self, prev: Prev, sides: dict[int, SideView]) -> bool:
        """An empty replica that held files at the last sync is an unmounted disk until told otherwise."""
        if self.opts.force:
            return False
        for i in (1, 2):
            if sides[i]:
                continue
            had = sum(1 for s in prev.values() if s[i - 1] is not None)
            if had:
                self.report.refused = (
                    f"{self.r[i]} is empty, but held {had} entries at the last sync; "
                    "refusing to propagate that as deletions"
                )
                self.report.hint = "is its disk mounted? if it really was emptied on purpose, run again with --force"
                return True
        return False

    def _too_many_deletes(self, plan: Plan, prev: Prev) -> bool:
        if self.opts.force:
            return False
        for i in (1, 2):
            gone = sum(1 for a in plan.actions if a.kind == "delete" and a.to == i)
            if not gone:
                continue
            files = sum(1 for s in prev.values() if (e := s[i - 1]) is not None and e[0] != "d")
            if files and gone * 100 > self.opts.max_delete * files:
                self.report.refused = (
                    f"this pass would delete {gone} of {files} files ({gone * 100 // files}%) on {self.r[i]}, "
                    f"more than max_delete={self.opts.max_delete}%; nothing was deleted or copied"
                )
                self.report.hint = "check that both replicas are the right ones; --force if the deletions are meant"
                return True
        return False

    def _hashes(self, paths: list[bytes]) -> dict[bytes, tuple[str | None, str | None]]:
        """Both sides' digests of these paths: one hash request per side, both sides at once.
        Kept: a metadata fix-up re-checks them, and racy records carry them."""
        waits = [self.r[1].start_hash(paths), self.r[2].start_hash(paths)]
        d1, d2 = [_try(w) for w in waits]
        for d in (d1, d2):
            if isinstance(d, BaseException):
                raise d
        got = dict(zip(paths, zip(d1, d2, strict=True), strict=True))
        self.digests.update(got)
        self.held.update(got)
        return got

    def _put(self, rows: Sequence[tuple[bytes, Raw | None, Raw | None]]) -> None:
        """Record rows as synced.  A file whose mtime is not safely older than the scan of its
        side is recorded as racy (its inode negated): a later edit in the same clock tick keeps
        size and mtime, so the next scans report it and the pass compares its bytes once
        (git's "racily clean")."""
        t1, t2 = self.t0[1], self.t0[2]
        held, unknown = self.held.get, (None, None)
        marked = []
        for p, e1, e2 in rows:
            d1, d2 = held(p, unknown)
            marked.append((p, _racy(e1, t1, d1), _racy(e2, t2, d2)))
        self.state.put(marked)

    # ------------------------------------------------------------------ doing it

    def _tick(self, n: int = 1) -> None:
        self.done += n
        crashpoint("bisync.between_actions")
        if self.opts.crash_after is not None and self.done >= self.opts.crash_after:
            raise Crash(f"injected crash after {self.done} actions")

    def _time_left(self) -> bool:
        warning = self.clock.soft_warning()
        if warning:
            self.report.warnings.append(warning)
        self.report.stopped = self.clock.over()
        return self.report.stopped is None

    def _execute(self, actions: list[Action]) -> None:
        batch = 1 if self.opts.crash_after is not None else BATCH
        records = [a for a in actions if a.kind in ("record", "forget")]
        if records:
            self._put([(a.path, a.src, a.expect) if a.kind == "record" else (a.path, None, None) for a in records])
        work = [a for a in actions if a.kind not in ("record", "forget")]
        i = 0
        while i < len(work):
            if not self._time_left():
                return
            a0 = work[i]
            j = i + 1
            while j < len(work) and j - i < batch and work[j].kind == a0.kind and work[j].to == a0.to:
                j += 1
            group = work[i:j]
            if a0.kind == "conflict":
                for a in group:
                    self._conflict(a)
                    self._tick()
            elif a0.kind in ("delete", "rmdir"):
                self._deletes(group)
            elif a0.kind == "meta":
                self._metas(group)
            else:
                self._copies(group)
            i = j

    def _fail(self, a: Action | bytes, err: Exception) -> None:
        path = a if isinstance(a, bytes) else a.path
        msg = str(err)
        if isinstance(err, AgentError) and err.errno in (errno.ESTALE, errno.EEXIST, errno.ENOENT):  # raced a change
            self.report.skipped.append({"path": shown(path), "reason": msg + "; the next pass picks it up"})
        else:
            self.report.errors.append(msg)

    def _deletes(self, group: list[Action]) -> None:
        to = group[0].to
        rep = self.r[to]
        replies = rep.pipeline(
            [("discard", {"path": wire(a.path), "expect": a.expect.expect() if a.expect else None,
                          "trash_root": VERSIONS}, b"") for a in group]
        )  # fmt: skip
        rows = []
        kept: list[Action] = []
        for a, r in zip(group, replies, strict=True):
            if isinstance(r, AgentError):
                if r.errno == errno.ENOTEMPTY:
                    kept.append(a)
                else:
                    self._fail(a, r)
                continue
            rows.append((a.path, None, None))
            if a.kind == "delete":
                self.report.deleted[f"path{to}"] += 1
        self._put(rows)
        if kept:
            self._keep_dirs(kept)
        self._tick(len(group))

    def _keep_dirs(self, kept: list[Action]) -> None:
        """Dirs that would not go because something lives in them that this pass does not sync
        (files the filters exclude, or new ones): they stay, and the side that removed them gets
        them back, so the replicas agree and the next pass has nothing left to say."""
        to = kept[0].to
        back = 3 - to
        kept.sort(key=lambda a: a.path.count(b"/"))  # parents first
        made = self.r[back].pipeline(
            [("install", self._install_args(a.path, a.expect, None), b"") for a in kept if a.expect is not None]
        )
        rows = []
        for a, r in zip(kept, made, strict=True):
            assert a.expect is not None
            if isinstance(r, AgentError):
                self._fail(a, r)
                continue
            got = entry_of(r["entry"])
            rows.append((a.path, a.expect, got) if to == 1 else (a.path, got, a.expect))
            self.report.warnings.append(
                f"{shown(a.path)}: kept on {self.r[to]}, it still holds files this job does not sync "
                f"(excluded, or new); made again on {self.r[back]}"
            )
        self._put(rows)

    def _metas(self, group: list[Action]) -> None:
        """Same bytes on both sides, different mtime or mode: the older side takes the newer's,
        only if it still holds the version whose bytes were compared (an edit since keeps its
        own mtime, and the next pass propagates it)."""
        to = group[0].to
        reqs: list[tuple[str, dict[str, Any], bytes]] = []
        for a in group:
            assert a.src is not None and a.expect is not None
            args = {"path": wire(a.path), "mode": a.src.mode, "mtime_ns": a.src.mtime, "expect": a.expect.expect()}
            digest = self.digests.get(a.path, (None, None))[to - 1]
            if digest is not None:
                args["digest"] = digest
            reqs += [("set_meta", args, b""), ("entry", {"path": wire(a.path)}, b"")]
        replies = self.r[to].pipeline(reqs)
        rows = []
        for k, a in enumerate(group):
            done, now = replies[2 * k], replies[2 * k + 1]
            if isinstance(done, AgentError) or isinstance(now, AgentError) or now.get("entry") is None:
                self._fail(a, done if isinstance(done, AgentError) else TetherError(f"{shown(a.path)} vanished"))
                continue
            assert a.src is not None
            got = entry_of(now["entry"])
            rows.append((a.path, a.src, got) if to == 2 else (a.path, got, a.src))
        self._put(rows)
        self._tick(len(group))

    def _copies(self, group: list[Action]) -> None:
        """Copies and dir makes to one side: small files by agent messages, big ones by rsync."""
        to = group[0].to
        items: list[Item] = []
        for a in group:
            assert a.src is not None  # copies and dir makes always carry what they bring
            items.append((a.path, a.path, a.src, a.expect))
            if a.note.startswith("conflict: "):
                self.losers.add(a.path)
        results = self._transfer(3 - to, to, items)
        crashpoint("bisync.transferred")
        rows = []
        for a, res in zip(group, results, strict=True):
            if isinstance(res, Exception):
                self._fail(a, res)
                continue
            assert a.src is not None
            rows.append((a.path, a.src, res) if to == 2 else (a.path, res, a.src))
            if a.kind == "copy":
                self.report.copied[f"to_path{to}"] += 1
            if a.note.startswith("conflict: "):  # newer / path1 / path2: the loser is in to's backups
                self.report.conflicts.append(_conflict_doc(a))
        self._put(rows)
        self._tick(len(group))

    def _install_args(self, dp: bytes, e: Entry, exp: Entry | None) -> dict[str, Any]:
        """The agent's `install` for entry e at dp, if dp still holds exp (None: nothing)."""
        args: dict[str, Any] = {
            "path": wire(dp), "kind": e.type, "expect": exp.expect() if exp else None, "backup_root": VERSIONS,
            "mode": e.mode, "mtime_ns": e.mtime if e.type != "d" else None, "keep": self.opts.backups_keep,
            "why": "conflict" if dp in self.losers else "replaced",
        }  # fmt: skip
        if e.type == "l":
            args["target"] = wire(e.link or b"")
        if exp is not None and exp.type == "d" and e.type != "d" and self.opts.filter.rules:
            args["leftovers"] = self.opts.filter.agent_rules()  # what the emptied folder may still hold
        return args

    def _transfer(self, frm: int, to: int, items: Sequence[Item]) -> list[Entry | Exception]:
        """(source path, dest path, source entry, expected dest entry) -> the new dest entry, or the
        error.  Small files: one pipelined read on one side, one pipelined install on the other."""
        src, dst = self.r[frm], self.r[to]
        out: list[Entry | Exception | None] = [None] * len(items)
        big = [k for k, (_sp, _dp, e, _x) in enumerate(items) if e.type == "f" and e.size > SMALL]
        small = [k for k, (_sp, _dp, e, _x) in enumerate(items) if not (e.type == "f" and e.size > SMALL)]
        reads = [k for k in small if items[k][2].type == "f"]
        data: dict[int, bytes | Exception] = {}
        scope = self.opts.scope
        extra = {"meta": scope} if scope else {}
        others = [k for k in small if items[k][2].type != "f"] if scope else []
        replies = src.pipeline(
            [("read", {"path": wire(items[k][0]), "size": items[k][2].size, "mtime_ns": items[k][2].mtime, **extra},
              b"") for k in reads]
            + ([("meta", {"paths": [wire(items[k][0]) for k in others], "scope": scope}, b"")] if others else [])
        )  # fmt: skip
        metas: dict[int, Any] = {}  # what the job's preserve carries, read on the sending side
        if others:
            told = replies.pop()
            if not isinstance(told, AgentError):
                metas.update(zip(others, told["metas"], strict=True))
        from hashlib import blake2b  # OpenSSL's load: only for passes that copy

        for k, r in zip(reads, replies, strict=True):
            data[k] = r if isinstance(r, AgentError) else r["data"]
            if scope and not isinstance(r, AgentError):
                metas[k] = r.get("meta")
            if not isinstance(r, AgentError):  # both sides hold these bytes once the copy lands
                d = blake2b(r["data"], digest_size=20).hexdigest()
                self.held[items[k][1]] = (d, d)
        reqs: list[tuple[str, dict[str, Any], bytes]] = []
        sent: list[int] = []
        for k in small:
            _sp, dp, e, exp = items[k]
            body = data.get(k, b"")
            if isinstance(body, Exception):
                out[k] = body
                continue
            args = self._install_args(dp, e, exp)
            meta = metas.get(k)
            if meta and "error" in meta:  # made all the same, with its mode: said, not dropped silently
                self.report.errors.append(f"{src}: {meta['error']}")
            elif meta:
                args["meta"] = meta
            reqs.append(("install", args, body))
            sent.append(k)
        for k, r in zip(sent, dst.pipeline(reqs), strict=True):
            out[k] = r if isinstance(r, AgentError) else entry_of(r["entry"], items[k][2].link)
            self._kept_folder(dst, items[k][1], r)
            if not isinstance(r, AgentError) and r.get("meta_errors"):  # the copy landed, not all it keeps
                self.report.errors += [f"{dst}: {m}" for m in r["meta_errors"]]
        for k in big:  # what rsync or rclone brings is not read here: its digest is unknown
            self.held.pop(items[k][1], None)
        if big:
            if not (src.endpoint.caps.rsync and dst.endpoint.caps.rsync):
                got_big = self._rclone_big(src, dst, [items[k] for k in big])
            else:  # a recent file will be recorded racily clean: its digest, taken as it lands, goes with it
                t0 = self.t0[frm]
                recent = {items[k][1] for k in big if t0 is not None and items[k][2].mtime >= t0}
                got_big = self._rsync(src, dst, [items[k] for k in big], recent)
            for k, got in zip(big, got_big, strict=True):
                out[k] = got
        return [x if x is not None else TetherError("nothing to copy") for x in out]

    def _rsync(
        self, src: Replica, dst: Replica, items: Sequence[Item], recent: frozenset[bytes] | set[bytes] = frozenset()
    ) -> list[Entry | Exception]:
        """Big files by rsync into dst's .tether/tmp/<batch>/ (the old versions as delta basis),
        then each renamed into place by the agent's `install`, which re-checks at that moment
        that dst still holds what the plan expected: a save made during a slow copy is kept.
        rsync never decides here (-I): tether has decided these files differ."""
        batch = f"{TMP}/{os.urandom(6).hex()}"
        pre = dst.pipeline([("mkdir", {"path": batch, "mode": 0o700}, b"")]
                           + [("entry", {"path": wire(dp)}, b"") for _sp, dp, _e, _x in items])  # fmt: skip
        if isinstance(pre[0], AgentError):
            return [pre[0]] * len(items)
        out: list[Entry | Exception | None] = [None] * len(items)
        for k, ((_sp, dp, _e, exp), r) in enumerate(zip(items, pre[1:], strict=True)):
            if isinstance(r, AgentError):
                out[k] = r
            elif not _still(r.get("entry"), exp):  # fail early: no use sending what cannot land
                out[k] = AgentError(f"{shown(dp)} changed during the pass", errno.ESTALE)
        ready = [k for k in range(len(items)) if out[k] is None]
        try:
            if ready:
                argv = [self.opts.rsync, "--secluded-args", "-lptI", "--files-from=-", "--from0"]
                argv.append("--copy-dest=../../..")
                from tether.transport.rsync import preserve_args  # rsync's module: only when big files go

                argv += preserve_args(self.opts.preserve)
                if any(x.endpoint.ssh_host for x in (src, dst)):
                    argv += ["-e", self.ssh.rsync_rsh()]
                if self.opts.bwlimit:
                    argv.append(f"--bwlimit={self.opts.bwlimit}")
                argv += [*self.opts.rsync_args, "--", src.rsync_root(), f"{dst.rsync_root()}{batch}/"]
                listing = b"".join(items[k][0] + b"\0" for k in ready)
                try:
                    proc = run_captured(argv, input=listing)
                except OSError as why:
                    fail = TetherError(
                        f"cannot run rsync {self.opts.rsync!r}: {why.strerror}", "check the job's rsync key"
                    )
                    return [fail if x is None else x for x in out]
                if proc.returncode not in (0, 23, 24):
                    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                    fail = TetherError(f"rsync to {dst} failed (exit {proc.returncode}): {err[0]}")
                    return [fail if x is None else x for x in out]
                reqs = []
                for k in ready:
                    sp, dp, e, exp = items[k]
                    args = self._install_args(dp, e, exp)
                    args.update(staged=wire(batch.encode() + b"/" + sp), staged_as=[e.size, e.mtime])
                    if dp in recent:
                        args["digest"] = True
                    reqs.append(("install", args, b""))
                for k, r in zip(ready, dst.pipeline(reqs), strict=True):
                    out[k] = r if isinstance(r, AgentError) else entry_of(r["entry"])
                    self._kept_folder(dst, items[k][1], r)
                    if not isinstance(r, AgentError) and r.get("digest"):
                        self.held[items[k][1]] = (r["digest"], r["digest"])
        finally:
            with contextlib.suppress(TetherError):
                dst.call("remove", paths=[batch])
        return [x if x is not None else TetherError("nothing to copy") for x in out]

    def _rclone_big(self, src: Replica, dst: Replica, items: Sequence[Item]) -> list[Entry | Exception]:
        """Big files to or from an rclone remote, one at a time, never whole in memory: rclone
        uploads from the local file, or downloads into the local replica's .tether/tmp, from
        where the local agent renames it into place (same filesystem, atomic)."""
        out: list[Entry | Exception] = []
        for sp, dp, e, exp in items:
            args = self._install_args(dp, e, exp)
            try:
                if not dst.endpoint.caps.in_process:
                    args["source"] = os.path.join(src.root, os.fsdecode(sp))
                    got = dst.call("install", **args)
                else:
                    staged = f"{META}/tmp/{os.urandom(8).hex()}"
                    os.makedirs(os.path.join(dst.root, META, "tmp"), exist_ok=True)
                    src.call("fetch", path=wire(sp), size=e.size, mtime_ns=e.mtime, into=os.path.join(dst.root, staged))
                    try:
                        got = dst.call("install", staged=staged, **args)
                    finally:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(dst.root, staged))
                out.append(entry_of(got["entry"]))
                self._kept_folder(dst, dp, got)
            except (AgentError, OSError) as err:
                out.append(err)
        return out

    def _kept_folder(self, dst: Replica, dp: bytes, r: object) -> None:
        """Said when an install found a folder holding only excluded files where its entry goes:
        that folder was kept whole as a version (the agent's install, `leftovers`)."""
        if isinstance(r, dict) and r.get("kept"):
            self.report.warnings.append(
                f"{dst}: {shown(dp)}: the folder there held only files this job excludes; kept whole in"
                f" {shown(os.fsencode(r['kept']))}"
            )

    def _conflict(self, a: Action) -> None:
        """keep-both: the loser's side renames its version aside, then each side gets the other's."""
        lose, win = a.to, a.other
        assert a.src is not None and a.winner is not None
        try:
            moved = entry_of(
                self.r[lose].call("rename", old=wire(a.path), new=wire(a.copy_name), expect=a.src.expect())["entry"],
                a.src.link,
            )
        except AgentError as e:
            self._fail(a, e)
            return
        crashpoint("bisync.conflict_copy")
        self.state.add_conflict(a.path, a.copy_name, a.note)
        self.report.conflicts.append(_conflict_doc(a))
        got = self._transfer(win, lose, [(a.path, a.path, a.winner, None)])[0]
        if isinstance(got, Exception):
            self._fail(a, got)
        else:
            self._put([(a.path, a.winner, got) if win == 1 else (a.path, got, a.winner)])
            self.report.copied[f"to_path{lose}"] += 1
        back = self._transfer(lose, win, [(a.copy_name, a.copy_name, moved, None)])[0]
        if isinstance(back, Exception):
            self._fail(a.copy_name, back)
        else:
            self._put([(a.copy_name, moved, back) if lose == 1 else (a.copy_name, back, moved)])
            self.report.copied[f"to_path{win}"] += 1

    def _housekeeping(self) -> None:
        """Old versions go at most hourly: their walk would cost every quick pass."""
        last = self.state.meta("housekeeping")
        if last is not None and time.time() - float(last) < 3600:
            return
        self.state.set_meta("housekeeping", str(time.time()))
        for i in (1, 2):
            try:
                self.r[i].pipeline(
                    [("prune_versions", {"versions_root": VERSIONS, "days": self.opts.trash_days,
                                         "keep": self.opts.backups_keep}, b"")]
                )  # fmt: skip
            except TetherError as e:
                self.report.warnings.append(f"cleaning old trash on {self.r[i]}: {e}")

    def _count(self, actions: list[Action]) -> None:
        for a in actions:
            if a.kind == "copy":
                self.report.copied[f"to_path{a.to}"] += 1
            elif a.kind == "delete":
                self.report.deleted[f"path{a.to}"] += 1
            if a.kind == "conflict" or a.note.startswith("conflict: "):
                self.report.conflicts.append(_conflict_doc(a))


def _racy(e: Raw | None, t0: int | None, digest: str | None = None) -> Raw | None:
    """A file entry whose mtime is not safely older than its side's scan (t0, the agent's
    racy_from), marked by a negated inode, with its content digest where the pass knows it
    (in the link's place, unused for files)."""
    if e is None or t0 is None or e[0] != "f" or e[4] < 0 or e[2] < t0:
        return None if e is None else tuple(e)
    return (e[0], e[1], e[2], e[3], -1 - e[4], None if digest is None else digest.encode())


def _still(now: list[Any] | None, exp: Entry | None) -> bool:
    """Whether an agent's entry reply still matches what the plan expects (the `expect` rule)."""
    if now is None or exp is None:
        return now is None and exp is None
    return bool(now[0] == exp.type and (exp.type == "d" or (now[1], now[2]) == (exp.size, exp.mtime)))


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as e:
        return e


def _conflict_doc(a: Action) -> dict[str, str]:
    """keep-both names the conflict copy; the other policies name where the losing version went."""
    if a.kind == "conflict":
        return {"path": shown(a.path), "copy": shown(a.copy_name), "policy": "keep-both"}
    policy = a.note.removeprefix("conflict: ")
    return {"path": shown(a.path), "copy": "", "policy": policy, "loser_kept_in": f"path{a.to}/{VERSIONS}"}


def _kind(s: tuple[Raw | None, Raw | None]) -> str:
    e = s[0] if s[0] is not None else s[1]
    return str(e[0]) if e is not None else "f"


def _describe(a: Action) -> dict[str, str]:
    d = {"action": a.kind, "to": f"path{a.to}", "path": shown(a.path)}
    if a.note:
        d["note"] = a.note
    if a.kind == "conflict":
        d["copy"] = shown(a.copy_name)
    return d


__all__ = ["Crash", "Options", "Pass", "Report"]
