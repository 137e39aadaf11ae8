"""Continuous mirror: tether against lsyncd (and plain rsync) on the same machine, same work.

Usage: .venv/bin/python -m bench.live [--only latency,narrow,burst,rename,fanout,fanout32,idle,scale] [--rounds N]
Each case prints tether's figure, the peer's, and the limit from issue 4. Needs root for the
tmpfs scratch (else it runs on disk) and lsyncd for the side-by-side rows.  With
TETHER_BENCH_BASE (bench/common.py), the burst runs `--rounds` times for each build, the two
builds alternating, and ends with both medians.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.rig.sshd import ALIAS_DOWN, SshServer
from tests.rig.trees import make_tree, touch_files

from bench.common import BASE, TETHER, scratch


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def poll(cond: Callable[[], bool], deadline: float = 120.0, step: float = 0.0005) -> float:
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > deadline:
            raise SystemExit("bench: timed out waiting for the target")
        time.sleep(step)
    return time.perf_counter() - start


def has(path: Path, size: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return path.stat().st_size == size
        except FileNotFoundError:
            return False

    return check


def first_pass_done(b: Bench, name: Any) -> bool:
    return bool(b.status(name)["targets"][0]["full_passes"] >= 1)


def renamed(old: Path, new: Path) -> bool:
    return not old.exists() and (new / "f1999").exists()


def idle_since(status_file: Path, since: float) -> bool:
    try:
        t = json.loads(status_file.read_text())["targets"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return False
    return bool(t["state"] == "idle" and t["pending"] == 0 and (t["last_success"] or 0) > since)


def all_arrived(items: list[tuple[Path, int]]) -> Callable[[], bool]:
    """Whether every (path, size) is there, each check looking only at what was not there yet:
    with 32 targets the poll itself would otherwise take a core of a 2-core machine from the transfer."""
    left = [(str(p), n) for p, n in items]

    def check() -> bool:
        for item in list(left):
            try:
                if os.stat(item[0]).st_size == item[1]:
                    left.remove(item)
            except FileNotFoundError:
                pass
        return not left

    return check


def same_listing(a: Path, b: Path) -> Callable[[], bool]:
    def check() -> bool:
        try:
            la = sorted((str(p.relative_to(a)), p.lstat().st_size) for p in a.rglob("*"))
            lb = sorted((str(p.relative_to(b)), p.lstat().st_size) for p in b.rglob("*"))
        except FileNotFoundError:
            return False
        return la == lb

    return check


class Bench:
    def __init__(self, work: Path, server: SshServer) -> None:
        self.work, self.server = work, server
        self.env = server.env(dict(os.environ, TETHER_HOME=str(work / "home")))
        self.n = 0
        self.cmd = TETHER  # the build that runs (BASE for the base build's rounds)

    def tether(self, *args: str) -> str:
        p = subprocess.run([*self.cmd, *args], env=self.env, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"bench: tether {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    @contextlib.contextmanager
    def tether_job(self, src: Path, targets: list[str], **opts: object) -> Iterator[str]:
        self.n += 1
        name = f"b{self.n}"
        jobs = self.work / "home" / "config" / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        body = {"source": str(src), "targets": targets, "interval": 0, **opts}
        (jobs / f"{name}.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items()))
        self.tether("start", name)
        try:
            yield name
        finally:
            self.tether("stop", name)

    def status(self, name: Any) -> Any:
        doc: Any = json.loads(self.tether("status", name, "--json"))["jobs"][0]
        return doc

    @contextlib.contextmanager
    def lsyncd(self, src: Path, dst: Path, ssh: bool, direct: bool = False) -> Iterator[None]:
        """lsyncd on the same work; `direct`: its default.direct mode (local targets: cp and mv
        at once, no rsync), its fastest."""
        self.n += 1
        cfg = self.work / f"lsyncd{self.n}.lua"
        rsh = f"/usr/bin/ssh -F {self.server.ssh_config}"
        if ssh:
            body = (f'sync{{default.rsyncssh, source="{src}", host="{self.server.alias}", targetdir="{dst}", delay=0,'
                    f' rsync={{rsh="{rsh}"}}, ssh={{_extra={{"-F", "{self.server.ssh_config}"}}}}}}')  # fmt: skip
        else:
            mode = "direct" if direct else "rsync"
            body = f'sync{{default.{mode}, source="{src}", target="{dst}", delay=0}}'
        cfg.write_text(f'settings{{nodaemon=true, logfile="{self.work}/lsyncd{self.n}.log"}}\n{body}\n')
        proc = subprocess.Popen(["lsyncd", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            proc.terminate()
            proc.wait()


def latency(b: Bench, src: Path, dst: Path, samples: int = 50) -> list[float]:
    out = []
    (src / "lat").mkdir(exist_ok=True)
    poll(lambda: (dst / "lat").is_dir(), 60)
    data = os.urandom(4096)
    for i in range(samples):
        p = src / "lat" / f"s{b.n}-{i}"
        p.write_bytes(data)
        out.append(poll(has(dst / "lat" / p.name, len(data)), 30))
        time.sleep(0.02)  # space the samples so each is one change, as in lsyncd's own figures
    return out


def row(name: str, xs: list[float], limit: str = "") -> None:
    print(f"  {name:<38} p50 {pct(xs, 50) * 1000:7.1f} ms  p95 {pct(xs, 95) * 1000:7.1f} ms   {limit}")


def case_latency(b: Bench) -> None:
    print("latency: one 4 KB file written, until complete on the target (50 samples)")
    src = b.work / "lat-src"
    make_tree(src, 100, seed=31, hostile=False)
    for label, ssh in (("ssh", True), ("local", False)):
        dst = b.work / f"lat-{label}-tether"
        spec = f"{b.server.alias}:{dst}" if ssh else str(dst)
        with b.tether_job(src, [spec]):
            poll(same_listing(src, dst), 120)
            xs = latency(b, src, dst)
        row(f"tether  -> {label}", xs, "limit p50 <= 5 ms" if ssh else "limit p50 <= 3 ms")
        if shutil.which("lsyncd"):
            for direct in (False, True) if not ssh else (False,):
                ldst = b.work / f"lat-{label}-lsyncd{'-direct' if direct else ''}"
                with b.lsyncd(src, ldst, ssh, direct):
                    poll(same_listing(src, ldst), 120)
                    row(f"lsyncd ({'direct' if direct else 'rsync'}, delay=0) -> {label}", latency(b, src, ldst))


def case_scale(b: Bench) -> None:
    print("latency vs tree size (ssh target): p50 on 100,000 files within 1.2x of p50 on 100 files")
    res = {}
    for n in (100, 100_000):
        src, dst = b.work / f"scale-{n}", b.work / f"scale-{n}-dst"
        make_tree(src, n, seed=32, total_bytes=n * 200, hostile=False)
        with b.tether_job(src, [f"{b.server.alias}:{dst}"]):
            poll(same_listing(src, dst), 300)
            res[n] = latency(b, src, dst)
        row(f"tether, {n} files", res[n])
    print(
        f"  ratio p50(100k)/p50(100) = {statistics.median(res[100_000]) / statistics.median(res[100]):.2f} (limit 1.2)"
    )


def case_narrow(b: Bench) -> None:
    print("narrow update: 10 files changed in a 100,000-file tree, until all are on the ssh target")
    src, dst = b.work / "narrow", b.work / "narrow-dst"
    make_tree(src, 100_000, seed=33, total_bytes=100_000 * 200, hostile=False)
    with b.tether_job(src, [f"{b.server.alias}:{dst}"]):
        poll(same_listing(src, dst), 600)
        times = []
        for round_no in range(5):
            changed = touch_files(src, 10, seed=100 + round_no)
            sizes = [(dst / p.relative_to(src), p.stat().st_size) for p in changed]
            times.append(poll(all_arrived(sizes), 60))
    rsync_pass = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["rsync", "-a", "--delete", "-e", f"ssh -F {b.server.ssh_config}", f"{src}/",
                        f"{b.server.alias}:{dst}/"], check=True)  # fmt: skip
        rsync_pass.append(time.perf_counter() - t)
    m, r = statistics.median(times), statistics.median(rsync_pass)
    print(
        f"  tether {m * 1000:.0f} ms (median of 5; limit 250 ms); full rsync pass {r * 1000:.0f} ms; ratio {m / r:.2f}"
    )


def case_burst(b: Bench) -> float:
    print("burst: a 20,000-file archive extracted into the watched tree, until converged on the ssh target")
    src, dst, stage = b.work / "burst", b.work / "burst-dst", b.work / "stage"
    for old in (src, dst, stage, b.work / "burst-rsync"):  # another round's
        shutil.rmtree(old, ignore_errors=True)
    src.mkdir()
    make_tree(stage, 20_000, seed=34, total_bytes=20_000 * 2000, hostile=False)
    archive = b.work / "burst.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(stage, arcname="x")
    with b.tether_job(src, [f"{b.server.alias}:{dst}"]) as name:
        poll(functools.partial(first_pass_done, b, name), 60, 0.01)
        t0 = time.perf_counter()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(src)], check=True)
        burst_end = time.time_ns()
        if os.environ.get("BENCH_LOG"):
            print(f"  (extraction took {time.perf_counter() - t0:.2f} s)")
        # wait cheaply (reading the status file) for tether to report idle, so that the polling
        # does not steal CPU from the transfer; then check the listing itself
        status_file = b.work / "home" / "run" / "jobs" / f"{name}.status.json"
        poll(functools.partial(idle_since, status_file, burst_end / 1e9), 300, 0.05)
        poll(same_listing(src, dst), 300, 0.05)
        # when the target last changed: the newest ctime there (a rename or a chmod sets it), so
        # the time our own polling takes does not count
        last = max(os.lstat(os.path.join(d, n)).st_ctime_ns for d, ds, fs in os.walk(dst) for n in ds + fs)
        after = (last - burst_end) / 1e9
        if os.environ.get("BENCH_LOG"):
            print(b.tether("log", "b1" if b.n == 1 else f"b{b.n}", "-n", "30"))
    rs = b.work / "burst-rsync"
    t = time.perf_counter()
    subprocess.run(
        ["rsync", "-a", "-e", f"ssh -F {b.server.ssh_config}", f"{src}/x/", f"{b.server.alias}:{rs}/"], check=True
    )
    plain = time.perf_counter() - t
    print(f"  tether converged {after:.2f} s after the burst; plain rsync of the subtree {plain:.2f} s; "
          f"ratio {after / plain:.2f} (limit 1.1)")  # fmt: skip
    return after


def burst_against_base(b: Bench, rounds: int) -> None:
    """The burst for this build and the base build, alternating, so a busy machine weighs on both."""
    assert BASE is not None
    took: dict[str, list[float]] = {"this build": [], "base build": []}
    for r in range(rounds):
        for name, cmd in (("this build", TETHER), ("base build", BASE))[:: 1 if r % 2 == 0 else -1]:
            b.cmd = cmd
            print(f"[{name}, round {r + 1}]", end=" ")
            took[name].append(case_burst(b))
    b.cmd = TETHER
    ours, base = (statistics.median(took[k]) for k in ("this build", "base build"))
    print(f"  burst medians of {rounds}: this build {ours:.2f} s, base build {base:.2f} s, ratio {ours / base:.2f}"
          f" (limit 1.05); this build {', '.join(f'{x:.2f}' for x in took['this build'])}; base build "
          f"{', '.join(f'{x:.2f}' for x in took['base build'])}")  # fmt: skip


def case_rename(b: Bench) -> None:
    print("rename of a directory holding 2,000 files, ssh target")
    src = b.work / "ren"
    (src / "d").mkdir(parents=True)
    for i in range(2000):
        (src / "d" / f"f{i:04d}").write_bytes(os.urandom(1024))
    for tool in ("tether", "lsyncd"):
        if tool == "lsyncd" and not shutil.which("lsyncd"):
            continue
        dst = b.work / f"ren-{tool}"
        ctx = b.tether_job(src, [f"{b.server.alias}:{dst}"]) if tool == "tether" else b.lsyncd(src, dst, True)
        with ctx as name:
            poll(same_listing(src, dst), 120)
            if tool == "tether":  # the first full pass is counted once it has finished
                poll(functools.partial(first_pass_done, b, name), 60, 0.01)
            before = b.status(name)["targets"][0]["bytes_sent"] if tool == "tether" else 0
            old, new = ("d", "e") if (src / "d").exists() else ("e", "d")
            ino = (dst / old / "f0000").stat().st_ino
            os.rename(src / old, src / new)
            # a rename is atomic on the target too: the new name complete and the old one gone
            took = poll(functools.partial(renamed, dst / old, dst / new), 120)
            poll(same_listing(src, dst), 120)
            resent = (dst / new / "f0000").stat().st_ino != ino
            sent = (b.status(name)["targets"][0]["bytes_sent"] - before) if tool == "tether" else None
        print(f"  {tool:<7} {took * 1000:7.1f} ms, "
              + (f"file bytes sent {sent}" if sent is not None else f"f0000 re-sent: {bool(resent)}")
              + ("  (limit < 100 ms, no data)" if tool == "tether" else ""))  # fmt: skip


def case_fanout(b: Bench) -> None:
    print("fan-out: 8 ssh targets; time until a 4 KB file is on all (30 samples)")
    src = b.work / "fan"
    make_tree(src, 100, seed=35, hostile=False)
    for down in (False, True):
        dsts = [b.work / f"fan-{int(down)}-{i}" for i in range(8)]
        specs = [f"{b.server.alias}:{d}" for d in dsts]
        if down:
            specs[-1] = f"{ALIAS_DOWN}:/nowhere"
            dsts = dsts[:-1]
        with b.tether_job(src, specs):
            for d in dsts:
                poll(same_listing(src, d), 120)
            xs = []
            data = os.urandom(4096)
            for i in range(30):
                p = src / f"fan-{int(down)}-{i}"
                p.write_bytes(data)
                xs.append(poll(all_arrived([(d / p.name, 4096) for d in dsts]), 30))
                time.sleep(0.02)
        row(f"8 targets{', one down (7 measured)' if down else ''}", xs, "limit p95 <= 300 ms")


def case_fanout32(b: Bench, n: int = 32) -> None:
    """Issue 16: one source, n ssh targets, each its own sshd on a loopback port (so its own
    host and its own agent channel); then one of them down. A p95 is the tail of the samples:
    the two set-ups alternate, twice each, 100 samples a run, so a busy moment of the machine
    falls on both (with 30 samples, three runs of one set-up gave a p95 of 82, 93 and 108 ms)."""
    print(f"fan-out: {n} ssh targets, one sshd each; time until a 4 KB file is on all (2 runs x 100 samples)")
    servers = [b.server]
    try:
        for i in range(1, n):
            servers.append(SshServer.start(b.work / f"sshd-fan{i}"))
        config = b.work / "ssh_config_fan"
        blocks = [b.server.ssh_config.read_text()]
        for i, s in enumerate(servers):  # each server's own alias block, renamed fan<i>
            own = s.ssh_config.read_text().split("\nHost ")[0]
            blocks.append(own.replace(f"Host {s.alias}\n", f"Host fan{i}\n", 1))
        config.write_text("\n".join(blocks))
        saved = b.env["TETHER_SSH_CONFIG"]
        b.env["TETHER_SSH_CONFIG"] = str(config)
        src = b.work / "fan32"
        make_tree(src, 100, seed=37, hostile=False)
        took: dict[bool, list[float]] = {False: [], True: []}
        for run, down in enumerate((False, True, False, True)):
            dsts = [b.work / f"fan32-{run}-{i}" for i in range(n)]
            specs = [f"fan{i}:{d}" for i, d in enumerate(dsts)]
            if down:
                specs[-1] = f"{ALIAS_DOWN}:/nowhere"
                dsts = dsts[:-1]
            with b.tether_job(src, specs):
                for d in dsts:
                    poll(same_listing(src, d), 300)
                data = os.urandom(4096)
                for i in range(100):
                    p = src / f"fan32-{run}-{i}"
                    p.write_bytes(data)
                    took[down].append(poll(all_arrived([(d / p.name, 4096) for d in dsts]), 60, 0.001))
                    time.sleep(0.02)
        for down, xs in took.items():
            row(f"{n} targets{f', one down ({n - 1} measured)' if down else ''}", xs, "limit p95 <= 100 ms")
        print(f"  one down moves the others' p95 by {pct(took[True], 95) / pct(took[False], 95):.2f}x (limit 1.20x)")
        b.env["TETHER_SSH_CONFIG"] = saved
    finally:
        for s in servers[1:]:
            s.stop()


def case_idle(b: Bench, seconds: float) -> None:
    print(f"idle: watching 100,000 files in 4,000 directories, {seconds:.0f} s of quiet")
    src, dst = b.work / "idle", b.work / "idle-dst"
    make_tree(src, 100_000, seed=36, total_bytes=100_000 * 100, depth=3, hostile=False)
    dirs = sum(1 for p in src.rglob("*") if p.is_dir())
    with b.tether_job(src, [str(dst)]) as name:
        poll(same_listing(src, dst), 600)
        pid = int(b.status(name)["pid"])

        def cpu() -> float:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

        c0 = cpu()
        time.sleep(seconds)
        used = cpu() - c0
        rss = next(
            int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS")
        )
    print(f"  {dirs} dirs watched: RSS {rss / 1024:.1f} MB (limit 64 MB), CPU {used:.2f} s over {seconds:.0f} s")


CASES = {"latency": case_latency, "scale": case_scale, "narrow": case_narrow, "burst": case_burst,
         "rename": case_rename, "fanout": case_fanout, "fanout32": case_fanout32}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join([*CASES, "idle"]))
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3, help="burst rounds per build with TETHER_BENCH_BASE")
    args = ap.parse_args()
    with scratch(6000) as work, SshServer.start(work / "sshd") as server:
        b = Bench(work, server)
        for name in args.only.split(","):
            if name == "idle":
                case_idle(b, args.idle_seconds)
            elif name == "burst" and BASE:
                burst_against_base(b, args.rounds)
            else:
                CASES[name](b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
