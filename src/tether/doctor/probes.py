"""The doctor's probes: each runs what tether itself would run, as an argument list, and hands the
answer to its rule.

Over ssh the remote command is fixed text, never built from a path: ssh carries one string to a
shell, so the one probe that names a path (free space) sends it on stdin, NUL-separated, for
`xargs -0` to hand to df as arguments.  ssh runs as tether runs it (SshOptions: batch mode, the
job's config, one shared connection), so the probes after the first ride its connection.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass

from tether.doctor import rules
from tether.doctor.rules import Finding, failed, passed
from tether.filters import Filter
from tether.procs import run_captured
from tether.ssh import SshOptions, explain_ssh_failure

RUN_TIMEOUT_S = 30.0
FUSE_DEVICE = "/dev/fuse"
_PYTHON_CODE = 'import sys;print(".".join(map(str,sys.version_info[:3])))'  # no quote, $, ! or backslash


@dataclass(frozen=True)
class Ran:
    rc: int | None  # None: could not start, or timed out
    out: str
    err: str

    @property
    def said(self) -> str:
        return (self.out + self.err).strip()


def run(argv: list[str], *, input: bytes | None = None, timeout: float = RUN_TIMEOUT_S) -> Ran:
    try:
        p = run_captured(argv, input=input, timeout=timeout)
    except FileNotFoundError:
        return Ran(None, "", f"{argv[0]}: not found")
    except PermissionError:
        return Ran(None, "", f"{argv[0]}: not executable")
    except subprocess.TimeoutExpired:
        return Ran(None, "", f"{argv[0]}: no answer within {timeout:.0f} s")
    return Ran(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


@dataclass(frozen=True)
class Far:
    """An ssh host as a job reaches it."""

    ssh: SshOptions
    host: str

    def run(self, command: str, *, input: bytes | None = None) -> Ran:
        return run([*self.ssh.argv(), "--", self.host, command], input=input,
                   timeout=self.ssh.connect_timeout + RUN_TIMEOUT_S)  # fmt: skip


# -- this machine ---------------------------------------------------------------------------


def local_rsync(program: str) -> Finding:
    where = "this machine" if program == "rsync" else f"this machine ({program})"
    if shutil.which(program) is None:
        return failed(
            f"{where}: rsync not found",
            "install rsync (apt-get install rsync), or correct the job's rsync key",
        )
    r = run([program, "--version"])
    return rules.rsync_rule(where, rules.rsync_version(r.out), r.said, rules.RSYNC_LOCAL_MIN, "here")


def local_free(path: str) -> Finding:
    for p in rules.ancestors(path):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return rules.free_rule(path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
    return failed(f"{path}: no folder of it can be read", "check the path in the job file")


def local_acl_tools() -> Finding:
    missing = [t for t in ("setfacl", "getfacl") if shutil.which(t) is None]
    if missing:
        return failed(f"this machine: {' and '.join(missing)} not found", "install them: apt-get install acl")
    return passed("this machine: setfacl and getfacl found")


def local_privilege(why: str, sudo_ok: bool) -> Finding:
    """Root to set owners; for keys tether runs through `sudo -n`, sudo without a password will do."""
    if os.geteuid() == 0:
        return passed(f"this machine: running as root ({why})")
    if sudo_ok:
        r = run(["sudo", "-n", "true"])
        if r.rc == 0:
            return passed(f"this machine: sudo -n works ({why})")
    user_fix = "allow `sudo -n` without a password (NOPASSWD in sudoers)" if sudo_ok else "run the job as root"
    return failed(f"this machine: not root, cannot set owners ({why})", f"{user_fix}, or drop {why}")


def watch_trees(trees: list[tuple[str, Filter]]) -> Finding:
    from tether.watch import Watcher
    from tether.watchlimit import WATCHES_SYSCTL, WATCHES_USERNS, max_user_watches

    counted: list[tuple[str, int]] = []
    for path, flt in trees:
        if not os.path.isdir(path):
            return failed(f"{path}: not a directory, nothing to watch", "create it, or correct the job's path")
        w = Watcher(os.path.realpath(path), flt)
        try:
            counted.append((path, w.needed_watches()))
        finally:
            w.close()
    # each limit on its own: the fix names the one that binds
    limits = max_user_watches((WATCHES_SYSCTL,)), max_user_watches((WATCHES_USERNS,))
    finding = rules.watch_rule(counted, *limits)
    if finding.ok:
        return finding
    from tether.fanwatch import fanotify_available

    return rules.watch_rule(counted, *limits, fanotify_available(trees[0][0]))


def rclone_program() -> Finding:
    from tether.transport.rclone_bin import rclone_program as program

    prog = program()
    r = run([prog, "version"])
    return rules.rclone_rule(prog, rules.rclone_version(r.out), r.said)


def rclone_remote(remote: str) -> Finding:
    from tether.transport.rclone_bin import rclone_program as program

    r = run([program(), "listremotes"])
    config = os.environ.get("RCLONE_CONFIG") or "rclone's default"
    if r.rc != 0:
        return failed(f"rclone listremotes fails: {r.said[:160]}", "run `rclone listremotes` and fix what it says")
    return rules.remote_rule(remote, r.out.splitlines(), config)


def fuse_device() -> Finding:
    """The kernel's FUSE device, as a mount will open it."""
    fix_missing = "load the module: modprobe fuse; in a container, pass the device (docker run --device /dev/fuse)"
    try:
        st = os.stat(FUSE_DEVICE)
    except FileNotFoundError:
        return failed(f"{FUSE_DEVICE} does not exist: nothing can be mounted with FUSE", fix_missing)
    except OSError as e:
        return failed(f"{FUSE_DEVICE}: {e.strerror}", fix_missing)
    if not stat.S_ISCHR(st.st_mode):
        return failed(f"{FUSE_DEVICE} is not a character device", fix_missing)
    try:
        fd = os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return failed(
            f"{FUSE_DEVICE} cannot be opened: {e.strerror}",
            "let this user open it: chmod 0666 /dev/fuse (Debian's default), or run as root",
        )
    os.close(fd)
    return passed(f"{FUSE_DEVICE} opens")


def fusermount() -> Finding:
    for name in ("fusermount3", "fusermount"):
        path = shutil.which(name)
        if path is not None:
            v = rules.fusermount_version(run([path, "-V"]).said)
            return passed(f"{path}" + (f" {rules.dotted(v)}" if v else ""))
    return failed("neither fusermount3 nor fusermount is on PATH: mounts cannot be undone", "apt-get install fuse3")


# -- an ssh host ------------------------------------------------------------------------------


def ssh_reach(far: Far) -> Finding:
    start = time.monotonic()
    r = far.run("true")
    if r.rc == 0:
        return passed(f"{far.host}: ssh in batch mode works ({time.monotonic() - start:.2f} s)")
    explained = explain_ssh_failure(far.host, r.err)
    if explained is not None:
        return failed(*explained)
    last = r.said.splitlines()[-1:] or [f"exit {r.rc}"]
    return failed(
        f"{far.host}: ssh in batch mode fails: {last[0][:160]}",
        f"run `ssh -o BatchMode=yes {far.host} true` by hand: a job can answer no prompt",
    )


def far_rsync(far: Far) -> Finding:
    r = far.run("rsync --version")
    found = rules.rsync_version(r.out) if r.rc == 0 else None
    return rules.rsync_rule(far.host, found, r.said, rules.RSYNC_FAR_MIN, f"on {far.host} (apt-get install rsync)")


def far_python(far: Far, python: str) -> Finding:
    from tether.transport.agent import remote_command

    r = far.run(remote_command(python, _PYTHON_CODE))
    found = rules.python_version(r.out) if r.rc == 0 else None
    return rules.python_rule(far.host, python, found, r.said)


def far_free(far: Far, path: str) -> Finding:
    where = f"{far.host}:{path}"
    listed = b"\0".join(os.fsencode(p) for p in rules.ancestors(path))
    r = far.run("xargs -0 df -Pk --", input=listed)  # df says so for the missing ones: the rest count
    got = rules.parse_df(r.out)
    if got is None:
        return failed(f"{where}: df gives no answer ({r.said[:160]})", f"check that df and xargs run on {far.host}")
    return rules.free_rule(where, got[1], got[0])


def far_clock(far: Far) -> Finding:
    """The best of three readings: the smallest round trip bounds the error best."""
    best: tuple[float, float, float] | None = None
    for _ in range(3):
        sent = time.time()
        r = far.run("date +%s.%N")
        received = time.time()
        remote = rules.parse_clock(r.out) if r.rc == 0 else None
        if remote is None:
            return failed(f"{far.host}: `date +%s.%N` gives no time ({r.said[:160]})", f"check `date` on {far.host}")
        if best is None or received - sent < best[2] - best[1]:
            best = (remote, sent, received)
    assert best is not None
    return rules.skew_rule(far.host, *best)


def far_acl_tools(far: Far) -> Finding:
    r = far.run("getfacl --version && setfacl --version")
    if r.rc == 0:
        return passed(f"{far.host}: setfacl and getfacl found")
    return failed(f"{far.host}: setfacl or getfacl missing ({r.said[:160]})", f"apt-get install acl on {far.host}")


def far_privilege(far: Far, why: str, sudo_ok: bool) -> Finding:
    r = far.run("id -u")
    if r.rc == 0 and r.out.strip().splitlines()[-1:] == ["0"]:
        return passed(f"{far.host}: logged in as root ({why})")
    if sudo_ok and far.run("sudo -n true").rc == 0:
        return passed(f"{far.host}: sudo -n works ({why})")
    user_fix = f"allow `sudo -n` without a password on {far.host}" if sudo_ok else f"connect as root@{far.host}"
    return failed(f"{far.host}: not root there, cannot set owners ({why})", f"{user_fix}, or drop {why}")
