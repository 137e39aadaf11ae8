"""Where a bisync pass's wall time goes: a timeline of phases, local<->local and local<->ssh.

Usage: .venv/bin/python -m bench.bisync_phases [--files 20000] [--rounds 7] [--fast-shell] [--changed 0]
                                                [--src DIR]

The same 20,000-file tree as bench.bisync; after an initial sync, --rounds passes of each pair
(after one warm-up) run through bench/phases_hook.py, which timestamps phase boundaries
(python up, imports, ssh spawn, the far side's start-up, state open/load, the scans, plan,
actions, unlock, closing).  Printed: per phase the median start and end in ms since the
command was launched, and the median time spent in it.  --changed N edits N files on each
side before every pass (100 for the 100+100 case).  --src runs the tether found in DIR (the
`src` directory of another checkout, for a before/after comparison) instead of this one.
Then the far side's start-up taken apart: an ssh command through the ControlMaster, a Python
started that way, the agent's connect (spawn, program, hello).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.rig.sshd import SshServer
from tests.rig.trees import make_tree

from bench.bisync import TREE_SEED, regular_files
from bench.common import ROOT, median, scratch, timed

HOOK = ROOT / "bench" / "phases_hook.py"


def run_hooked(argv: list[str], env: dict[str, str], out: Path) -> float:
    started = time.time()
    proc = subprocess.run([sys.executable, str(HOOK), *argv], env=dict(env, TETHER_T0=repr(started),
                          TETHER_PHASES_OUT=str(out)), capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    took = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: tether failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return took


def timeline(out: Path) -> str:
    """Per phase, medians over the recorded runs of its first start, its last end and the time
    spent in it (a phase entered more than once, as the unlock of each side or the state
    writes after each batch: the sum of its spans, nested calls counted once)."""
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    spans: dict[str, list[tuple[float, float, float]]] = {}
    for marks in runs:
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        inside: dict[tuple[str, str], list[float]] = {}
        total: dict[str, float] = {}
        for t, thread, what in marks:
            kind, _, label = what.partition(" ")
            if kind == ">":
                first.setdefault(label, t)
                inside.setdefault((label, thread), []).append(t)
            elif kind == "<":
                last[label] = t
                opened = inside.get((label, thread))
                if opened:
                    began = opened.pop()
                    if not opened:  # the outermost call of a nested one
                        total[label] = total.get(label, 0.0) + t - began
            else:
                first.setdefault(what, t)
                last[what] = t
        for key, t in first.items():
            if key in last:
                spans.setdefault(key, []).append((t, last[key], total.get(key, 0.0)))
    rows = [f"{'phase':<40} {'start':>7} {'end':>7} {'in it':>7}  (ms since launch, medians of {len(runs)})"]
    for key, got in sorted(spans.items(), key=lambda kv: (median([s for s, _e, _t in kv[1]]), kv[0])):
        s, e = median([s for s, _e, _t in got]), median([e for _s, e, _t in got])
        spent = median([t for _s, _e, t in got])
        rows.append(f"{key:<40} {'':>7} {e:7.1f}" if s == e else f"{key:<40} {s:7.1f} {e:7.1f} {spent:7.1f}")
    return "\n".join(rows)


def edit(trees: tuple[Path, Path], files: list[str], n: int, rng: random.Random) -> None:
    """n files with new content on each side (different files), as bench.bisync's 100+100."""
    chosen = rng.sample(files, 2 * n)
    for i, rel in enumerate(chosen):
        path = trees[0 if i < n else 1] / rel
        path.write_bytes(rng.randbytes(max(1, path.stat().st_size + rng.randint(-32, 64))))


def far_side(server: SshServer, env: dict[str, str], root: Path, rounds: int) -> str:
    """The far side's start-up taken apart, through tether's own ControlMaster."""
    sys.path.insert(0, str(ROOT / "src"))
    from tether.dirs import Dirs
    from tether.ssh import SshOptions
    from tether.transport.agent import AgentClient

    old = dict(os.environ)
    os.environ.update(env)
    try:
        ssh = SshOptions.from_env(Dirs.from_env())
    finally:
        os.environ.clear()
        os.environ.update(old)
    base = [*ssh.argv(), "--", server.alias]
    true = median([timed([*base, "true"]) for _ in range(rounds)])
    py = median([timed([*base, "exec /usr/bin/python3 -S -c pass"]) for _ in range(rounds)])
    connects = []
    for _ in range(rounds):
        started = time.perf_counter()
        client = AgentClient.connect_ssh(ssh, server.alias, str(root))
        connects.append(time.perf_counter() - started)
        client.close()
    agent = median(connects)
    return (
        f"far side start-up, through the ControlMaster: ssh command {true * 1000:.1f} ms (channel + login shell), "
        f"+ python3 -S {1000 * (py - true):.1f} ms, + agent program and hello {1000 * (agent - py):.1f} ms "
        f"= agent connect {agent * 1000:.1f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--changed", type=int, default=0, help="files edited on each side before every pass")
    ap.add_argument("--fast-shell", action="store_true", help="the ssh user's login shell reads no rc file")
    ap.add_argument("--src", help="run the tether in this src directory (another checkout's)")
    args = ap.parse_args()
    with scratch(2048) as work:
        base = work / "base"
        make_tree(base, args.files, seed=TREE_SEED, total_bytes=args.files * 3000, hostile=False,
                  symlinks=False, empty_dirs=False)  # fmt: skip
        files = regular_files(base)
        trees = {}
        for name in ("A1", "L", "A2", "S"):  # each pair its own trees: edits stay within the pair
            trees[name] = work / name
            subprocess.run(["cp", "-a", str(base), str(trees[name])], check=True)
        rng = random.Random(3)
        with SshServer.start(work / "sshd", fast_shell=args.fast_shell) as server:
            env = server.env(dict(os.environ, TETHER_HOME=str(work / "home")))
            if args.src:
                env["PYTHONPATH"] = str(Path(args.src).resolve())
            cases = {
                "local<->local": (trees["A1"], trees["L"], str(trees["L"])),
                "local<->ssh": (trees["A2"], trees["S"], f"{server.alias}:{trees['S']}"),
            }
            for label, (a, b, b_spec) in cases.items():
                argv = ["bisync", str(a), b_spec]
                run_hooked(argv, env, work / "first.jsonl")
                out = work / f"{label}.jsonl"
                walls = []
                for r in range(args.rounds + 1):
                    if args.changed:
                        edit((a, b), files, args.changed, rng)
                    took = run_hooked(argv, env, out if r else work / "warm.jsonl")
                    if r:
                        walls.append(took)
                kind = f"{args.changed}+{args.changed}" if args.changed else "no-change"
                wall = f"{statistics.median(walls) * 1000:.0f} ms (min {min(walls) * 1000:.0f})"
                print(f"\n{label}, {kind} pass: wall median {wall}")
                print(timeline(out))
            print()
            print(far_side(server, env, trees["S"], args.rounds))
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
