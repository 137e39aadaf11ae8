"""Every crash point of every job kind: killed -9 there, run again, nothing lost, replicas equal.

Each case sets up replicas with deletes, overwrites, renames (a file and a folder) and a new
file pending, runs the real `tether` with TETHER_CRASH_AT naming one point (tether.crashpoints),
checks the process died by SIGKILL at that point (the point's line in TETHER_CRASH_LOG with the
pid of the process that died: tether's, which exited -9, or the far agent's over ssh), then
runs the job again unarmed and checks: the replicas converge, every file content that existed
anywhere before is live or kept as a version, and no temporary file is visible under a final
name. The table of cases must cover every (point, kind) the registry names, and every case
must reach its point: a point nobody reaches fails the walk.

Faults injected: SIGKILL of tether (or of the far agent over ssh) at each named step. Not
injected here: a kill inside rsync's own run (test_live, test_bisync_stress do that).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rig.bisync_oracle import rsync_temps
from tests.rig.compare import diff_trees
from tests.rig.kept import kept
from tests.rig.live import running, wait_for, wait_same, write_job
from tests.rig.rclone import REMOTE
from tests.rig.run import contents as files
from tests.rig.run import tether
from tests.rig.scorecard import Card
from tests.rig.sshd import SshServer
from tether.agent_remote import TMP_PREFIX as _TMP_PREFIX
from tether.crashpoints import BISYNC, LIVE, LOCATIONS, MIRROR, POINTS
from tether.dirs import Dirs

DEADLINE_S = 120.0  # generous: a busy 2-core machine is slow; these only catch hangs


@dataclass(frozen=True)
class Case:
    kind: str
    point: str
    nth: int = 1
    variant: str = ""  # the target (local, ssh, rclone); live: work pending at its "start" or made in a "batch"

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.variant or 'pass'}-{self.point}" + (f"-{self.nth}" if self.nth > 1 else "")


ONE_SHOT = ("mirror.planned", "mirror.synced", "agent.keep_version")
AT_START = ("mirror.planned", "mirror.synced", "live.full_pass", "agent.keep_version", "live.applied")
BISYNC_POINTS = ("bisync.planned", "bisync.between_actions", "bisync.transferred", "bisync.conflict_copy")
LOCATIONS_POINTS = ("locations.moved_aside", "locations.copied", "agent.keep_version")
CASES = [
    *(Case(MIRROR, p, variant=v) for v in ("local", "ssh") for p in ONE_SHOT),
    Case(MIRROR, "rclone.before_copy", variant="rclone"),  # rclone's local backend: the same steps as a cloud's
    *(Case(LIVE, p, variant="start") for p in AT_START),
    Case(LIVE, "live.before_writes", variant="batch"),
    Case(LIVE, "agent.keep_version", variant="batch"),
    Case(LIVE, "live.applied", nth=2, variant="batch"),  # the first is the start's full pass
    *(Case(LIVE, "agent.keep_version", variant=v) for v in ("ssh-start", "ssh-batch")),  # the far agent dies
    Case(LIVE, "rclone.before_copy", variant="rclone-start"),  # a full pass to an rclone remote
    *(Case(BISYNC, p, variant=v) for v in ("local", "ssh") for p in (*BISYNC_POINTS, "agent.keep_version")),
    *(Case(BISYNC, "bisync.between_actions", nth=n, variant="local") for n in (2, 3, 4)),  # later groups
    Case(BISYNC, "agent.keep_version", nth=3, variant="local"),  # a later version, another group's
    *(Case(LOCATIONS, p) for p in LOCATIONS_POINTS),
]


def cases(kind: str) -> list[object]:
    return [pytest.param(c, id=c.id) for c in CASES if c.kind == kind]


TMP_PREFIX = os.fsdecode(_TMP_PREFIX)  # the agent's temporary names; rsync's are rsync_temps'


def test_the_walk_covers_every_registered_point_of_every_kind() -> None:
    wanted = {(p, k) for p, point in POINTS.items() for k in point.kinds}
    walked = {(c.point, c.kind) for c in CASES}
    assert wanted - walked == set(), "registered points no case reaches"
    assert walked - wanted == set(), "cases for points the registry does not name for that kind"
    lines = [f"  {name}: {', '.join(p.kinds)}: {p.where}" for name, p in POINTS.items()]
    print(f"\ncrash points: {len(POINTS)} points, {len(wanted)} (point, kind) pairs, {len(CASES)} cases")
    print("\n".join(lines))


# ---------------------------------------------------------------- trees and checks


BIG = 5 << 20  # above bisync's SMALL and apply's SMALL_FILE: sent by rsync, not in agent messages


def seed_tree(root: Path) -> None:
    """Small files with distinct contents, in nested folders, and one big file."""
    for rel in ("a.txt", "gone.txt", "d1/b.txt", "d1/d2/c.txt", "dir/x.txt", "dir/sub/y.txt", "keep.txt"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{rel} first version\n" * 3)
    (root / "big.bin").write_bytes(os.urandom(BIG))


def pending(root: Path, tag: str) -> None:
    """What a run must bring over: a delete, overwrites (a big file's too), a file and a folder
    renamed, a new file."""
    (root / "gone.txt").unlink()
    (root / "a.txt").write_text(f"a.txt rewritten by {tag}\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "d1/d2/c.txt").rename(root / "d1/d2/c-renamed.txt")
    (root / "dir").rename(root / "dir-moved")
    (root / f"new-{tag}.txt").write_text(f"made by {tag}\n")


def by_content(*roots: Path) -> dict[bytes, str]:
    """content -> one place it lives, over every root."""
    return {data: f"{root.name}/{rel}" for root in roots for rel, data in files(root).items()}


def check_nothing_lost(before: dict[bytes, str], roots: tuple[Path, ...], card: Card, *, same: bool) -> None:
    """Every content that existed before is live or kept; recorded on the scorecard (with
    whether the replicas came out `same`) before anything is asserted."""
    have = set(by_content(*roots)) | {p.read_bytes() for r in roots for p in kept(r)}
    lost = [where for data, where in before.items() if data not in have]
    card.checked(before, lost=len(lost), divergent=0 if same else 1)
    assert not lost, f"lost (neither live nor kept): {lost}"


def check_whole(before: dict[bytes, str], roots: tuple[Path, ...]) -> None:
    """Right after the kill: every file under a final name holds a content that existed whole."""
    torn = [f"{r.name}/{rel}" for r in roots for rel, data in files(r).items() if data not in before]
    assert not torn, f"half-written files visible under their final names: {torn}"


def check_no_temps(*roots: Path) -> None:
    temps = [*rsync_temps(*roots), *(p for r in roots for p in find_named_prefix(r, TMP_PREFIX))]
    assert not temps, f"temporary files visible under a final name's folder: {temps}"


def find_named_prefix(root: Path, prefix: str) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(root) for n in names if n.startswith(prefix) and ".tether" not in d]


@dataclass
class Ran:
    pid: int
    returncode: int
    out: str
    err: str


def armed(env: dict[str, str], case: Case, log: Path) -> dict[str, str]:
    at = case.point + (f":{case.nth}" if case.nth > 1 else "")
    return {**env, "TETHER_CRASH_AT": at, "TETHER_CRASH_LOG": str(log)}


@contextmanager
def started(args: list[str | Path], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """tether as a child of this test (its pid known), in its own process group: what the
    killed run leaves there (rsync, ssh) is killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", *map(str, args)], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="backslashreplace", start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=DEADLINE_S)


def ran(proc: subprocess.Popen[str]) -> Ran:
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert "Traceback" not in err, err
    return Ran(proc.pid, proc.returncode, out, err)


def crashed(run: Ran, log: Path, case: Case, *, far: int | None = None) -> bool:
    """Died by SIGKILL at the point: the point's line in the log, written by the process that
    died. `far`: the exit tether makes when the far agent died there instead (None: not allowed).
    True: the far agent died."""
    said = log.read_text().split() if log.exists() else []
    what = f"{case.id}: log {said}, exit {run.returncode}\n{run.err}"
    assert said[:1] == [case.point], f"the point was not reached: {what}"
    if int(said[1]) == run.pid:
        assert run.returncode == -signal.SIGKILL, what
        return False
    # the far agent died there; tether lived to say its target failed
    assert far is not None and run.returncode == far, what
    return True


def reached(log: Path) -> bool:
    return log.exists() and bool(log.read_text().strip())


def with_rclone_local(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """An rclone remote of rclone's local backend: the same steps as a cloud's, no server."""
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[{REMOTE}]\ntype = local\n")
    return env | {"RCLONE_CONFIG": str(conf)}


# ---------------------------------------------------------------- the walk


@pytest.mark.parametrize("case", cases(MIRROR))
def test_one_shot_mirror(
    case: Case, tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str], scorecard: Card
) -> None:
    env, src, dst, log = tether_ssh_env, tmp_path / "src", tmp_path / "dst", tmp_path / "crash.log"
    seed_tree(src)
    target = {"local": str(dst), "ssh": f"{sshd.alias}:{dst}", "rclone": f"{REMOTE}:{dst}"}[case.variant]
    if case.variant == "rclone":
        env = with_rclone_local(env, tmp_path)
    write_job(env, "m", src, [target], delete="trash")
    tether(["sync", "m"], env, check_rc=0)
    pending(src, "src")
    before = by_content(src, dst)
    with started(["sync", "m"], armed(env, case, log)) as proc:
        far = crashed(ran(proc), log, case, far=1)
    assert far == (case.variant == "ssh" and case.point.startswith("agent.")), "the far agent runs that point"
    check_whole(before, (src, dst))
    tether(["sync", "m"], env, check_rc=0)
    same = (files(src) == files(dst)) if case.variant == "rclone" else (diff_trees(src, dst) == [])  # no modes there
    check_nothing_lost(before, (src, dst), scorecard, same=same)
    assert same, diff_trees(src, dst)
    check_no_temps(src, dst)


@pytest.mark.parametrize("case", cases(LIVE))
def test_continuous_mirror(
    case: Case, tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str], scorecard: Card
) -> None:
    env, src, dst, log = tether_ssh_env, tmp_path / "src", tmp_path / "dst", tmp_path / "crash.log"
    seed_tree(src)
    over, _, when = case.variant.rpartition("-")
    ssh = over == "ssh"
    if over == "rclone":
        env = with_rclone_local(env, tmp_path)
    target = {"": str(dst), "ssh": f"{sshd.alias}:{dst}", "rclone": f"{REMOTE}:{dst}"}[over]
    write_job(env, "l", src, [target], interval=0, delete="trash")
    tether(["sync", "l"], env, check_rc=0)
    if when == "start":
        pending(src, "src")
    before = by_content(src, dst)
    status = Dirs.from_env(env).runtime / "jobs" / "l.status.json"
    with started(["run", "l"], armed(env, case, log)) as proc:
        if when == "batch":  # the start's full pass done, the watcher sees these
            wait_for(lambda: proc.poll() is not None or _full_passes(status) >= 1, DEADLINE_S, "the first full pass")
            pending(src, "live")
            before |= by_content(src)
        wait_for(lambda: proc.poll() is not None or reached(log), DEADLINE_S, "the crash")
        if proc.poll() is None:  # the far agent died; the job reconnects (and the arming kills it
            proc.send_signal(signal.SIGTERM)  # again there), so it is stopped as a user would
        assert crashed(ran(proc), log, case, far=0) == ssh, "the far agent runs that point"
    check_whole(before, (src, dst))
    with running(env, "l"):
        try:
            if over == "rclone":  # no modes or folder times there
                wait_for(lambda: files(src) == files(dst), DEADLINE_S, "the remote to match the source")
            else:
                wait_same(src, dst, DEADLINE_S)
            same = True
        except AssertionError:
            same = False
    check_nothing_lost(before, (src, dst), scorecard, same=same)
    assert same, diff_trees(src, dst)
    check_no_temps(src, dst)


def _full_passes(status: Path) -> int:
    try:
        doc = json.loads(status.read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return min((t["full_passes"] for t in doc.get("targets") or []), default=0)


@pytest.mark.parametrize("case", cases(BISYNC))
def test_bisync(case: Case, tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str], scorecard: Card) -> None:
    env, a, b, log = tether_ssh_env, tmp_path / "a", tmp_path / "b", tmp_path / "crash.log"
    seed_tree(a)
    b.mkdir()
    path2 = f"{sshd.alias}:{b}" if case.variant == "ssh" else b
    args: list[str | Path] = ["bisync", a, path2, "--max-delete", "100"]
    tether(args, env, check_rc=0)
    pending(a, "a")
    (a / "keep.txt").write_text("keep.txt edited on a\n")  # both sides: a conflict
    (b / "keep.txt").write_text("keep.txt edited on b, longer\n")
    (b / "d1/b.txt").write_text("b.txt edited on b\n")
    before = by_content(a, b)
    with started(args, armed(env, case, log)) as proc:
        crashed(ran(proc), log, case, far=1)
    check_whole(before, (a, b))
    again = tether(args, env)  # one pass converges: 0, or 3 with the conflict copy still to look at
    check_nothing_lost(before, (a, b), scorecard, same=files(a) == files(b))
    assert again.returncode in (0, 3) and files(a) == files(b), f"exit {again.returncode}\n{again.stderr}"
    check_no_temps(a, b)


@pytest.mark.parametrize("case", cases(LOCATIONS))
def test_locations(case: Case, tmp_path: Path, tether_env: dict[str, str], tether_home: Path, scorecard: Card) -> None:
    env, w, b, log = tether_env, tmp_path / "w", tmp_path / "b", tmp_path / "crash.log"
    seed_tree(w)
    shutil.copytree(w, b)
    (tether_home / "config").mkdir(parents=True, exist_ok=True)
    (tether_home / "config" / "locations.toml").write_text(f'[sets.s]\nworking = ["{w}"]\nbackup = ["{b}"]\n')
    pending(b, "backup")
    before = by_content(w, b)
    args: list[str | Path] = ["work", "-m", "-D", "--from", b, w]
    with started(args, armed(env, case, log)) as proc:
        crashed(ran(proc), log, case)
    check_whole(before, (w, b))
    tether(args, env, check_rc=0)
    check_nothing_lost(before, (w, b), scorecard, same=diff_trees(b, w) == [])
    assert diff_trees(b, w) == []
    check_no_temps(w, b)
