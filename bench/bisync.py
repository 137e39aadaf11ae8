"""Two-way sync: `tether bisync` against unison (and rclone bisync) on the same trees, same work.

Usage: .venv/bin/python -m bench.bisync [--files 20000] [--rounds 5] [--only local,ssh]
                                         [--tools tether,unison,rclone] [--fast-shell]
                                         [--unison-master]
A 20,000-file tree (~1,000 dirs, a few KB a file) is copied to one pair of equal replicas per
tool; each tool makes its state with an initial run, then each case times whole commands
(median of --rounds, after one warm-up round): a pass after 100 files changed on A and 100 other
files on B, and a pass with nothing changed. B is a local dir, or the same dir reached over ssh
(the rig's sshd on 127.0.0.1; with --fast-shell its sessions get an empty HOME, so the login shell
reads no rc file, as on a host whose shell starts fast: this machine's root runs pyenv's init on
every ssh command); with --unison-master unison's ssh gets a ControlMaster too, so that both
tools pay the same ssh (tether's options keep one per host; by default unison connects anew
each run, as it does out of the box). At the end of each case every replica is compared with a reference
tree that had all the changes applied by hand: a tool that does not sync is not benchmarked.
The exit code is 0 whatever the ratios; non-zero only when a tool fails or does not converge.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.sshd import SshServer
from tests.rig.trees import make_tree

from bench.common import BASE, TETHER, Arg, median, scratch, timed
from tether.transport.rclone_bin import rclone_program

TOOLS = ("tether", "unison", "rclone")
LIMIT = 1.00  # tether / unison
CHANGED = 100  # files changed on each side before a "100+100" pass
TREE_SEED = 61  # make_tree draws files/20 dirs for this seed: 1,000 dirs for 20,000 files
RCLONE_REMOTE = "benchsftp"
MTIME_SLACK_NS = 1_000_000_000  # sftp sets whole seconds

Row = tuple[str, dict[str, float], float | None]  # case, seconds by tool, limit on tether/unison


@dataclass
class Pair:
    tool: str
    a: Path
    b: Path  # where B lives on this machine (the ssh server is 127.0.0.1)
    b_spec: str  # how the tool names B
    times: dict[str, list[float]] = field(default_factory=dict)


class Tools:
    """The argv and environment of one pass of each tool."""

    def __init__(self, work: Path, server: SshServer | None, unison_master: bool = False) -> None:
        self.work, self.server, self.unison_master = work, server, unison_master
        self.unison_local = work / "unison-home"
        self.unison_remote = work / "unison-home-remote"  # the server side's archives, away from ~/.unison
        self.rclone_dir = work / "rclone"
        for d in (self.unison_local, self.unison_remote, self.rclone_dir / "cache"):
            d.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ)
        self.tether_env = dict(base, TETHER_HOME=str(work / "tether-home"))
        if server is not None:
            self.tether_env = server.env(self.tether_env)
        self.unison_env = dict(base, UNISON=str(self.unison_local))
        self.rclone_env = dict(base, RCLONE_CACHE_DIR=str(self.rclone_dir / "cache"))
        if server is not None:
            self.rclone_env.update(
                {
                    f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_{k}": v
                    for k, v in {
                        "TYPE": "sftp",
                        "HOST": "127.0.0.1",
                        "PORT": str(server.port),
                        "USER": server.user,
                        "KEY_FILE": str(server.client_key),
                        "KNOWN_HOSTS_FILE": str(server.known_hosts),
                        "SHELL_TYPE": "unix",
                        # else rclone runs `md5sum FILE` over ssh for every file it lists, and a
                        # pass takes minutes; without hashes its listings hold size and mtime (as with local files too)
                        "MD5SUM_COMMAND": "none",
                        "SHA1SUM_COMMAND": "none",
                    }.items()
                }
            )

    def b_spec(self, tool: str, b: Path, ssh: bool) -> str:
        if not ssh:
            return str(b)
        assert self.server is not None
        return {
            "tether": f"{self.server.alias}:{b}",
            "base": f"{self.server.alias}:{b}",
            "unison": f"ssh://{self.server.alias}/{b}",  # ssh://host//abs/path: an absolute path
            "rclone": f"{RCLONE_REMOTE}:{b}",
        }[tool]

    def command(self, pair: Pair, first: bool) -> tuple[list[Arg], dict[str, str]]:
        if pair.tool == "tether":
            return [*TETHER, "bisync", pair.a, pair.b_spec], self.tether_env
        if pair.tool == "base" and BASE:
            env = dict(self.tether_env, TETHER_HOME=str(self.work / "base-home"))
            return [*BASE, "bisync", pair.a, pair.b_spec], env
        if pair.tool == "unison":
            argv: list[Arg] = ["unison", pair.a, pair.b_spec, "-batch", "-auto", "-times", "-perms", "0",
                               "-confirmbigdel=false", "-logfile", self.work / "unison.log"]  # fmt: skip
            if self.server is not None and pair.b_spec.startswith("ssh://"):
                sshargs = f"-F {self.server.ssh_config}"
                if self.unison_master:  # as tether's ssh options (unison splits -sshargs on spaces)
                    sshargs += f" -o ControlMaster=auto -o ControlPath={self.work}/um-%C -o ControlPersist=60"
                argv += ["-sshargs", sshargs, "-servercmd", f"env UNISON={self.unison_remote} unison"]
            return argv, self.unison_env
        if pair.tool == "rclone":
            argv = [rclone_program(), "bisync", pair.a, pair.b_spec, "--config", "/dev/null",
                    "--workdir", self.rclone_dir / "bisync"]  # fmt: skip
            return [*argv, "--resync"] if first else argv, self.rclone_env
        raise ValueError(pair.tool)


def versions(tools: list[str]) -> None:
    cmds = {"tether": [*TETHER, "--version"], "base": [*(BASE or TETHER), "--version"],
            "unison": ["unison", "-version"], "rclone": [rclone_program(), "version"]}  # fmt: skip
    for t in tools:
        p = subprocess.run(cmds[t], capture_output=True, text=True, check=False)
        print(f"  {t}: {(p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr).strip() else '?'}")
    print(f"  ssh: {subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}")


def regular_files(root: Path) -> list[str]:
    out = []
    for d, _dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in files if os.path.isfile(os.path.join(d, f))]
    return sorted(out)


def ignored(name: str) -> bool:
    """Tools' own artefacts inside a replica."""
    return name.startswith((".tether", ".unison", ".rclone")) or name == "RCLONE_TEST"


def listing(root: Path) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [n for n in dirs if not ignored(n)]
        for n in dirs + files:
            if not ignored(n):
                p = os.path.join(d, n)
                out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def differences(tree: Path, ref: Path, ref_list: dict[str, os.stat_result]) -> tuple[list[str], int]:
    """(hard differences: names, types, bytes; count of files whose mtime is off by more than 1 s)."""
    got = listing(tree)
    out = [f"missing {n}" for n in sorted(ref_list.keys() - got.keys())]
    out += [f"extra {n}" for n in sorted(got.keys() - ref_list.keys())]
    mtimes = 0
    for n in sorted(ref_list.keys() & got.keys()):
        want, have = ref_list[n], got[n]
        if (want.st_mode & 0o170000) != (have.st_mode & 0o170000):
            out.append(f"type differs {n}")
        elif os.path.isfile(ref / n):
            if want.st_size != have.st_size or (ref / n).read_bytes() != (tree / n).read_bytes():
                out.append(f"content differs {n}")
            elif abs(want.st_mtime_ns - have.st_mtime_ns) > MTIME_SLACK_NS:
                mtimes += 1
    return out, mtimes


def verify(label: str, pairs: list[Pair], ref: Path) -> bool:
    ref_list = listing(ref)
    ok = True
    for p in pairs:
        for side, tree in (("A", p.a), ("B", p.b)):
            diffs, mtimes = differences(tree, ref, ref_list)
            if diffs:
                ok = False
                print(f"  NOT SYNCED after {label}: {p.tool} {side}: {len(diffs)} differences, e.g. {diffs[:5]}")
            if mtimes:
                print(f"  note after {label}: {p.tool} {side}: {mtimes} files with the right bytes but another mtime")
    if ok:
        print(f"  verified after {label}: every replica equals the reference ({len(ref_list)} entries)")
    return ok


def mutate(pairs: list[Pair], ref: Path, files: list[str], rng: random.Random) -> None:
    """New content (size within a few dozen bytes of the old) and a new mtime: 100 files on A, 100 others on B."""
    chosen = rng.sample(files, 2 * CHANGED)
    now = time.time_ns()
    for i, rel in enumerate(chosen):
        size = max(1, (ref / rel).stat().st_size + rng.randint(-32, 64))
        data = rng.randbytes(size)
        mtime = now + i * 1000
        targets = [ref] + [p.a if i < CHANGED else p.b for p in pairs]
        for root in targets:
            path = root / rel
            path.write_bytes(data)
            os.utime(path, ns=(mtime, mtime))


def run_case(
    label: str, pairs: list[Pair], tools: Tools, rounds: int, change: tuple[Path, list[str], random.Random] | None
) -> None:
    for p in pairs:
        p.times[label] = []
    for r in range(rounds + 1):  # round 0 warms up and is not counted
        if change is not None:
            mutate(pairs, *change)
        order = pairs[r % len(pairs) :] + pairs[: r % len(pairs)]  # who goes first changes each round
        for p in order:
            argv, env = tools.command(p, first=False)
            took = timed(argv, env)
            if r:
                p.times[label].append(took)


def run_transport(
    work: Path, base: Path, names: list[str], server: SshServer | None, rounds: int, unison_master: bool = False
) -> tuple[list[Row], dict[str, float]]:
    """The rows, and for each timed case with the base build, the median of the rounds' own
    ratios (this build / base, the two timed back to back in one round): the machine's mood
    weighs on both sides of each ratio alike, where a ratio of medians takes each side's median
    from different rounds."""
    ssh = server is not None
    kind = "ssh" if ssh else "local"
    here = work / kind
    here.mkdir()
    tools = Tools(here, server, unison_master)
    ref = here / "ref"
    subprocess.run(["cp", "-a", str(base), str(ref)], check=True)
    pairs = []
    for t in names:
        a, b = here / f"{t}-A", here / f"{t}-B"
        for d in (a, b):
            subprocess.run(["cp", "-a", str(base), str(d)], check=True)
        pairs.append(Pair(t, a, b, tools.b_spec(t, b, ssh)))
    init = {}
    for p in pairs:
        argv, env = tools.command(p, first=True)
        init[p.tool] = timed(argv, env)
    ok = verify(f"initial sync ({kind})", pairs, ref)
    files = regular_files(ref)
    rng = random.Random(7 if ssh else 5)
    case1 = f"100+100 pass ({kind})"
    run_case(case1, pairs, tools, rounds, (ref, files, rng))
    ok = verify(case1, pairs, ref) and ok
    case2 = f"no-change pass ({kind})"
    run_case(case2, pairs, tools, rounds, None)
    ok = verify(case2, pairs, ref) and ok
    if not ok:
        raise SystemExit(f"bench: a tool did not converge ({kind}); its figures would mean nothing")
    by = {p.tool: p for p in pairs}
    rows: list[Row] = [(f"initial sync, equal ({kind}) [1 run]", {t: init[t] for t in names}, None)]
    rows += [(c, {t: median(by[t].times[c]) for t in names}, LIMIT) for c in (case1, case2)]
    paired = {}
    if "base" in by and "tether" in by:
        for c in (case1, case2):
            paired[c] = median([x / y for x, y in zip(by["tether"].times[c], by["base"].times[c], strict=True)])
    return rows, paired


def ssh_costs(server: SshServer, work: Path) -> str:
    """What one ssh command costs on this server: a new connection each time (as unison runs
    it), and through an open ControlMaster (as tether's ssh options make it)."""

    def run(*opts: str) -> float:
        return timed(["ssh", "-F", server.ssh_config, *opts, server.alias, "true"])

    fresh = median([run() for _ in range(5)])
    sock = ["-o", f"ControlPath={work / 'cm-%C'}"]
    run("-o", "ControlMaster=auto", "-o", "ControlPersist=30", *sock)
    shared = median([run(*sock) for _ in range(5)])
    run("-O", "exit", *sock)
    return f"ssh true: {fresh * 1000:.0f}ms over a new connection, {shared * 1000:.0f}ms through a ControlMaster"


def table(rows: list[Row]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f}ms"

    out = [f"{'case':<38} {'tether':>9} {'unison':>9} {'ratio':>6} {'limit':>6}  {'verdict':<8} {'rclone bisync':>14}"]
    for name, m, limit in rows:
        t, u = m.get("tether"), m.get("unison")
        ratio = t / u if t is not None and u is not None else None
        verdict = "" if limit is None or ratio is None else ("ok" if ratio <= limit else "NOT MET")
        out.append(
            f"{name:<38} {ms(t):>9} {ms(u):>9} {'-' if ratio is None else f'{ratio:.2f}':>6} "
            f"{'-' if limit is None else f'{limit:.2f}':>6}  {verdict:<8} {ms(m.get('rclone')):>14}"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="local,ssh")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--fast-shell", action="store_true", help="the ssh user's login shell reads no rc file")
    ap.add_argument("--unison-master", action="store_true", help="unison's ssh keeps a ControlMaster, as tether's")
    args = ap.parse_args()
    names = [t for t in TOOLS if t in args.tools.split(",")] + (["base"] if BASE else [])
    transports = args.only.split(",")
    print("versions:")
    versions(names)
    with scratch(4096) as work:
        base = work / "base"
        info = make_tree(base, args.files, seed=TREE_SEED, total_bytes=args.files * 3000, hostile=False,
                         symlinks=False, empty_dirs=False)  # fmt: skip
        print(f"tree: {info.files} files, {info.dirs} dirs, {info.bytes / 1e6:.0f} MB; {CHANGED}+{CHANGED} files "
              f"changed per round; medians of {args.rounds} rounds after 1 warm-up")  # fmt: skip
        rows: list[Row] = []
        paired: dict[str, float] = {}
        if "local" in transports:
            got, by_round = run_transport(work, base, names, None, args.rounds)
            rows += got
            paired.update(by_round)
        if "ssh" in transports:
            with SshServer.start(work / "sshd", fast_shell=args.fast_shell) as server:
                print(f"sshd: {'fast shell (empty HOME)' if args.fast_shell else 'default shell'}; "
                      f"{ssh_costs(server, work)}; unison's ssh "
                      f"{'through a ControlMaster' if args.unison_master else 'connects anew each run'}")  # fmt: skip
                got, by_round = run_transport(work, base, names, server, args.rounds, args.unison_master)
                rows += got
                paired.update(by_round)
        print("wall-clock of whole commands (tether's includes Python start-up); B over ssh is 127.0.0.1")
        print(table(rows))
        if BASE:
            print(f"tether against the base build ({BASE[0]}), same rounds, interleaved "
                  "(ratio of the medians; then the median of each round's own ratio):")  # fmt: skip
            for name, m, _limit in rows:
                by = f"  by round {paired[name]:.3f}" if name in paired else ""
                print(f"  {name:<38} {m['tether'] * 1000:7.0f}ms  base {m['base'] * 1000:7.0f}ms  "
                      f"ratio {m['tether'] / m['base']:.3f}{by}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
