"""Real network conditions: four hosts in network namespaces of their own, each with its sshd,
behind 50 ms of delay, 1% loss and a 16 Mbit/s link (tests/rig/netns.py), and a link cut and
restored mid-transfer. A continuous mirror to all four and a bisync with one converge, and a cut
host never slows the others."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.rig.compare import assert_same_tree
from tests.rig.compare import snapshot as contents
from tests.rig.live import running, status, wait_for, wait_same, write_job, write_job_text
from tests.rig.netns import Host, Net, hosts, unavailable
from tests.rig.run import tether
from tests.rig.scorecard import Card
from tests.rig.trees import make_tree

BIG = 4 << 20  # a few MB: about 2 s on a link of 16 Mbit/s, long enough to be cut halfway
SMALL_FILES = 12  # written one by one in each round, each timed to every healthy host
ROUNDS = (False, True, True, False)  # whether the victim is cut
POLL_S = 0.002  # how often an arrival is looked for: finer than the 20 ms of wait_for, which the
# latencies (60 to 100 ms) would fall into steps of
SLOWER = 1.2  # the healthy hosts' median latency with a host cut, at most this times the one without
FLOOR_S = 0.025  # a difference below this is noise, not a slowdown (nor one below the rounds' own)
LOSS_FLOOR_S = 0.5  # nor one this small where a loss (an RTO, 0.2 s) or two may fall
BISYNC_CUT_S = 5.0  # shorter than ssh's keepalive (15 s, 3 missed): the channels live on
CONVERGE_S = 180  # a cut host: ssh retransmits after the link is back, then a full pass


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """Made once per worker that runs this module (about a second per host)."""
    why = unavailable()
    if why:
        pytest.skip(why)
    with hosts(tmp_path_factory.mktemp("netns"), 4) as made:
        print(f"network conditions: {made.mechanism}")
        yield made


@pytest.fixture
def card(scorecard: Card, net: Net) -> Card:
    scorecard.note(f"delay and loss by {net.mechanism}")
    return scorecard


def holding(want: dict[str, bytes], *roots: Path) -> bool:
    """Every root holds exactly `want` (a tree changing under the walk: not yet)."""
    try:
        return all(contents(r) == want for r in roots)
    except OSError:
        return False


def put(root: Path, rel: str, data: bytes) -> Path:
    """Written beside the tree and renamed in: the job sees one whole file, never a half one."""
    tmp = root.parent / (".part-" + rel.replace("/", "-"))
    tmp.write_bytes(data)
    return tmp.rename(root / rel)


def arrivals(targets: list[Path], name: str, size: int, began: float) -> list[float]:
    """Seconds from `began` until each target holds the file under its name (whole: tether and
    rsync both rename a file into place once it is complete)."""
    seen: dict[Path, float] = {}

    def holds(t: Path) -> bool:
        try:
            return (t / name).stat().st_size == size
        except OSError:
            return False

    deadline = time.monotonic() + 120
    while len(seen) < len(targets):
        for t in targets:
            if t not in seen and holds(t):
                seen[t] = time.monotonic() - began
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after 120 s waiting for {name} on {len(targets) - len(seen)} hosts")
        time.sleep(POLL_S)
    return [seen[t] for t in targets]


def sending(target: Path, name: str) -> bool:
    """rsync's temporary file for `name` has bytes in it: the transfer is under way."""
    try:
        return any(e.name.startswith(f".{name}.") and e.stat().st_size > 0 for e in os.scandir(target))
    except OSError:
        return False


def staged(replica: Path) -> bool:
    """A file has bytes in the replica's staging folder: bisync is sending it."""
    for dirpath, _dirs, names in os.walk(replica / ".tether" / "tmp"):  # a folder per batch
        for n in names:
            with contextlib.suppress(OSError):
                if os.lstat(os.path.join(dirpath, n)).st_size > 0:
                    return True
    return False


def test_a_continuous_mirror_reaches_four_hosts(
    tmp_path: Path, tether_env: dict[str, str], net: Net, card: Card
) -> None:
    src = tmp_path / "src"
    make_tree(src, 150, seed=71, hostile=False)
    dsts = [tmp_path / h.alias for h in net.hosts]
    env = net.env(tether_env)
    write_job(env, "four", src, [f"{h.alias}:{d}" for h, d in zip(net.hosts, dsts, strict=True)], interval=0)
    with running(env, "four"):
        for d in dsts:
            wait_same(src, d, 120)
        (src / "later").mkdir()
        for i in range(20):
            put(src, f"later/n{i}.txt", f"new {i}\n".encode())
        put(src, "big.bin", os.urandom(BIG // 4))
        victim = sorted(p for p in src.rglob("*") if p.is_file() and p.parent != src / "later")[0]
        victim.unlink()
        for d in dsts:
            wait_same(src, d, 120)
    for d in dsts:
        card.same_tree(src, d)


class Timed(NamedTuple):
    big: list[float]  # the big file, to each healthy host
    small: list[float]  # each small file, to each healthy host


def _phase(src: Path, healthy: list[Path], victim: Host, victim_dst: Path, *, cut: bool, tag: str) -> Timed:
    """A big file is sent everywhere; with `cut`, the victim's link goes down while its share is
    under way. The healthy hosts' copies are timed, then small files written one by one."""
    big = f"big-{tag}.bin"
    began = time.monotonic()
    put(src, big, os.urandom(BIG))
    wait_for(lambda: sending(victim_dst, big), 60, "the transfer to the victim to begin")
    if cut:
        victim.cut()
    timed = Timed(arrivals(healthy, big, BIG, began), [])
    for i in range(SMALL_FILES):
        data = f"{tag} {i}\n".encode()
        began = time.monotonic()
        put(src, f"small-{tag}-{i}.txt", data)
        timed.small.extend(arrivals(healthy, f"small-{tag}-{i}.txt", len(data), began))
    return timed


def no_slower(what: str, without: float, cut: float, floor: float) -> str | None:
    """Why `cut` counts as slower than `without` (1.2 times, and more than `floor` apart), or None."""
    if cut <= SLOWER * without or cut - without <= floor:
        return None
    return f"{what}: {cut:.3f} s with a host cut, {without:.3f} s without"


def test_a_cut_host_never_slows_the_others_and_converges_when_back(
    tmp_path: Path, tether_env: dict[str, str], net: Net, card: Card
) -> None:
    """The healthy hosts' latency with the victim cut mid-transfer, against rounds without the cut
    (same job, same hosts): the median within 1.2 times, and no file or transfer held up."""
    src = tmp_path / "src"
    make_tree(src, 40, seed=72, hostile=False)
    dsts = {h.alias: tmp_path / h.alias for h in net.hosts}
    victim = net.hosts[-1]
    healthy = [dsts[h.alias] for h in net.hosts if h is not victim]
    env = net.env(tether_env)
    write_job(env, "cut", src, [f"{a}:{d}" for a, d in dsts.items()], interval=0)
    with running(env, "cut"):
        for d in dsts.values():
            wait_same(src, d, 120)
        put(src, "warm.txt", b"warm\n")  # every connection is up before anything is timed
        arrivals(list(dsts.values()), "warm.txt", 5, time.monotonic())
        whole, during, down, apart = Timed([], []), Timed([], []), "", []
        # without, with, with, without: a machine growing busier or quieter meanwhile (other tests
        # on the other core) weighs on both alike
        for n, cut in enumerate(ROUNDS):
            try:
                got = _phase(src, healthy, victim, dsts[victim.alias], cut=cut, tag=f"{n}")
                assert not cut or not (dsts[victim.alias] / f"small-{n}-0.txt").exists(), "no cut: the file arrived"
                down = down or (status(env, "cut")["targets"][-1]["state"] if cut else "")
            finally:
                victim.restore()
            apart += [] if cut else [statistics.median(got.small)]
            (during if cut else whole).big.extend(got.big)
            (during if cut else whole).small.extend(got.small)
            wait_same(src, dsts[victim.alias], CONVERGE_S)  # back, and caught up, before the next round
        for d in dsts.values():
            wait_same(src, d, 60)
    for d in dsts.values():
        card.same_tree(src, d)
    med = statistics.median
    noise = max(FLOOR_S, abs(apart[0] - apart[-1]))  # as far apart as two rounds without a cut
    print(
        f"{net.mechanism}; relay stalls {net.stalls}\n"
        f"healthy hosts, no cut / one host cut: small-file latency median {med(whole.small) * 1000:.0f} / "
        f"{med(during.small) * 1000:.0f} ms, slowest {max(whole.small) * 1000:.0f} / "
        f"{max(during.small) * 1000:.0f} ms ({len(whole.small)} each); {BIG >> 20} MB file median "
        f"{med(whole.big):.2f} / {med(during.big):.2f} s; the cut host's state then: {down}; the rounds without a "
        f"cut {apart[0] * 1000:.0f} and {apart[-1] * 1000:.0f} ms"
    )
    slower = [
        no_slower("small files, median", med(whole.small), med(during.small), noise),
        # a file that waited on the cut host would take seconds (ssh's timeouts); a lost chunk 0.2 s
        no_slower("small files, slowest", max(whole.small), max(during.small), LOSS_FLOOR_S),
        no_slower("the big file, median", med(whole.big), med(during.big), LOSS_FLOOR_S),
    ]
    assert not any(slower), "; ".join(filter(None, slower))


@contextlib.contextmanager
def bisyncing(tmp_path: Path, env: dict[str, str], host: Host, name: str) -> Iterator[tuple[Path, Path]]:
    """A running bisync job between a local replica and one on `host`, its first pass done."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, 40, seed=73, hostile=False)
    shutil.copytree(a, b, symlinks=True)
    write_job_text(env, name, f'kind = "bisync"\npath1 = "{a}"\npath2 = "{host.alias}:{b}"\n')
    with running(env, name):
        wait_for(lambda: (status(env, name).get("targets") or [{}])[0].get("passes", 0) >= 1, 120, "the first pass")
        yield a, b


def converged(env: dict[str, str], name: str, cond: Callable[[], bool]) -> None:
    """Wait for both replicas to hold every change; if they never do, the job's own account
    (its status and the end of its log) goes into the failure."""
    try:
        wait_for(cond, CONVERGE_S, "both replicas to hold every change")
    except AssertionError as e:
        said = tether(["status", name], env).stdout + tether(["log", name, "-n", "60"], env).stdout
        raise AssertionError(f"{e}\n{said}") from None


def write_both(a: Path, b: Path, want: dict[str, bytes]) -> None:
    """New files on each side and an edit on the far one, all recorded in `want`."""
    for i in range(5):
        for side, root in (("a", a), ("b", b)):
            want[f"from-{side}-{i}.txt"] = f"{side} {i}\n".encode()
            put(root, f"from-{side}-{i}.txt", want[f"from-{side}-{i}.txt"])
    want["before.txt"] = b"edited on b while away\n"
    (b / "before.txt").write_bytes(want["before.txt"])


def settled(card: Card, want: dict[str, bytes], a: Path, b: Path) -> None:
    """Both replicas hold every change, on the scorecard before it is asserted."""
    got_a, got_b = contents(a), contents(b)
    lost = sum(1 for rel, data in want.items() if got_a.get(rel) != data or got_b.get(rel) != data)
    card.checked(want.values(), lost=lost, divergent=0 if got_a == got_b else 1)
    assert got_a == want
    assert_same_tree(a, b)


def test_a_bisync_with_a_namespaced_host_converges_across_a_cut(
    tmp_path: Path, tether_env: dict[str, str], net: Net, card: Card
) -> None:
    host, env = net.hosts[0], net.env(tether_env)
    with bisyncing(tmp_path, env, host, "bi") as (a, b):
        put(a, "before.txt", b"before the cut\n")
        wait_for(lambda: (b / "before.txt").exists(), 60, "a change before the cut")
        put(a, "big-a.bin", os.urandom(BIG + BIG // 2))  # over 4 MB: by rsync, staged in .tether/tmp
        want = contents(a)
        wait_for(lambda: staged(b), 60, "the big file's transfer to begin")
        host.cut()
        cut_end = time.monotonic() + BISYNC_CUT_S
        try:
            write_both(a, b, want)
            time.sleep(max(0.0, cut_end - time.monotonic()))  # the scenario: the link down this long
            assert not (b / "from-a-0.txt").exists() and not (a / "from-b-0.txt").exists(), "a file crossed the cut"
        finally:
            host.restore()
        converged(env, "bi", lambda: holding(want, a, b))
    settled(card, want, a, b)


def test_a_bisync_whose_connection_died_opens_it_again(
    tmp_path: Path, tether_env: dict[str, str], net: Net, card: Card
) -> None:
    """A cut past ssh's keepalive ends the job's ssh channels for good. Stopping the host's sshd
    (its sessions killed) ends them at once: the same state, without waiting 45 s for it."""
    host, env = net.hosts[1], net.env(tether_env)
    assert host.server is not None
    with bisyncing(tmp_path, env, host, "reopen") as (a, b):
        put(a, "before.txt", b"before the outage\n")
        wait_for(lambda: (b / "before.txt").exists(), 60, "a change before the outage")
        want = contents(a)
        host.server.stop()
        try:
            write_both(a, b, want)
            wait_for(lambda: bool(status(env, "reopen")["targets"][0].get("last_error")), 60, "the job to see it")
        finally:
            host.server.restart()
        converged(env, "reopen", lambda: holding(want, a, b))
    settled(card, want, a, b)
