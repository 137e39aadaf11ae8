"""Which checks a job needs, and running them: each probe once however many jobs share it, the
hosts in parallel, a host's probes after its ssh check (and skipped, said so, when ssh fails).

A job's needs are read off its endpoints' capabilities and its keys (never an endpoint's class),
into `Needs`; `checks_for` turns them into checks, one line per need, so a kind that starts to
need something (a pool that mounts: `mounts`) adds one line there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from tether.doctor import probes
from tether.doctor.rules import Finding, Result, failed
from tether.endpoints import ReplicaSpec, as_rclone
from tether.errors import TetherError
from tether.filters import Filter
from tether.jobs import Job
from tether.output import shown
from tether.ssh import SshOptions

LOCAL = ("", "")  # the group of this machine's probes


@dataclass(frozen=True)
class Needs:
    """What a job asks of the machines it touches, whatever its kind."""

    name: str
    ends: tuple[ReplicaSpec, ...]  # every endpoint
    writes: tuple[ReplicaSpec, ...]  # those it writes into
    watched: tuple[str, ...]  # local trees a running job watches with inotify
    filter: Filter
    rsync: str | None  # this machine's rsync program, when rsync moves bytes
    python: str
    ssh: SshOptions
    preserve: frozenset[str]
    acl_keys: bool = False  # `permissions`: setfacl on what was synced
    chown_keys: bool = False  # `sync_owner`/`final_owner`: chown on the target
    sudo: bool = False  # those two go through `sudo -n`
    two_way: bool = False  # bisync: mtimes of both ends are compared
    mounts: bool = False  # no kind mounts yet; a cloud pool will (FUSE)


def needs_of(job: Job, ssh: SshOptions) -> Needs:
    from tether.config import MirrorJob

    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config, ssh.connect_timeout)
    if isinstance(job, MirrorJob):
        s, live = job.spec, job.live
        return Needs(
            job.name, (s.source, *s.targets), job.writes(), (s.source.path,), s.filter,
            s.rsync if any(t.caps.rsync for t in s.targets) else None, live.python, ssh, s.preserve,
            acl_keys=live.permissions is not None,
            chown_keys=live.sync_owner is not None or live.final_owner is not None, sudo=live.sudo,
        )  # fmt: skip
    ends = (job.path1, job.path2)
    local = tuple(p for e in ends if (p := e.local_path) is not None)
    rsync = job.rsync if all(e.caps.rsync for e in ends) else None
    return Needs(job.name, ends, job.writes(), local, job.filter, rsync, job.python, ssh, job.preserve, two_way=True)


@dataclass(frozen=True)
class Check:
    name: str
    key: tuple[object, ...]  # the same key across jobs: probed once
    group: tuple[str, str]  # (ssh config, host): run in order within; LOCAL for this machine
    probe: Callable[[], Finding]
    after_ssh: bool = False  # a far probe: only when the host's ssh check passed


def machine_checks(fuse: bool) -> list[Check]:
    out = [Check("rsync", ("rsync", "rsync"), LOCAL, partial(probes.local_rsync, "rsync"))]
    return out + (fuse_checks() if fuse else [])


def fuse_checks() -> list[Check]:
    return [
        Check("fuse", ("fuse",), LOCAL, probes.fuse_device),
        Check("fusermount", ("fusermount",), LOCAL, probes.fusermount),
    ]


def checks_for(n: Needs) -> list[Check]:
    out: list[Check] = []
    if n.rsync is not None:
        out.append(Check("rsync", ("rsync", n.rsync), LOCAL, partial(probes.local_rsync, n.rsync)))
    hosts: dict[str, probes.Far] = {}
    for e in n.ends:
        if e.ssh_host is not None:
            hosts.setdefault(e.ssh_host, probes.Far(n.ssh, e.ssh_host))
    for host, far in hosts.items():
        g = (n.ssh.config_file or "", host)
        out.append(Check("ssh", ("ssh", *g), g, partial(probes.ssh_reach, far)))
        if any(e.ssh_host == host and e.caps.rsync for e in n.ends):
            out.append(Check("rsync", ("rsync-far", *g), g, partial(probes.far_rsync, far), after_ssh=True))
        out.append(
            Check("python", ("python", *g, n.python), g, partial(probes.far_python, far, n.python), after_ssh=True)
        )
        if n.two_way:
            out.append(Check("clock", ("clock", *g), g, partial(probes.far_clock, far), after_ssh=True))
    if n.watched:
        trees = [(p, n.filter) for p in n.watched]
        out.append(Check("inotify", ("inotify", n.name), LOCAL, partial(probes.watch_trees, trees)))
    rclones = [r for e in n.ends if (r := as_rclone(e)) is not None]
    if rclones:
        out.append(Check("rclone", ("rclone",), LOCAL, probes.rclone_program))
    for remote in dict.fromkeys(r.remote for r in rclones):
        out.append(Check("rclone-remote", ("rclone-remote", remote), LOCAL, partial(probes.rclone_remote, remote)))
    out += _write_side_checks(n, hosts)
    if n.mounts:
        out += fuse_checks()
    return out


def _write_side_checks(n: Needs, hosts: dict[str, probes.Far]) -> list[Check]:
    """Free space, ACL tools and the right to set owners, where the job writes."""
    owners = sorted({"owner", "group"} & n.preserve)
    why = f"preserve = {owners}" if owners else "sync_owner/final_owner"
    acl = "acl" in n.preserve or n.acl_keys
    sudo_ok = not owners and n.sudo  # rsync --super and the agent's chown run as the job's user
    out: list[Check] = []
    for e in n.writes:
        path = e.local_path
        if path is not None:
            out.append(Check("free-space", ("free", path), LOCAL, partial(probes.local_free, path)))
            if acl:
                out.append(Check("acl-tools", ("acl",), LOCAL, probes.local_acl_tools))
            if owners or n.chown_keys:
                out.append(Check("owner", ("owner", why, sudo_ok), LOCAL,
                                 partial(probes.local_privilege, why, sudo_ok)))  # fmt: skip
        elif (host := e.ssh_host) is not None:
            far, g = hosts[host], (n.ssh.config_file or "", host)
            out.append(Check("free-space", ("free", *g, e.path), g,
                             partial(probes.far_free, far, e.path), after_ssh=True))  # fmt: skip
            if acl:
                out.append(Check("acl-tools", ("acl", *g), g, partial(probes.far_acl_tools, far), after_ssh=True))
            if owners or n.chown_keys:
                out.append(Check("owner", ("owner", *g, why, sudo_ok), g,
                                 partial(probes.far_privilege, far, why, sudo_ok), after_ssh=True))  # fmt: skip
    return _once(out)


def _once(checks: list[Check]) -> list[Check]:
    """A job that writes twice to one place is told once."""
    seen: set[tuple[object, ...]] = set()
    return [c for c in checks if not (c.key in seen or seen.add(c.key))]  # type: ignore[func-returns-value]


@dataclass
class _Runner:
    found: dict[tuple[object, ...], Finding] = field(default_factory=dict)
    ssh_ok: dict[tuple[str, str], bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def group(self, checks: Sequence[Check]) -> None:
        for c in checks:
            with self.lock:
                if c.key in self.found:
                    continue
            if c.after_ssh and not self.ssh_ok.get(c.group, False):
                f = failed(f"{c.group[1]}: not checked, ssh to it fails", "fix the ssh check first")
            else:
                f = _safe(c)
            if c.name == "ssh":
                self.ssh_ok[c.group] = f.ok
            with self.lock:
                self.found[c.key] = f


def _safe(c: Check) -> Finding:
    """A probe that breaks is a failed check naming the breakage, never a traceback."""
    try:
        return c.probe()
    except (OSError, TetherError) as e:
        return failed(f"{c.name}: {shown(str(e))}", "fix what the error names, then run tether doctor again")


def run_checks(planned: Sequence[tuple[str | None, Check]]) -> list[Result]:
    """Each check once (by key), groups in parallel, a group's checks in order; results in plan order."""
    groups: dict[tuple[str, str], list[Check]] = {}
    for _, c in planned:
        groups.setdefault(c.group, []).append(c)
    runner = _Runner()
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(groups)))) as pool:
        for done in [pool.submit(runner.group, cs) for cs in groups.values()]:
            done.result()
    return [Result(c.name, job, runner.found[c.key]) for job, c in planned]
