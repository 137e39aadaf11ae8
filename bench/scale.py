"""Scale: a continuous mirror and a bisync on a tree of a million files, beside rsync and unison.

Usage: .venv/bin/python -m bench.scale [--files 1000000] [--dirs 50000] [--size 64]
                                       [--only ready,idle,latency,bisync,fanotify] [--fan-dirs 300000]

One run, one generated tree (on tmpfs when root may mount one), the same work for each tool:
  ready     a continuous mirror started against a target that already matches, until its watches
            are in place and its first pass is done, beside rsync's no-change pass of the same
            tree; to a local target and to the test sshd (issue 16: at most 1.5x rsync)
  idle      the mirror's resident memory after that first pass, whole and per file (at most
            200 MB at a million files)
  latency   one small file written, until it is on the local target: p50 and p95 in the big
            tree and in a 20,000-file tree watched the same way (p50 within 1.2x)
  bisync    a no-change bisync pass against unison's of the same pair: wall time, the peak
            resident size of the largest process, and the state each keeps on disk per file
  fanotify  a tree of --fan-dirs directories (one file each): small-file latency with the inotify
            watcher (the limit raised for it), then with fs.inotify.max_user_watches lowered to
            10,000, where `watcher = "auto"` must take fanotify (p50 within 2x of inotify's). The
            machine-wide limit is changed for the case and put back after it: run on a quiet machine.

Peak memory is the largest process's (wait4's ru_maxrss: a forked scan counts as a process of
its own), read for each tool the same way.  Every figure is printed with the command that made it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.rig.sshd import SshServer

from bench.common import TETHER, scratch

PER_DIR_LIMIT = 200  # subdirectories per directory level of the generated tree
SMALL_TREE = 20_000


def make_flat_tree(root: Path, files: int, dirs: int, size: int) -> None:
    """`files` files of `size` bytes spread evenly over `dirs` directories two levels deep
    (a/b/f0001): a tree shaped like a home or a mail store, made fast (no Python per byte)."""
    data = b"x" * size
    per = max(1, files // dirs)
    made = 0
    for i in range(dirs):
        d = root / f"a{i // PER_DIR_LIMIT:04d}" / f"b{i % PER_DIR_LIMIT:03d}"
        d.mkdir(parents=True, exist_ok=True)
        count = per if i < dirs - 1 else files - made
        fd_dir = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for j in range(count):
                fd = os.open(f"f{j:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd_dir)
                if data:
                    os.write(fd, data)
                os.close(fd)
        finally:
            os.close(fd_dir)
        made += count


def measured(argv: Sequence[str | os.PathLike[str]], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes of the largest process) of one command, which must succeed."""
    with tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):  # unison says 1 for "nothing to do" on some versions
            err.seek(0)
            raise SystemExit(f"bench: {' '.join(map(str, argv))} failed ({proc.returncode}): {err.read()[-2000:]!r}")
    return took, usage.ru_maxrss * 1024


def poll(cond: Callable[[], bool], deadline: float, step: float = 0.001) -> float:
    began = time.perf_counter()
    while not cond():
        if time.perf_counter() - began > deadline:
            raise SystemExit("bench: timed out")
        time.sleep(step)
    return time.perf_counter() - began


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def rss_of(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS"):
            return int(ln.split()[1]) * 1024
    return 0


def du(path: Path) -> int:
    """Bytes the files under path take (apparent sizes), 0 when it is missing."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class Scale:
    def __init__(self, work: Path, server: SshServer, files: int) -> None:
        self.work, self.server, self.files = work, server, files
        self.home = work / "home"
        self.env = server.env(dict(os.environ, TETHER_HOME=str(self.home)))
        self.n = 0
        self.fan_dirs = 300_000

    def tether(self, *args: str) -> str:
        p = subprocess.run([*TETHER, *args], env=self.env, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"bench: tether {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def status(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.home / "run" / "jobs" / f"{name}.status.json").read_text())
        return doc

    def ready(self, name: str) -> bool:
        try:
            st = self.status(name)
        except (OSError, ValueError):
            return False
        t = st["targets"]
        return bool(st["state"] == "running" and t and all(x["full_passes"] >= 1 and x["state"] == "idle" for x in t))

    @contextlib.contextmanager
    def job(self, src: Path, target: str, **extra: str) -> Iterator[tuple[str, float]]:
        """A continuous mirror job started; yields (its name, seconds until ready)."""
        self.n += 1
        name = f"s{self.n}"
        jobs = self.home / "config" / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        more = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
        (jobs / f"{name}.toml").write_text(f"source = {json.dumps(str(src))}\ntargets = [{json.dumps(target)}]\n"
                                           f"interval = 0\n{more}")  # fmt: skip
        began = time.perf_counter()
        self.tether("start", name)
        try:
            poll(lambda: self.ready(name), 3600, 0.01)
            yield name, time.perf_counter() - began
        finally:
            self.tether("stop", name)


def rsync_no_change(src: Path, dst: str, ssh_config: Path | None) -> float:
    argv = ["rsync", "-a", "--delete", *(["-e", f"ssh -F {ssh_config}"] if ssh_config else []), f"{src}/", f"{dst}/"]
    return statistics.median(measured(argv, dict(os.environ))[0] for _ in range(3))


def case_ready(s: Scale, src: Path, dst: Path) -> None:
    print(f"ready: a continuous mirror of {s.files:,} files started against a matching target (limit 1.5x rsync)")
    for label, spec, cfg in (("local", str(dst), None), ("ssh", f"{s.server.alias}:{dst}", s.server.ssh_config)):
        r = rsync_no_change(src, spec, cfg)
        with s.job(src, spec) as (_name, took):
            pass
        print(f"  {label:<6} tether ready {took:7.2f} s   rsync -a --delete (no change) {r:7.2f} s"
              f"   ratio {took / r:.2f}")  # fmt: skip


def case_idle(s: Scale, src: Path, dst: Path) -> None:
    print("idle: the mirror's resident memory after its first pass (limit 200 MB at 1M files)")
    with s.job(src, str(dst)) as (name, _took):
        time.sleep(5)  # let the first pass's garbage go
        pid = int(s.status(name)["pid"])
        rss = rss_of(pid)
    print(f"  RSS {rss / 2**20:.1f} MB, {rss / s.files:.0f} bytes per file (the job's process; rsync children gone)")


def one_latency(src: Path, dst: Path, samples: int = 50) -> list[float]:
    """Seconds from a 4 KB file written to it complete on the target, `samples` times, spaced."""
    (src / "lat").mkdir(exist_ok=True)
    poll(lambda: (dst / "lat").is_dir(), 120)
    data = os.urandom(4096)
    out = []
    for i in range(samples):
        name = f"l{i:03d}-{time.monotonic_ns()}"
        (src / "lat" / name).write_bytes(data)
        target = dst / "lat" / name

        def there(target: Path = target) -> bool:
            try:
                return target.stat().st_size == 4096
            except FileNotFoundError:
                return False

        out.append(poll(there, 30, 0.0005))
        time.sleep(0.02)  # one change at a time
    return out


def case_latency(s: Scale, src: Path, dst: Path) -> None:
    print(
        f"latency: a 4 KB file until complete on a local target, {s.files:,} files vs {SMALL_TREE:,} (p50 limit 1.2x)"
    )
    small, small_dst = s.work / "small", s.work / "small-dst"
    if not small.exists():
        make_flat_tree(small, SMALL_TREE, max(1, SMALL_TREE // 20), 64)
    res = {}
    for label, a, b in (("big", src, dst), ("small", small, small_dst)):
        with s.job(a, str(b)):
            res[label] = one_latency(a, b)
        print(f"  {label:<6} p50 {pct(res[label], 50) * 1000:6.2f} ms   p95 {pct(res[label], 95) * 1000:6.2f} ms")
        shutil.rmtree(a / "lat", ignore_errors=True)
        shutil.rmtree(b / "lat", ignore_errors=True)
    print(f"  ratio p50 big/small {statistics.median(res['big']) / statistics.median(res['small']):.2f}")


def case_bisync(s: Scale, src: Path, dst: Path) -> None:
    print("bisync: a no-change pass, tether against unison, same pair (limit 1.0x time, peak RSS at most unison's)")
    tether_argv = [*TETHER, "bisync", str(src), str(dst)]
    uhome = s.work / "unison-home"
    uhome.mkdir(exist_ok=True)
    uenv = dict(os.environ, UNISON=str(uhome))
    unison_argv = ["unison", str(src), str(dst), "-batch", "-auto", "-times", "-perms", "0", "-confirmbigdel=false",
                   "-logfile", str(s.work / "unison.log")]  # fmt: skip
    first = {"tether": measured(tether_argv, s.env)[0], "unison": measured(unison_argv, uenv)[0]}
    print(f"  first runs (each builds its state): tether {first['tether']:.1f} s, unison {first['unison']:.1f} s")
    rows: dict[str, list[tuple[float, int]]] = {"tether": [], "unison": []}
    for _ in range(3):  # alternating, so a busy moment weighs on both
        rows["tether"].append(measured(tether_argv, s.env))
        rows["unison"].append(measured(unison_argv, uenv))
    t = {k: statistics.median(x[0] for x in v) for k, v in rows.items()}
    m = {k: max(x[1] for x in v) for k, v in rows.items()}
    state = {"tether": du(s.home / "state" / "bisync"), "unison": du(uhome)}  # the databases only
    for k in ("tether", "unison"):
        print(f"  {k:<7} no-change {t[k]:7.2f} s   peak RSS {m[k] / 2**20:7.1f} MB   state {state[k] / 2**20:7.1f} MB"
              f" ({state[k] / s.files:.0f} bytes per file)")  # fmt: skip
    print(f"  ratio time {t['tether'] / t['unison']:.2f}, peak RSS {m['tether'] / m['unison']:.2f}")


WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


@contextlib.contextmanager
def watch_limit(value: int) -> Iterator[None]:
    """The machine-wide inotify limit set to `value` for the block, then put back."""
    old = WATCHES.read_text().strip()
    WATCHES.write_text(f"{value}\n")
    try:
        yield
    finally:
        WATCHES.write_text(f"{old}\n")


def case_fanotify(s: Scale, _src: Path, _dst: Path) -> None:
    dirs = s.fan_dirs
    print(f"fanotify: a tree of {dirs:,} directories; a 4 KB file until on a local target (p50 limit 2x inotify's)")
    src, dst = s.work / "fan-src", s.work / "fan-dst"
    if not src.exists():
        make_flat_tree(src, dirs, dirs, 64)
        subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)
    res = {}
    for label, limit, extra in (("inotify", 2 * dirs + 65536, {"watcher": "inotify"}), ("auto", 10_000, {})):
        with watch_limit(limit), s.job(src, str(dst), **extra) as (name, took):
            log = (s.home / "state" / "logs" / f"{name}.log").read_text(errors="replace")
            res[label] = one_latency(src, dst)
        how = "fanotify" if "fanotify" in log else "inotify"
        if label == "auto" and how != "fanotify":
            raise SystemExit("bench: past the lowered limit the job did not watch with fanotify")
        print(f"  {how:<9} limit {limit:>7,}  ready {took:6.2f} s   p50 {pct(res[label], 50) * 1000:6.2f} ms"
              f"   p95 {pct(res[label], 95) * 1000:6.2f} ms")  # fmt: skip
        shutil.rmtree(src / "lat", ignore_errors=True)
        shutil.rmtree(dst / "lat", ignore_errors=True)
    print(f"  ratio p50 fanotify/inotify {statistics.median(res['auto']) / statistics.median(res['inotify']):.2f}")


CASES = {"ready": case_ready, "idle": case_idle, "latency": case_latency, "bisync": case_bisync,
         "fanotify": case_fanotify}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--dirs", type=int, default=None, help="default: files / 20")
    ap.add_argument("--size", type=int, default=64, help="bytes per file")
    ap.add_argument("--only", default=",".join(CASES))
    ap.add_argument("--fan-dirs", type=int, default=300_000, help="directories of the fanotify case's tree")
    args = ap.parse_args()
    dirs = args.dirs or max(1, args.files // 20)
    # tmpfs: a page per non-empty file and about 1 KB of inode, two trees and the small ones
    per_file = (4096 if args.size else 0) + 1024
    size_mb = 2 * (args.files + args.fan_dirs) * per_file // 2**20 + 2048
    with scratch(size_mb) as work, SshServer.start(work / "sshd") as server:
        src, dst = work / "src", work / "dst"
        began = time.perf_counter()
        make_flat_tree(src, args.files, dirs, args.size)
        subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)
        print(f"tree: {args.files:,} files of {args.size} bytes in {dirs:,} directories, made and copied"
              f" in {time.perf_counter() - began:.1f} s")  # fmt: skip
        s = Scale(work, server, args.files)
        s.fan_dirs = args.fan_dirs
        for name in args.only.split(","):
            CASES[name](s, src, dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
