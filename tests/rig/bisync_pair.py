"""A bisync pair for tests: two replicas that are directories on this machine (path2 reached
through the test sshd, or directly), passes run in-process with the engine's seams
(crash_after, after_scan, bwlimit), or as a real `tether bisync` process killed -9 mid-copy.

Faults come from outside the engine wherever they can: a slow link is rsync's own --bwlimit,
an edit during a copy is timed by rsync's temp file appearing, a kill is SIGKILL to the
process group (tether and its rsync, as a service manager or the OOM killer's cgroup kill does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.bisync_oracle import rsync_temps
from tests.rig.sshd import SshServer
from tether.bisync.config import BisyncJob
from tether.bisync.engine import Options, Report
from tether.bisync.runner import one_pass
from tether.dirs import Dirs
from tether.endpoints import Local, Ssh
from tether.errors import LockedError
from tether.filters import Filter

DEADLINE_S = 120.0  # generous: these only catch hangs, a busy 2-core machine is slow
POLL_S = 0.001
# `python -m tether`, with the rsync threshold lowered first (the tests' 64 KiB "big" files)
_BOOT = (
    "import runpy, sys, tether.bisync.engine as e; e.SMALL = int(sys.argv.pop(1)); "
    "runpy.run_module('tether', run_name='__main__', alter_sys=True)"
)


@dataclass
class Pair:
    """path1 is always `a`; path2 is `b`, as a local path or as `alias:b` over ssh."""

    a: Path
    b: Path
    job: BisyncJob
    home: Path
    exclude: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # for tether processes

    @property
    def dirs(self) -> Dirs:
        return Dirs.from_env({"TETHER_HOME": str(self.home)})

    @property
    def roots(self) -> tuple[Path, Path]:
        return self.a, self.b

    def run(
        self,
        *,
        crash_after: int | None = None,
        after_scan: Callable[[], None] | None = None,
        bwlimit: str | None = None,
        dry_run: bool = False,
    ) -> Report:
        """One pass in this process (Crash propagates).  A replica still locked by the agent of a
        killed pass (an ssh agent notices its dead client a moment later) is waited for."""

        def tweak(o: Options) -> None:
            o.crash_after, o.after_scan, o.bwlimit = crash_after, after_scan, bwlimit
            o.backups_keep, o.max_delete = 1000, 100

        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                return one_pass(self.job, self.dirs, tweak=tweak, force=True, dry_run=dry_run)
            except LockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cli_args(self) -> list[str]:
        """`tether bisync` arguments equal to the job (same pair, so the same state)."""
        p2 = str(self.job.path2)
        args = ["bisync", str(self.a), p2, "--force", "--max-delete", "100", "--backups-keep", "1000"]
        for pat in self.exclude:
            args += ["--exclude", pat]
        return args


def make_pair(
    tmp: Path, kind: str, sshd: SshServer | None, *, exclude: Sequence[str] = (), setenv: Callable[[str, str], None]
) -> Pair:
    """A fresh pair under tmp; kind "local" or "ssh" (then `setenv` points tether at the sshd)."""
    a, b, home = tmp / "a", tmp / "b", tmp / "home"
    for d in (a, b, home):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    flt = Filter.build(ordered=[(False, p) for p in exclude])
    env = {**os.environ, "TETHER_HOME": str(home)}
    if kind == "ssh":
        assert sshd is not None
        setenv("TETHER_SSH_CONFIG", str(sshd.ssh_config))
        env = sshd.env(env)
        p2: Local | Ssh = Ssh(sshd.alias, str(b))
    else:
        p2 = Local(str(b))
    job = BisyncJob("stress", None, Local(str(a)), p2, filter=flt, backups_keep=1000, max_delete=100)
    return Pair(a, b, job, home, tuple(exclude), env)


def slow_rsync(where: Path, rate_kib: int) -> dict[str, str]:
    """PATH with an `rsync` that is the real one plus --bwlimit (a slow link; the server side
    gets the limit from the client, as rsync passes it on)."""
    real = shutil.which("rsync")
    assert real, "rsync is needed"
    where.mkdir(parents=True, exist_ok=True)
    script = where / "rsync"
    script.write_text(f'#!/bin/sh\nexec {real} --bwlimit={rate_kib} "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{where}{os.pathsep}{os.environ.get('PATH', '')}"}


def kill_mid_copy(pair: Pair, work: Path, *, rate_kib: int, small: int | None = None) -> tuple[bool, str]:
    """Run `tether bisync` over a slow rsync and SIGKILL its process group as soon as rsync's
    temp file shows anywhere in either replica (.tether included: wherever it stages).  `small`
    lowers the rsync threshold of that process.  Returns (killed, stderr); not killed means the
    pass finished first (it copied nothing big)."""
    argv = [sys.executable, *(["-c", _BOOT, str(small)] if small is not None else ["-m", "tether"])]
    argv += pair.cli_args()
    env = {**pair.env, **slow_rsync(work / "slow-bin", rate_kib)}
    err_path = work / "killed.stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
    killed = False
    try:
        deadline = time.monotonic() + DEADLINE_S
        while proc.poll() is None:
            if rsync_temps(*pair.roots, everywhere=True):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            assert time.monotonic() < deadline, "the tether pass neither copied nor ended"
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stderr = err_path.read_text(errors="backslashreplace")
    assert "Traceback" not in stderr, stderr
    return killed, stderr


@contextlib.contextmanager
def during_copy(roots: Sequence[Path], act: Callable[[Path, Path], None]) -> Iterator[list[Path]]:
    """While the body runs, watch the replicas for rsync's temp file `.NAME.XXXXXX` (anywhere,
    .tether included); at the first, call act(replica root, temp file) once, in a watcher
    thread.  Yields the list of temp files acted on (empty: no copy was caught in flight)."""
    stop = threading.Event()
    hit: list[Path] = []
    failed: list[BaseException] = []

    def watch() -> None:
        try:
            while not stop.is_set():
                for root in roots:
                    temps = rsync_temps(root, everywhere=True)
                    if temps:
                        act(root, temps[0])
                        hit.append(temps[0])
                        return
                time.sleep(POLL_S)
        except BaseException as e:
            failed.append(e)

    t = threading.Thread(target=watch, name="edit-during-copy", daemon=True)
    t.start()
    try:
        yield hit
    finally:
        stop.set()
        t.join(DEADLINE_S)
    if failed:
        raise failed[0]
