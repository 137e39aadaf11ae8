"""One-shot mirror over ssh: tether against bare `rsync -a --delete` on the same tree and sshd.

Usage: .venv/bin/python -m bench.mirror_once [--files 20000] [--mb 300] [--rounds 7]
Prints median times and the ratios the foundation issue bounds (1.10 initial, 1.15 rerun), plus
rsync run with the same ControlMaster ssh options as tether, which isolates tether's own cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from tests.rig.sshd import SshServer
from tests.rig.trees import make_tree

from bench.common import BASE, TETHER, Arg, median, scratch, table, timed
from tether.ssh import SshOptions


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with scratch(args.mb * 5 + 512) as work:
        src = work / "src"
        info = make_tree(src, args.files, seed=11, total_bytes=args.mb * 1_000_000)
        print(f"tree: {info.files} files, {info.dirs} dirs, {info.symlinks} symlinks, {info.bytes / 1e6:.0f} MB")
        with SshServer.start(work / "sshd") as server:
            return run(work, src, server, args.rounds)


def run(work: Path, src: Path, server: SshServer, rounds: int) -> int:
    names = ("rsync", "rsync+mux", "tether", *(("base",) if BASE else ()))
    init: dict[str, list[float]] = {n: [] for n in names}
    rerun: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        dst = {n: work / f"dst-{n}" for n in names}
        for d in dst.values():
            shutil.rmtree(d, ignore_errors=True)
        sockets = work / f"sockets{r}"
        sockets.mkdir()
        env = server.env(dict(os.environ, TETHER_HOME=str(work / f"home{r}")))  # fresh: the target is new to tether
        mux_rsh = SshOptions(str(sockets), str(server.ssh_config)).rsync_rsh()
        cmds: list[tuple[str, list[Arg], dict[str, str] | None]] = [
            ("rsync", ["rsync", "-a", "--delete", "-e", f"ssh -F {server.ssh_config}", f"{src}/",
                       f"{server.alias}:{dst['rsync']}/"], None),
            ("rsync+mux", ["rsync", "-a", "--delete", "-e", mux_rsh, f"{src}/", f"{server.alias}:{dst['rsync+mux']}/"],
             None),
            ("tether", [*TETHER, "mirror", src, f"{server.alias}:{dst['tether']}"], env),
        ]  # fmt: skip
        if BASE:
            base_env = dict(env, TETHER_HOME=str(work / f"base-home{r}"))
            cmds.append(("base", [*BASE, "mirror", src, f"{server.alias}:{dst['base']}"], base_env))
        cmds = cmds[r % len(cmds) :] + cmds[: r % len(cmds)]  # rotate who goes first: cache warmth favours no one
        for name, argv, e in cmds:
            took = timed(argv, e)
            if r:
                init[name].append(took)
        for name, argv, e in cmds:
            took = timed(argv, e)
            if r:
                rerun[name].append(took)
    m = {n: (median(init[n]), median(rerun[n])) for n in names}
    print(f"medians of {rounds} rounds, ssh target on 127.0.0.1")
    print(
        table(
            [
                ("initial mirror (ssh)", m["tether"][0], m["rsync"][0], 1.10),
                ("no-change rerun (ssh)", m["tether"][1], m["rsync"][1], 1.15),
            ],
            "tether",
            "rsync",
        )
    )
    print(
        table(
            [
                ("initial, same ssh options", m["tether"][0], m["rsync+mux"][0], None),
                ("rerun, same ssh options", m["tether"][1], m["rsync+mux"][1], None),
            ],
            "tether",
            "rsync+mux",
        )
    )
    if BASE:
        print(table([("initial mirror (ssh)", m["tether"][0], m["base"][0], 1.05),
                     ("no-change rerun (ssh)", m["tether"][1], m["base"][1], 1.05)], "tether", "base"))  # fmt: skip
    ok = m["tether"][0] / m["rsync"][0] <= 1.10 and m["tether"][1] / m["rsync"][1] <= 1.15
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
