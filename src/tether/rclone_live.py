"""The continuous mirror to an rclone remote: the same Applier as for local and ssh targets,
speaking the same agent words to RcloneTarget; only bulk sends (new directories, big batches) go
by `sync/copy`, and its periodic full pass is rclone_mirror's pass.  Apart from the one-shot pass
so that a one-shot mirror loads none of the continuous machinery.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from typing import cast

from tether.apply import Applier, BatchResult
from tether.config import LiveOptions
from tether.endpoints import Endpoint, RcloneReached
from tether.errors import TetherError
from tether.hooks import NO_HOOKS, PassClock, PassHooks
from tether.mirror import VERSIONS, Mirror, MirrorSpec, TargetOutcome
from tether.rclone_mirror import rclone_pass
from tether.rclone_scan import scan_source
from tether.ssh import SshOptions
from tether.transport.rclone_agent import RcError
from tether.transport.rclone_target import RcloneTarget

log = logging.getLogger("tether")


class _RcloneSends(Mirror):
    """The Applier's bulk sends (new subtrees, big batches) as one sync/copy through the agent."""

    SENT_MAX = 200_000  # versions remembered as sent (see _send); forgotten at each full pass or beyond this

    def __init__(self, mirror: Mirror, applier: RcloneApplier) -> None:
        super().__init__(mirror.rsync, mirror.known, verbose=mirror.verbose)
        self.applier = applier
        self.sent: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, ctime_ns) it had when sent

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
        """One sync/copy of the files at or below paths, but those unchanged since this worker sent
        them: the events of files written while a bulk copy ran arrive after it, and sending them
        again would, in trash mode, keep each one's identical copy as a version (a copy and a
        delete each on an object store).  Unchanged means the same size, mtime and ctime: no write,
        `touch` or `cp -p` leaves a ctime as it was, so a file changed meanwhile is always sent."""
        agent = self.applier.rclone_agent()
        files, dirs, _size = self._files_below(spec, paths)
        stamps: dict[str, tuple[int, int, int]] = {}
        for f in files:
            with contextlib.suppress(OSError):  # gone: rclone reports it, as before
                st = os.lstat(os.path.join(spec.source.path, f))
                stamps[f] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        files = [f for f in files if f not in stamps or self.sent.get(f) != stamps[f]]
        size = sum(stamps[f][0] for f in files if f in stamps)
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
        if len(self.sent) + len(files) > self.SENT_MAX:
            self.sent.clear()
        self.sent.update((f, stamps[f]) for f in files if f in stamps)
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
        target: RcloneReached,
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
        self.mirror = self.sends = _RcloneSends(mirror, self)
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
            agent = self.rclone.open_target(create=True)
            self._agent = agent
            self._once(agent.capabilities_note())
            if self.spec.bwlimit:
                self._once(f"{self.target}: bwlimit is not applied to rclone targets")
        assert isinstance(self._agent, RcloneTarget)
        return self._agent

    def agent(self) -> RcloneTarget:
        return self.rclone_agent()

    def degraded(self) -> str | None:
        agent = self._agent
        return agent.degraded() if isinstance(agent, RcloneTarget) else None

    def _full_pass(self, clock: PassClock, checksum: bool = False) -> BatchResult:
        """(`checksum` is not honoured here: a remote's hashes are its backend's own, and a
        pass through rcd compares what the backend keeps, size and mtime; nor is the clock:
        one pass is one batch of calls.)"""
        self.sends.sent.clear()  # the pass compares every file with the target itself
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
