"""The hostile catalogue (tests/rig/hostile.py) through every job kind and every endpoint kind.

One source tree holds every entry; each case runs one job over it (a mirror job reaches all its
targets in one run), then judges every entry from that run's output and the target: the verdict
written in the catalogue, no torn file under a final name, and a sentinel tree around each
replica (its parent's other entries) byte-for-byte unchanged: nothing written outside the roots.
Endpoint kinds: local, ssh (the rig's sshd), rclone (the local backend and `rclone serve sftp`);
locations take local paths only, and there are no pools yet. tether runs without root's
read-anything capabilities, so the mode-000 entries are really unreadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rig.bisync_oracle import rsync_temps
from tests.rig.bisync_pair import slow_rsync
from tests.rig.hostile import CATALOGUE, GONE_OR_WHOLE, GROW, KNOWN, VANISH, WHOLE, Entry, Skipped, build
from tests.rig.rclone import REMOTE, RcloneServer
from tests.rig.run import find_named, tether_unprivileged
from tests.rig.scorecard import Card
from tests.rig.sshd import SshServer

LOCAL_REMOTE = "hostilelocal"  # an rclone remote of the local backend, defined by variables
CHUNK = 4096  # the growing file grows by whole pages, so a torn copy shows as a misaligned length
GROWTHS, FLIPS = 100, 40
VANISH_BODY = b"hostile " + VANISH + b"\n"  # as the catalogue makes it: the one content it ever has
SETTLE_S = 15  # how long the continuous mirror gets to catch up with all it can (a generous bound)


@dataclass
class Replica:
    """One target (or path2) of a case: what the job names, where it lands here, its kind."""

    label: str  # column of the table: local, ssh, rclone-local, rclone-sftp
    kind: str  # endpoint kind of the catalogue: local, ssh, rclone
    spec: str
    root: Path


# ---------------------------------------------------------------- sentinel


def _sentinel(parent: Path) -> None:
    """Known files beside a replica: its parent's own file and a sibling tree."""
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "keep-parent.txt").write_bytes(b"parent\n")
    (parent / "sentinel-src" / "sub").mkdir(parents=True)
    (parent / "sentinel-src" / "keep.txt").write_bytes(b"sibling\n")
    (parent / "sentinel-src" / "sub" / "deep.txt").write_bytes(b"deep\n")
    os.symlink("keep.txt", parent / "sentinel-src" / "link")


def _snapshot(parent: Path, replicas: set[str]) -> dict[bytes, tuple[object, ...]]:
    """Everything under parent but inside the replicas: type, mode, size, mtime, bytes, link."""
    out: dict[bytes, tuple[object, ...]] = {}
    top = os.fsencode(parent)
    for dirpath, dirs, files in os.walk(top):
        if dirpath == top:
            dirs[:] = [d for d in dirs if os.fsdecode(d) not in replicas]
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(os.fsdecode(p)).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    out[b"."] = tuple(sorted(n for n in os.listdir(top) if os.fsdecode(n) not in replicas))
    return out


# ---------------------------------------------------------------- races


@contextmanager
def races(src: Path, begun: Path) -> Iterator[None]:
    """Once the run writes into `begun` (or after 10 s): the growing file grows by whole pages
    and the vanishing one comes and goes, a bounded number of times (a tree that never settles
    is refused by locations, rightly), ending deleted."""
    grow, vanish = os.path.join(os.fsencode(src), GROW), os.path.join(os.fsencode(src), VANISH)

    def started() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _busy(begun):
            time.sleep(0.005)

    def grower() -> None:
        started()
        with open(grow, "ab") as f:
            for n in range(GROWTHS):
                f.write((b"%08d" % n) * (CHUNK // 8))
                f.flush()
                time.sleep(0.002)

    def vanisher() -> None:
        started()
        for _ in range(FLIPS):
            with open(vanish, "wb") as f:
                f.write(VANISH_BODY)
            time.sleep(0.003)
            os.unlink(vanish)
            time.sleep(0.003)

    threads = [threading.Thread(target=t, daemon=True) for t in (grower, vanisher)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for t in threads:
            t.join()


def _busy(root: Path) -> bool:
    try:
        return any(n != ".tether" for n in os.listdir(root))
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- verdicts


def _shown(path: bytes) -> list[str]:
    """Ways the output may show a name in the path (rsync names the folder it could not open)."""
    forms = set()
    for name in path.split(b"/"):
        forms |= {name.decode("utf-8", "backslashreplace"), name.decode("utf-8", "surrogateescape")}
    return sorted(forms | {f.replace("\n", "\\n") for f in forms})


def _same(a: bytes, b: bytes) -> bool:
    sa, sb = os.lstat(a), os.lstat(b)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    return True


def observe(e: Entry, want: object, src: bytes, dst: bytes, output: str) -> tuple[str, str]:
    """(exact|skipped|failed, detail) for one entry in one replica."""
    s, d = os.path.join(src, e.path), os.path.join(dst, e.path)
    there = os.path.lexists(d)
    if want == WHOLE:
        if not there:
            told = any("growing.bin" in line for line in output.splitlines())
            return ("skipped", "") if told else ("failed", "the growing file is absent and no line names it")
        got, full = Path(os.fsdecode(d)).read_bytes(), Path(os.fsdecode(s)).read_bytes()
        whole = full.startswith(got) and len(got) >= 1 << 20 and len(got) % CHUNK == 0
        return ("exact", "") if whole else ("failed", f"torn: {len(got)} bytes of {len(full)}")
    if want == GONE_OR_WHOLE:
        if os.path.lexists(s):
            return ("exact", "") if there and _same(s, d) else ("failed", "differs from the source")
        ok = not there or Path(os.fsdecode(d)).read_bytes() in (b"", VANISH_BODY)  # both existed
        return ("exact", "") if ok else ("failed", "torn")
    if isinstance(want, Skipped):
        if there:
            return "failed", "expected skipped, but it is in the target"
        said = [line for line in output.splitlines() if want.reason in line]
        if (said and not want.named) or any(f in line for line in said for f in _shown(e.path)):
            return "skipped", ""
        return "failed", f"absent, but no line says {want.reason!r} for it"
    if not os.path.lexists(s):  # gone from the source (the vanishing file, settled): gone here too
        return ("exact", "") if not there else ("failed", "still in the target")
    if not there:
        return "failed", "missing from the target"
    return ("exact", "") if _same(s, d) else ("failed", "differs from the source")


def _partials(replicas: list[Replica]) -> list[bytes]:
    """rclone's in-flight uploads (NAME.XXXXXXXX.partial) outside .tether."""
    hits: list[bytes] = []
    for r in replicas:
        top = os.fsencode(r.root)
        for dirpath, dirs, files in os.walk(top):
            if dirpath == top and b".tether" in dirs:
                dirs.remove(b".tether")
            hits += [os.path.join(dirpath, f) for f in files if f.endswith(b".partial")]
    return hits


def _short(output: str) -> str:
    """The output for a failure message: the deep path's 200-byte names shortened, at most 60 lines."""
    lines = [line.replace("d" * 200, "d…").replace("f" * 180, "f…") for line in output.splitlines()]
    return "\n".join(lines if len(lines) <= 60 else [*lines[:20], "...", *lines[-40:]])


def judge(job: str, src: bytes, replicas: list[Replica], output: str) -> dict[str, dict[str, str]]:
    """Every entry on every replica: label -> entry key -> outcome (or 'failed: why')."""
    table: dict[str, dict[str, str]] = {}
    for r in replicas:
        row = table.setdefault(r.label, {})
        for e in CATALOGUE:
            got, why = observe(e, e.verdict(job, r.kind, r.label), src, os.fsencode(r.root), output)
            known = KNOWN.get((e.key, job, r.label))
            row[e.key] = got if got != "failed" else f"known: {known}" if known else f"failed: {why}"
    return table


def _score(card: Card, src: bytes, replicas: list[Replica], table: dict[str, dict[str, str]]) -> None:
    """On the reliability scorecard, before the asserts: the source files judged, on each replica;
    lost: an entry missing where it should be exact; divergent: any other failure or known finding."""
    contents: list[bytes] = []
    lost = divergent = 0
    for r in replicas:
        for e in CATALOGUE:
            got = table[r.label][e.key]
            p = os.path.join(src, e.path)
            if os.path.isfile(p) and not os.path.islink(p) and os.access(p, os.R_OK):
                contents.append(Path(os.fsdecode(p)).read_bytes())
            lost += got.startswith("failed: missing")
            divergent += got.startswith(("failed", "known")) and not got.startswith("failed: missing")
    card.checked(contents, lost=lost, divergent=divergent)


# ---------------------------------------------------------------- cases


@dataclass
class World:
    tmp: Path
    env: dict[str, str]
    src: Path
    parents: list[Path]


@pytest.fixture
def world(tmp_path: Path, tether_env: dict[str, str]) -> World:
    parent = tmp_path / "w"
    _sentinel(parent)
    src = parent / "src"
    src.mkdir()
    build(src)
    env = tether_env | {f"RCLONE_CONFIG_{LOCAL_REMOTE.upper()}_TYPE": "local"}
    env |= slow_rsync(tmp_path / "slow-bin", 4096)  # the growing file is sent while it grows
    return World(tmp_path, env, src, [parent])


def _replica(w: World, label: str, sshd: SshServer | None, sftp: RcloneServer | None) -> Replica:
    parent = (sftp.root / f"h-{secrets.token_hex(4)}") if label == "rclone-sftp" and sftp else w.tmp / f"t-{label}"
    _sentinel(parent)
    w.parents.append(parent)
    root = parent / "dst"
    if label == "local":
        return Replica(label, "local", str(root), root)
    if label == "ssh":
        assert sshd is not None
        return Replica(label, "ssh", f"{sshd.alias}:{root}", root)
    if label == "rclone-local":
        return Replica(label, "rclone", f"{LOCAL_REMOTE}:{root}", root)
    assert sftp is not None
    return Replica(label, "rclone", f"{REMOTE}:{root.relative_to(sftp.root)}", root)


def _job(env: dict[str, str], name: str, body: str) -> None:
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{name}.toml").write_text(body)


def _run(args: list[str], env: dict[str, str]) -> str:
    proc = tether_unprivileged(args, env)
    return f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def run_case(w: World, job: str, replicas: list[Replica]) -> str:
    """Run one job kind over the world's source to these replicas; returns all it printed."""
    q = json.dumps
    if job in ("mirror", "continuous"):
        _job(w.env, "h", f"source = {q(str(w.src))}\ntargets = {q([r.spec for r in replicas])}\n")
    if job == "mirror":
        with races(w.src, replicas[0].root):
            return _run(["sync", "h"], w.env)
    if job == "continuous":
        out = _run(["start", "h"], w.env)
        try:
            with races(w.src, replicas[0].root):
                pass  # they start once the first pass writes, and end before the wait
            # the unreadable entries keep an rsync target behind for good: wait says so, naming why
            out += _run(["wait", "h", "--timeout", str(SETTLE_S)], w.env)
        finally:
            out += _run(["stop", "h"], w.env)
        return out + _run(["log", "h"], w.env)
    if job == "bisync":
        (r,) = replicas
        _job(w.env, "h", f'kind = "bisync"\npath1 = {q(str(w.src))}\npath2 = {q(r.spec)}\n')
        with races(w.src, replicas[0].root):
            return _run(["sync", "h"], w.env)
    (r,) = replicas
    conf = Path(w.env["TETHER_HOME"]) / "config" / "locations.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"[sets.h]\nworking = [{q(str(w.src))}]\nbackup = [{q(str(r.root))}]\n")
    r.root.mkdir()
    with races(w.src, replicas[0].root):
        return _run(["backup", "-m", str(w.src)], w.env)


CASES = [
    ("mirror", ("local", "ssh", "rclone-local", "rclone-sftp")),
    ("continuous", ("local", "ssh", "rclone-local", "rclone-sftp")),
    ("bisync", ("local",)),
    ("bisync", ("ssh",)),
    ("bisync", ("rclone-local",)),
    ("bisync", ("rclone-sftp",)),
    ("locations", ("local",)),
]


@pytest.mark.parametrize(("job", "labels"), CASES, ids=[f"{j}-{'+'.join(ls)}" for j, ls in CASES])
def test_every_entry_meets_its_verdict(
    world: World,
    sshd: SshServer,
    rclone_sftp: RcloneServer,
    job: str,
    labels: tuple[str, ...],
    record_property: Callable[[str, object], None],
    scorecard: Card,
) -> None:
    world.env["TETHER_SSH_CONFIG"] = str(sshd.ssh_config)
    if any(lb == "rclone-sftp" for lb in labels):
        world.env |= rclone_sftp.env()
    replicas = [_replica(world, lb, sshd, rclone_sftp) for lb in labels]
    kept = {p: _snapshot(p, {"src", "dst"}) for p in world.parents}

    output = run_case(world, job, replicas)

    table = judge(job, os.fsencode(world.src), replicas, output)
    record_property("hostile", json.dumps({"job": job, "table": table}))
    _score(scorecard, os.fsencode(world.src), replicas, table)
    failed = {f"{lb}/{k}": v for lb, row in table.items() for k, v in row.items() if v.startswith("failed")}
    assert not failed, f"{json.dumps(failed, indent=1)}\noutput:\n{_short(output)}"
    for p, before in kept.items():
        assert _snapshot(p, {"src", "dst"}) == before, f"something was written outside the replicas in {p}"
    assert rsync_temps(*(r.root for r in replicas)) == [], "a half-written file under a visible name"
    assert _partials(replicas) == [], "an rclone upload left half-written"
    for place in (world.tmp, Path.cwd()):
        assert find_named(place, b"pwned") == [], place
