"""The disk side of locations: scan into snapshots, re-check, then apply exactly a Plan.

Each entry is re-checked against what the plan saw just before anything is replaced or
removed, so an answer given to an old listing never overwrites a newer file. Replaced and
removed files are kept as versions in the destination's `.tether/versions/`, the layout every job
kind shares (agent_remote.version_name; nothing lost); rsync moves the bytes, fed the approved
paths NUL-separated on stdin.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tether.agent_remote import INCOMING, VERSIONS, Ops
from tether.crashpoints import crashpoint
from tether.locations.config import STATE_DIR
from tether.locations.plan import UNREAD, Action, Entry, Op, Plan, paths
from tether.procs import run_captured
from tether.transport.rsync import PARTIAL, VANISHED, explain_rsync_failure

BACKUPS = os.path.join(STATE_DIR, b"backups")  # the older layout: one folder per run, read and pruned still
_STAMP_RE = re.compile(rb"^\d{8}-\d{6}(-\d+)?$")


def _entry(path: bytes) -> Entry | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except PermissionError:  # in a folder without execute permission
        return UNREAD
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return Entry("dir", 0, st.st_mtime_ns, stat.S_IMODE(mode))
    if stat.S_ISLNK(mode):
        return Entry("link", 0, 0, 0, os.readlink(path))
    if stat.S_ISREG(mode) and not os.access(path, os.R_OK):
        return UNREAD
    kind = "file" if stat.S_ISREG(mode) else "other"
    return Entry(kind, st.st_size, st.st_mtime_ns, stat.S_IMODE(mode))


def _join(root: str, rel: bytes) -> bytes:
    return os.path.join(os.fsencode(root), rel) if rel else os.fsencode(root)


def scan(root: str, scopes: Iterable[bytes]) -> dict[bytes, Entry]:
    """Each scope (a path under root) with its ancestors and everything below it.

    Symlinks are never followed and `.tether/` at the root is never part of a snapshot.
    """
    out: dict[bytes, Entry] = {}
    for scope in scopes:
        parts = scope.split(b"/") if scope else []
        for i in range(1, len(parts)):
            anc = b"/".join(parts[:i])
            e = _entry(_join(root, anc))
            if e is not None:
                out[anc] = e
        stack = [scope]
        while stack:
            rel = stack.pop()
            e = _entry(_join(root, rel)) if rel else Entry("dir")
            if e is None:
                continue
            if rel:
                out[rel] = e
            if e.kind == "dir":
                try:
                    names = os.listdir(_join(root, rel))
                except PermissionError:
                    out[rel] = UNREAD
                    continue
                for name in names:
                    if rel or name != STATE_DIR:
                        stack.append(os.path.join(rel, name) if rel else name)
    return out


def new_stamp(dest: str, now: float | None = None) -> str:
    """The name of a run's folder under .tether/incoming: its start time in hex nanoseconds
    (which stamps the versions it keeps, see Ops.fold_trash) and our pid."""
    ns = time.time_ns() if now is None else int(now * 1e9)
    return f"{ns:016x}-{os.getpid()}"


def _stamp_key(name: bytes) -> tuple[bytes, int]:
    base, _, n = name[:15], name[15:16], name[16:]
    return base, int(n) if n else 0


def backup_dir(plan: Plan) -> bytes:
    """Where rsync keeps what this run replaces, until fold_trash files it in versions_dir."""
    return os.path.join(_join(plan.dest, INCOMING), os.fsencode(plan.stamp))


def versions_dir(plan: Plan) -> bytes:
    return _join(plan.dest, VERSIONS)


def recheck(plan: Plan) -> list[bytes]:
    """Paths that changed since the plan was made (empty: safe to apply)."""
    changed: list[bytes] = []
    planned = {a.rel for a in plan.actions}
    for a in plan.actions:
        src_changed = a.op is not Op.UPDATE and a.src is not None and not a.src.same(_entry(_join(plan.source, a.rel)))
        if src_changed or (a.op is Op.CREATE and os.path.lexists(_join(plan.dest, a.rel))):
            changed.append(a.rel)
        elif a.op in (Op.OVERWRITE, Op.DELETE) and a.dst is not None:
            now = _entry(_join(plan.dest, a.rel))
            if not a.dst.same(now):
                changed.append(a.rel)
            elif a.op is Op.DELETE and now is not None and now.kind == "dir":
                extra = [n for n in os.listdir(_join(plan.dest, a.rel)) if os.path.join(a.rel, n) not in planned]
                changed += [os.path.join(a.rel, n) for n in extra]
    return changed


def removals(plan: Plan) -> list[Action]:
    """What Python moves aside: deletions (top-most only) and entries changing kind."""
    out: list[Action] = []
    for a in plan.actions:
        kind_change = a.op is Op.OVERWRITE and a.src and a.dst and a.src.kind != a.dst.kind
        if (a.op is Op.DELETE or kind_change) and not any(a.rel.startswith(r.rel + b"/") for r in out):
            out.append(a)
    return out


def copies(plan: Plan) -> list[Action]:
    return [a for a in plan.actions if a.op is not Op.DELETE]


def rsync_argv(plan: Plan, binary: str = "rsync") -> list[str]:
    """The one rsync command that applies the copies; the paths come on stdin.

    --ignore-times: the plan already chose these files, and rsync's own quick check could
    skip a file changed within the same second at the same size.
    """
    argv = [binary, "-a", "--ignore-times", "--files-from=-", "--from0"]
    if plan.keep_versions:
        argv += ["--backup", f"--backup-dir={os.fsdecode(backup_dir(plan))}"]
    return [*argv, "--", plan.source.rstrip("/") + "/", plan.dest.rstrip("/") + "/"]


@dataclass
class Outcome:
    dest: str
    copied: int = 0
    removed: int = 0
    errors: list[str] = field(default_factory=list)
    hint: str | None = None
    vanished: list[str] = field(default_factory=list)  # source paths deleted since the plan

    @property
    def ok(self) -> bool:
        return not self.errors


def _move_aside(plan: Plan, rel: bytes, why: str) -> None:
    """Kept as a version, or gone with keep_versions = 0."""
    path = _join(plan.dest, rel)
    if plan.keep_versions:
        r = Ops(os.fsencode(plan.dest)).trash([rel], VERSIONS, why=why)
        if r["failed"]:
            raise OSError(r["failed"][0].get("errno"), r["failed"][0]["error"])
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


_GONE = re.compile(r'(?:rsync: (?:\[sender\] )?link_stat "(.*)" failed: No such file or directory \(2\)'
                   r'|file has vanished: "(.*)")$')  # fmt: skip


def _gone(err: str) -> list[str] | None:
    """The source paths rsync found deleted since the plan, when that is all it complains of."""
    gone: list[str] = []
    for line in err.splitlines():
        if m := _GONE.match(line):
            gone.append(m.group(1) or m.group(2))
        elif line and not line.startswith(("rsync error: some files", "rsync warning: some files")):
            return None
    return gone


def apply(plan: Plan, binary: str = "rsync") -> Outcome:
    """Move aside what goes, then one rsync for what comes; old versions are purged last."""
    out = Outcome(plan.dest)
    untouched = _untouched_parents(plan)
    for a in removals(plan):
        try:
            _move_aside(plan, a.rel, "deleted" if a.op is Op.DELETE else "replaced")
            out.removed += 1
        except OSError as e:
            out.errors.append(f"cannot move aside {os.fsdecode(a.rel)}: {e.strerror or e}")
    todo = copies(plan)
    crashpoint("locations.moved_aside")
    if todo and not out.errors:
        proc = run_captured(rsync_argv(plan, binary), input=paths(todo))
        err = proc.stderr.decode("utf-8", "backslashreplace")
        gone = _gone(err) if proc.returncode in (PARTIAL, VANISHED) else None
        if proc.returncode == 0 or gone is not None:  # a file deleted since the plan: nothing to copy
            out.vanished = gone or []
            out.copied = sum(1 for a in todo if not a.is_dir) - len(out.vanished)
            _set_dir_times(plan, todo)
        else:
            err = proc.stderr.decode("utf-8", "backslashreplace")
            out.errors, out.hint = explain_rsync_failure(proc.returncode, err, None)
        crashpoint("locations.copied")
    out.errors += fold_leftovers(plan.dest)
    for path, times in untouched.items():
        with contextlib.suppress(OSError):
            os.utime(path, ns=times, follow_symlinks=False)
    purge(plan.dest, plan.keep_versions)
    return out


def fold_leftovers(dest: str) -> list[str]:
    """File in the versions tree what rsync kept in .tether/incoming: this run's, or a run's
    killed between its copy and the filing (there no one lists or restores it). Called by
    every run, one with nothing to copy included; the errors name what stays there."""
    if not os.path.isdir(_join(dest, INCOMING)):
        return []
    folded = Ops(os.fsencode(dest)).fold_trash(INCOMING, VERSIONS)
    return [f"a kept version stays in {os.fsdecode(INCOMING)}: {f['error']}" for f in folded["failed"]]


def _untouched_parents(plan: Plan) -> dict[bytes, tuple[int, int]]:
    """Folders above the changes that the plan does not change: their times are put back
    after writing into them, so the listing stays the whole truth."""
    planned = {a.rel for a in plan.actions if a.is_dir}
    out: dict[bytes, tuple[int, int]] = {}
    for a in plan.actions:
        parent = os.path.dirname(a.rel)
        while parent and parent not in out and parent not in planned:
            with contextlib.suppress(OSError):
                st = os.lstat(_join(plan.dest, parent))
                out[parent] = (st.st_atime_ns, st.st_mtime_ns)
            parent = os.path.dirname(parent)
    return {_join(plan.dest, rel): times for rel, times in out.items()}


def _set_dir_times(plan: Plan, todo: list[Action]) -> None:
    """Folder times as planned, deepest first: rsync skips a folder whose time matches to
    the second, so a folder made in the same second as its source would keep a wrong time."""
    for a in reversed(todo):
        if a.is_dir and a.src is not None:
            with contextlib.suppress(OSError):
                os.utime(_join(plan.dest, a.rel), ns=(a.src.mtime_ns, a.src.mtime_ns), follow_symlinks=False)


def purge(dest: str, keep: int) -> None:
    """Keep the newest `keep` versions of each path (none are kept with 0, nothing to prune),
    and, of the older layout's run folders, the newest `keep`."""
    if not keep:
        return
    with contextlib.suppress(OSError):
        Ops(os.fsencode(dest)).prune_versions(VERSIONS, None, keep)
    root = _join(dest, BACKUPS)
    if not os.path.isdir(root):
        return
    stamps = sorted((n for n in os.listdir(root) if _STAMP_RE.match(n)), key=_stamp_key)
    for old in stamps[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
