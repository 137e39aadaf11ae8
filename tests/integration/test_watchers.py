"""A continuous mirror past the inotify watch limit: fanotify where it may run (root), else the
periodic passes, else a refusal naming every way out. The limit is lowered in a user namespace of
the test's own (`/proc/sys/user/max_inotify_watches`), so nothing else on the machine sees it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig.live import running, wait_same, write_job
from tests.rig.run import tether
from tether.fanwatch import fanotify_available

DEADLINE = 120.0


def tree(root: Path, dirs: int) -> None:
    for i in range(dirs):
        d = root / f"d{i % 10}" / f"e{i}"
        d.mkdir(parents=True)
        (d / "f.txt").write_text(f"{i}\n")


def test_a_job_with_the_fanotify_watcher_follows_every_kind_of_change(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    why = fanotify_available(str(src))
    if why:
        pytest.skip(f"fanotify cannot run here: {why}")
    tree(src, 30)
    write_job(tether_env, "w", src, [str(dst)], interval=0, watcher="fanotify")
    with running(tether_env, "w"):
        wait_same(src, dst, DEADLINE)
        (src / "new.txt").write_text("new\n")
        os.makedirs(src / "fresh" / "deep")
        (src / "fresh" / "deep" / "x").write_bytes(b"x" * 5000)
        os.rename(src / "d1", src / "d1-renamed")
        shutil.rmtree(src / "d2")
        (src / "d3" / "e3" / "f.txt").write_text("edited\n")
        wait_same(src, dst, DEADLINE)
        log = tether(["log", "w"], tether_env, check_rc=0).stdout
        said = tether(["status", "w"], tether_env, check_rc=0).stdout
    assert "fanotify" in log, log
    assert "fanotify, one filesystem mark" in said, said


def in_userns(limit: int, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """argv run as root of a new user namespace whose inotify watch limit is `limit`."""
    cmd = ["unshare", "--user", "--map-root-user", "sh", "-c",
           'echo "$0" > /proc/sys/user/max_inotify_watches && exec "$@"', str(limit), *argv]  # fmt: skip
    return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def userns_or_skip() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    argv = ["unshare", "--user", "--map-root-user", "sh", "-c", "echo 7 > /proc/sys/user/max_inotify_watches"]
    probe = subprocess.run(argv, capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"no user namespace with a watch limit of its own here: {probe.stderr.strip()}")


def test_past_the_limit_without_fanotify_the_periodic_passes_keep_the_tree(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """In a user namespace fanotify cannot resolve what it reports (no CAP_DAC_READ_SEARCH out
    there), as for a process that is not root: the job says so and its full passes carry each
    change; with no period it is refused, naming every way out."""
    userns_or_skip()
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    tree(src, 60)
    write_job(tether_env, "p", src, [str(dst)], interval=1)
    proc = in_userns(20, [sys.executable, "-m", "tether", "run", "p"], tether_env)
    try:
        wait_same(src, dst, DEADLINE)
        (src / "later.txt").write_text("carried by a pass\n")
        wait_same(src, dst, DEADLINE)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err  # a foreground run logs to stderr
    assert "no watcher, a full pass every 1 s" in err and "fanotify cannot watch it here" in err, err

    write_job(tether_env, "q", src, [str(dst)], interval=0)
    refused = in_userns(20, [sys.executable, "-m", "tether", "run", "q"], tether_env)
    out, err = refused.communicate(timeout=120)
    assert refused.returncode == 2, (out, err)
    assert "Traceback" not in err, err
    # the binding limit is the namespace's own: the fix names it, and who can raise it
    ways_out = ("sysctl -w user.max_inotify_watches=", "container's host", "run tether as root", "interval = ")
    for part in ("inotify watches", "fanotify cannot watch it here", *ways_out):
        assert part in err, (part, err)
