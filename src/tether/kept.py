"""The roots whose kept versions a command reads: a job's replicas and targets (local, ssh or
rclone, each through what it can do), or a folder. `tether versions` lists them, `tether restore`
fetches one back."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tether.agent_remote import to_wire
from tether.errors import TetherError
from tether.procs import run_captured

if TYPE_CHECKING:
    from tether.bisync.config import BisyncJob
    from tether.dirs import Dirs
    from tether.endpoints import ReplicaSpec
    from tether.ssh import SshOptions
    from tether.versions import Version


class Root:
    """One replica or target root: its versions, read in place where it is local and through its
    agent elsewhere, and one version copied to a local file (bytes, mode, mtime as kept)."""

    def __init__(self, endpoint: ReplicaSpec, copies: list[bytes], ssh: SshOptions) -> None:
        self.endpoint, self.copies, self.ssh = endpoint, copies, ssh
        self.shown = str(endpoint)
        self.local = endpoint.local_path

    def versions(self) -> list[Version]:
        from tether.versions import KEPT_TOPS, from_kept, scan_local

        if self.local is not None:
            return scan_local(self.local, self.copies)
        try:
            with self.endpoint.connector(self.ssh)() as agent:
                kept = agent.call("kept", tops=[to_wire(t) for t in KEPT_TOPS])["entries"]
                stats = agent.call("stat", paths=[to_wire(c) for c in self.copies])["entries"] if self.copies else []
        except (TetherError, OSError) as e:
            raise TetherError(
                f"cannot list the versions kept on {self.shown}: {e}", "check that it is reachable"
            ) from e
        return from_kept(kept, self.copies, stats)

    def fetch(self, v: Version, dest: bytes) -> None:
        """Copy the version to the local path dest (absent): in place, by rsync, or by the agent."""
        from tether.endpoints import by_rsync

        if self.local is not None:
            from tether.restore import copy_entry

            copy_entry(os.path.join(os.fsencode(self.local), v.stored), dest)
            return
        reached = by_rsync(self.endpoint)
        if reached is not None:  # rsync keeps mode and mtime; the path goes as an argument, never a shell
            far = reached.rsync_root(self.endpoint.path or ".") + os.fsdecode(v.stored)
            argv = ["rsync", "-a", "--secluded-args", "-e", self.ssh.rsync_rsh(), "--", far, os.fsdecode(dest)]
            proc = run_captured(argv)
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                raise OSError(proc.returncode, f"rsync from {self.shown}: {err[0]}")
            return
        with self.endpoint.connector(self.ssh)() as agent:
            agent.call("fetch", path=to_wire(v.stored), size=v.size, mtime_ns=v.mtime_ns, into=os.fsdecode(dest))


def collect(roots: list[Root], want: bytes | None) -> list[tuple[Root, Version]]:
    """The versions of `want` (a path, or everything below it; None or b"": all) in every root,
    on one time line, oldest first."""
    found = [(r, v) for r in roots for v in r.versions()
             if not want or v.path == want or v.path.startswith(want + b"/")]  # fmt: skip
    return sorted(found, key=lambda rv: (rv[1].kept_at, rv[1].path, rv[1].stored))


def is_folder_arg(dirs: Dirs, where: str) -> bool:
    """A folder given where a job name may be: a path, or a name no job has."""
    return os.path.isdir(where) and ("/" in where or not (dirs.jobs / f"{where}.toml").exists())


def roots(dirs: Dirs, where: str) -> tuple[list[Root], str | None]:
    """The roots of a job or a folder, and where its versions go back (None: no local place)."""
    from tether.bisync.config import BisyncJob
    from tether.config import MirrorJob
    from tether.endpoints import parse_replica
    from tether.jobs import load_named
    from tether.ssh import SshOptions

    ssh = SshOptions.from_env(dirs)
    if is_folder_arg(dirs, where):
        path = os.path.abspath(where)
        return [Root(parse_replica(path), _conflict_copies_of_folder(dirs, path), ssh)], path
    job = load_named(dirs, where)
    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config)
    copies = _conflict_copies(dirs, job) if isinstance(job, BisyncJob) else []
    found = [Root(w, copies, ssh) for w in job.writes()]
    if isinstance(job, MirrorJob):  # kept on its targets, put back into its source (every target
        return found[:1], job.spec.source.path  # keeps the same history: the first is read)
    into = next((r.local for r in found if r.local is not None), None)
    return found, into


def _conflict_copies(dirs: Dirs, job: BisyncJob) -> list[bytes]:
    """The keep-both copies a bisync job's state records (a name that only looks like one is
    the user's file, not a version)."""
    from tether.bisync.runner import state_path
    from tether.bisync.state import State

    if not state_path(dirs, job).exists():
        return []
    state = State(state_path(dirs, job))
    try:
        return [c for _p, c, _t, _n in state.conflicts()]
    finally:
        state.close()


def _conflict_copies_of_folder(dirs: Dirs, path: str) -> list[bytes]:
    """A folder given by path: the copies recorded by the bisync jobs it is a replica of."""
    from tether.bisync.config import BisyncJob
    from tether.errors import TetherError
    from tether.jobs import list_jobs, load_named

    real = os.path.realpath(path)
    out: list[bytes] = []
    for name in list_jobs(dirs):
        try:
            job = load_named(dirs, name)
        except TetherError:
            continue  # a broken job file is `tether check`'s to report, not a listing's
        if isinstance(job, BisyncJob) and any(
            w.local_path is not None and os.path.realpath(w.local_path) == real for w in job.writes()
        ):
            out += _conflict_copies(dirs, job)
    return out


__all__ = ["Root", "collect", "is_folder_arg", "roots"]
