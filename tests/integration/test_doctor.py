"""`tether doctor` against the real thing: healthy jobs pass, and each piece broken for real (a far
side whose PATH has no rsync or no python3, a user namespace with a low inotify limit, a mount
namespace without /dev/fuse) is named with its fix and exit 1.

The far sides are throwaway sshds whose sessions get a PATH (sshd's SetEnv) of links to every
program of this machine but the ones taken away; each test checks the removal took, over ssh,
before it asks tether.  The kernel limits are changed only inside namespaces made for the one
command, so the tests running beside them keep the machine's limits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rig.live import write_job, write_job_text
from tests.rig.run import tether
from tests.rig.sshd import ALIAS_DOWN, SshServer

WATCHES_USERNS = "/proc/sys/user/max_inotify_watches"
WATCHES_GLOBAL = "/proc/sys/fs/inotify/max_user_watches"


def doctor(args: list[str], env: Mapping[str, str], rc: int) -> dict[str, Any]:
    proc = tether(["doctor", *args, "--json"], env, check_rc=rc, timeout=120)
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["ok"] is (rc == 0)
    return doc


def failing(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in doc["checks"] if not c["ok"]}


def names(doc: dict[str, Any]) -> set[str]:
    return {c["check"] for c in doc["checks"]}


def _path_without(bin_dir: Path, dropped: Callable[[str], bool]) -> Path:
    """A folder of links to every program on this machine's usual PATH but the dropped ones."""
    bin_dir.mkdir(parents=True)
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = bin_dir / name
            if not dropped(name) and not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.join(d, name))
    return bin_dir


@pytest.fixture(scope="module")
def far_without_rsync(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    base = tmp_path_factory.mktemp("norsync")
    path = _path_without(base / "bin", lambda n: n == "rsync")
    with SshServer.start(base / "sshd", [f"SetEnv PATH={path}"], fast_shell=True) as server:
        yield server


@pytest.fixture(scope="module")
def far_without_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    base = tmp_path_factory.mktemp("nopython")
    path = _path_without(base / "bin", lambda n: n.startswith("python"))
    with SshServer.start(base / "sshd", [f"SetEnv PATH={path}"], fast_shell=True) as server:
        yield server


def test_a_healthy_local_mirror_job_passes_and_says_what_it_checked(tmp_path: Path, tether_env: dict[str, str]) -> None:
    (tmp_path / "src" / "a" / "b").mkdir(parents=True)
    write_job(tether_env, "home", tmp_path / "src", [str(tmp_path / "backup" / "not-yet")])
    doc = doctor(["home"], tether_env, 0)
    assert names(doc) == {"rsync", "inotify", "free-space"}
    assert all(c["job"] == "home" and c["ok"] and c["fix"] is None for c in doc["checks"])
    inotify = next(c for c in doc["checks"] if c["check"] == "inotify")
    assert "(3 dirs)" in inotify["detail"]
    text = tether(["doctor", "home"], tether_env, check_rc=0).stdout
    assert "job home (mirror" in text and "3 checks, all passed" in text and "FAIL" not in text


def test_healthy_ssh_jobs_pass_every_check_they_need(tmp_path: Path, tether_ssh_env: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_job(tether_ssh_env, "push", src, [f"tether-test:{tmp_path}/far/dst"], preserve=["acl", "owner", "group"])
    write_job_text(
        tether_ssh_env, "two", f'kind = "bisync"\npath1 = "{src}"\npath2 = "tether-test:{tmp_path}/far/two"\n'
    )
    doc = doctor(["push"], tether_ssh_env, 0)
    assert names(doc) == {"rsync", "ssh", "python", "inotify", "free-space", "acl-tools", "owner"}
    far = [c["detail"] for c in doc["checks"] if c["check"] in ("rsync", "python")]
    assert sum(d.startswith("tether-test:") for d in far) == 2, far  # the far rsync and python
    doc = doctor(["two"], tether_ssh_env, 0)
    assert {"ssh", "clock", "python", "rsync", "free-space"} <= names(doc)
    clock = next(c for c in doc["checks"] if c["check"] == "clock")
    assert "round trip" in clock["detail"]
    everything = doctor([], tether_ssh_env, 0)  # every job, and this machine's own check
    assert {c["job"] for c in everything["checks"]} == {None, "push", "two"}


def test_a_far_side_ssh_cannot_reach_fails_and_its_probes_say_they_did_not_run(
    tmp_path: Path, tether_ssh_env: dict[str, str]
) -> None:
    (tmp_path / "src").mkdir()
    write_job(tether_ssh_env, "down", tmp_path / "src", [f"{ALIAS_DOWN}:{tmp_path}/dst"])
    doc = doctor(["down"], tether_ssh_env, 1)
    bad = failing(doc)
    assert set(bad) == {"ssh", "rsync", "python", "free-space"}
    assert bad["ssh"]["detail"] == f"{ALIAS_DOWN}: connection refused (no ssh server listening)"
    assert bad["ssh"]["fix"] == "check the host and port, and that sshd runs there"
    assert bad["python"]["detail"] == f"{ALIAS_DOWN}: not checked, ssh to it fails"
    assert next(c for c in doc["checks"] if c["check"] == "rsync" and c["ok"])["detail"].startswith("this machine")


def test_a_far_side_without_rsync_is_named_with_its_fix(
    tmp_path: Path, tether_env: dict[str, str], far_without_rsync: SshServer
) -> None:
    assert far_without_rsync.run_ssh("rsync", "--version").returncode == 127  # gone for real
    assert far_without_rsync.run_ssh("python3", "-c", "pass").returncode == 0  # and only it
    env = far_without_rsync.env(tether_env)
    (tmp_path / "src").mkdir()
    write_job(env, "web", tmp_path / "src", [f"tether-test:{tmp_path}/dst"])
    doc = doctor(["web"], env, 1)
    bad = failing(doc)
    assert set(bad) == {"rsync"}, doc
    assert bad["rsync"]["detail"].startswith("tether-test: no usable rsync")
    assert "install rsync 3.2.3+ on tether-test" in bad["rsync"]["fix"]
    text = tether(["doctor", "web"], env, check_rc=1).stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "FAIL" in line)
    assert "rsync" in lines[at] and "fix: install rsync" in lines[at + 1], text


def test_a_far_side_without_python3_is_named_with_its_fix(
    tmp_path: Path, tether_env: dict[str, str], far_without_python: SshServer
) -> None:
    assert far_without_python.run_ssh("python3", "-c", "pass").returncode == 127
    assert far_without_python.run_ssh("rsync", "--version").returncode == 0
    env = far_without_python.env(tether_env)
    (tmp_path / "src").mkdir()
    write_job(env, "web", tmp_path / "src", [f"tether-test:{tmp_path}/dst"], python="python3")
    bad = failing(doctor(["web"], env, 1))
    assert set(bad) == {"python"}
    assert "python3 does not run there" in bad["python"]["detail"]
    assert "install python3 3.8 or newer on tether-test" in bad["python"]["fix"]


def _can(argv: list[str]) -> str | None:
    """Why argv cannot run here (None: it can)."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed (util-linux)"
    p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    return None if p.returncode == 0 else f"{' '.join(argv)} fails here: {p.stderr.strip()}"


# Run inside a new user namespace: set its inotify limit, read it back, then become tether doctor.
_IN_USERNS = f"""
import os, sys
with open({WATCHES_USERNS!r}, "w") as f:
    f.write(sys.argv[1])
with open({WATCHES_USERNS!r}) as f:
    print("limit", f.read().strip(), file=sys.stderr, flush=True)
os.execv(sys.executable, [sys.executable, "-m", "tether", "doctor", *sys.argv[2:]])
"""


def _doctor_in_userns(limit: int, args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    argv = ["unshare", "--user", "--map-root-user", "--", sys.executable, "-c", _IN_USERNS, str(limit), *args]
    return subprocess.run(argv, env=dict(env), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def test_a_low_inotify_limit_is_named_with_the_sysctl_that_fixes_it(tmp_path: Path, tether_env: dict[str, str]) -> None:
    why = _can(["unshare", "--user", "--map-root-user", "true"])
    if why or not Path(WATCHES_USERNS).exists():
        pytest.skip(f"no user namespace with its own inotify limit here: {why or WATCHES_USERNS + ' is missing'}")
    before = Path(WATCHES_GLOBAL).read_text(), Path(WATCHES_USERNS).read_text()
    src = tmp_path / "src"
    for i in range(80):
        (src / f"d{i}").mkdir(parents=True)
    write_job(tether_env, "big", src, [str(tmp_path / "dst")])

    low = _doctor_in_userns(50, ["big", "--json"], tether_env)
    assert "limit 50\n" in low.stderr and "Traceback" not in low.stderr, low.stderr  # the namespace's own value
    assert low.returncode == 1, low.stdout + low.stderr
    bad = failing(json.loads(low.stdout))
    assert set(bad) == {"inotify"}
    assert "needs 81 inotify watches" in bad["inotify"]["detail"]
    assert "allows 50 (user.max_inotify_watches)" in bad["inotify"]["detail"]
    assert "sysctl -w user.max_inotify_watches=65536" in bad["inotify"]["fix"]

    roomy = _doctor_in_userns(1000, ["big", "--json"], tether_env)  # the same namespace, room enough
    assert "limit 1000\n" in roomy.stderr and roomy.returncode == 0, roomy.stdout + roomy.stderr
    assert (Path(WATCHES_GLOBAL).read_text(), Path(WATCHES_USERNS).read_text()) == before  # untouched out here


# Run inside a new mount namespace: a bare tmpfs over /dev (only /dev/null made again), then doctor.
_NO_DEV_FUSE = """
import os, stat, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tether-doctor-test", "/dev"], check=True)
os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
print("dev", sorted(os.listdir("/dev")), file=sys.stderr, flush=True)
os.execv(sys.executable, [sys.executable, "-m", "tether", "doctor", "--fuse", "--json"])
"""


def test_fuse_without_its_device_is_named_with_its_fix(tether_env: dict[str, str]) -> None:
    why = _can(["unshare", "--mount", "true"])
    if why:
        pytest.skip(f"no mount namespace here: {why}")
    argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", _NO_DEV_FUSE]
    p = subprocess.run(argv, env=tether_env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert "dev ['null']" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 1, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert {c["check"] for c in doc["checks"]} == {"rsync", "fuse", "fusermount"}
    bad = failing(doc)
    assert "fuse" in bad and bad["fuse"]["detail"] == "/dev/fuse does not exist: nothing can be mounted with FUSE"
    assert "modprobe fuse" in bad["fuse"]["fix"]


def test_fuse_passes_where_the_device_and_fusermount_are(tether_env: dict[str, str]) -> None:
    if not Path("/dev/fuse").exists():
        pytest.skip("this machine has no /dev/fuse (no fuse module, or a container without the device)")
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        pytest.skip("fusermount3 is not installed (package fuse3; scripts/setup --dev installs it)")
    doc = doctor(["--fuse"], tether_env, 0)
    assert names(doc) == {"rsync", "fuse", "fusermount"}
    assert not failing(doc)
