"""A mirror into a pool of three local-backend members, against rclone into the same union by hand.

Usage: .venv/bin/python -m bench.pools [--files 20000] [--mb 100] [--rounds 3] [--samples 30]
One-shot: `tether mirror SRC pool:bench` against `rclone sync SRC <the same union>` (a union
remote written by hand from the same members, as a user of rclone would), initial and no-change
rerun, medians; the limit is 1.15x (issue 12). tether places each new file itself (caps and
policy); rclone's union places by its own create policy.
Continuous: a running job's latency for one 4 KB file written into the source until it is on a
member, p50 and p95.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.rig.trees import make_tree

from bench.common import TETHER, Arg, first_pass_done, median, scratch, table, timed
from bench.rclone_mirror import pct, poll, rclone_version
from tether.transport.rclone_bin import rclone_program

LIMIT = 1.15
MEMBERS = 3


def union_of(members: list[Path]) -> str:
    ups = " ".join(f'"{m}"' for m in members)
    return f":union,upstreams='{ups}':"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args()
    with scratch(args.mb * 6 + 512) as work:
        env = dict(os.environ, TETHER_HOME=str(work / "home"))
        src = work / "src"
        info = make_tree(src, args.files, seed=21, total_bytes=args.mb * 1_000_000, hostile=False, symlinks=False)
        print(f"tree: {info.files} files, {info.dirs} dirs, {info.bytes / 1e6:.0f} MB; {rclone_version()}")
        one_shot(work, src, env, args.rounds)
        continuous(work, env, args.samples)
    return 0


def _members(work: Path, tool: str) -> list[Path]:
    return [work / f"{tool}-m{i}" for i in range(MEMBERS)]


def one_shot(work: Path, src: Path, env: dict[str, str], rounds: int) -> None:
    init: dict[str, list[float]] = {"tether": [], "rclone": []}
    rerun: dict[str, list[float]] = {"tether": [], "rclone": []}
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        for tool in ("tether", "rclone") if r % 2 else ("rclone", "tether"):
            members = _members(work, tool)
            for m in members:
                shutil.rmtree(m, ignore_errors=True)
                m.mkdir()
            shutil.rmtree(work / "home" / "state", ignore_errors=True)  # a new pool each round
            if tool == "tether":
                shutil.rmtree(work / "home" / "config" / "pools", ignore_errors=True)
                subprocess.run([*TETHER, "pool", "create", "bench", *map(str, members)], env=env, check=True,
                               capture_output=True)  # fmt: skip
                argv: list[Arg] = [*TETHER, "mirror", src, "pool:bench"]
            else:
                argv = [rclone_program(), "sync", src, union_of(members)]
            a = timed(argv, env)
            b = timed(argv, env)
            if r:
                init[tool].append(a)
                rerun[tool].append(b)
    print(f"one-shot mirror into a pool of {MEMBERS} local-backend members (median of {rounds})")
    rows = [
        ("initial mirror", median(init["tether"]), median(init["rclone"]), LIMIT),
        ("no-change rerun", median(rerun["tether"]), median(rerun["rclone"]), LIMIT),
    ]
    print(table(rows, "tether", "rclone sync (union by hand)"))


def continuous(work: Path, env: dict[str, str], samples: int) -> None:
    src = work / "live-src"
    make_tree(src, 100, seed=23, hostile=False, symlinks=False)
    members = [work / f"live-m{i}" for i in range(MEMBERS)]
    subprocess.run([*TETHER, "pool", "create", "live", *map(str, members)], env=env, check=True, capture_output=True)
    jobs = work / "home" / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    body = {"source": str(src), "targets": ["pool:live"], "interval": 0}
    (jobs / "pl.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items()))
    subprocess.run([*TETHER, "start", "pl"], env=env, check=True, capture_output=True)
    data = os.urandom(4096)
    xs: list[float] = []
    try:
        poll(lambda: first_pass_done(env, "pl"), 120)
        for i in range(samples):
            name = f"lat-{i}"
            (src / name).write_bytes(data)

            def there(name: str = name) -> bool:
                return any((m / name).exists() and (m / name).stat().st_size == len(data) for m in members)

            xs.append(poll(there, 30))
            time.sleep(0.02)
    finally:
        subprocess.run([*TETHER, "stop", "pl"], env=env, check=False, capture_output=True)
    print(f"continuous mirror into the pool: one 4 KB file until on a member ({samples} samples)")
    print(f"  tether (running job)     p50 {pct(xs, 50) * 1000:7.1f} ms  p95 {pct(xs, 95) * 1000:7.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
