"""What watching a big quiet tree costs: watches, resident memory, and CPU while idle.

Usage: .venv/bin/python -m bench.watch_idle [--files 100000] [--dirs 4000] [--seconds 60]
The tree is made by a child process so that its garbage does not count in this one's RSS.
Run by hand; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, scratch
from tether.filters import Filter
from tether.watch import Coalescer, Watcher


def make(root: Path, files: int, dirs: int) -> None:
    """`dirs` directories two levels deep, `files` empty files spread over them."""
    paths = [root / f"d{i // 64}" / f"s{i}" for i in range(dirs - dirs // 64 - 1)]
    paths += [root / f"d{k}" for k in range(dirs // 64 + 1)]
    for p in sorted(paths):
        p.mkdir(parents=True, exist_ok=True)
    leaves = [p for p in paths if p.parent != root] or paths
    for i in range(files):
        os.close(os.open(leaves[i % len(leaves)] / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dirs", type=int, default=4_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--make", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        make(Path(args.make), args.files, args.dirs)
        return 0
    with scratch(512) as work:
        tree = work / "tree"
        tree.mkdir()
        cmd = [sys.executable, "-m", "bench.watch_idle", "--files", str(args.files), "--dirs", str(args.dirs)]
        subprocess.run([*cmd, "--make", str(tree)], check=True, cwd=ROOT)
        print(f"tree: {args.files} files, {args.dirs} dirs")
        before = rss_mb()
        t0, c0 = time.perf_counter(), cpu()
        w = Watcher(str(tree), Filter())
        w.start()
        print(f"start: {time.perf_counter() - t0:.2f} s, {cpu() - c0:.2f} s CPU, {w.watch_count} watches")
        print(f"RSS: {rss_mb():.1f} MB watching ({before:.1f} MB before start)")
        c1, t1 = cpu(), time.perf_counter()
        got = Coalescer(w).next_batch(args.seconds)
        print(f"idle {time.perf_counter() - t1:.1f} s: {cpu() - c1:.3f} s CPU, {len(got)} changes")
        print(f"RSS after idle: {rss_mb():.1f} MB")
        w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
