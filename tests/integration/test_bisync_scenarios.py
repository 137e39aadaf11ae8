"""Scenario tests for `tether bisync`, in the style of rclone bisync's test cases.

Every ``tests/bisync_scenarios/NN-short-name.toml`` is one scenario, run as one test
(id = file stem).  The harness builds two replicas under tmp_path, writes the initial
tree identically into both (files get mtime T0) and runs a first pass so that state
exists; applies the scenario's changes to each side; runs the pass under test; checks
the exit code, the JSON report and the exact trees of both sides (``.tether/`` is
ignored); checks that no version present before the pass was lost; finally (unless the
pass was refused) runs one more pass and asserts that it plans nothing (convergence).

Scenario format (all keys but ``description`` and ``[expect]`` are optional):

    description = "what this scenario checks and why"
    first_run = true            # no initial pass: the pass under test is the first one
    [options]                   # given to every pass; dry_run and force only to the pass under test
    conflict = "keep-both"      # --conflict; max_delete = 70 (--max-delete); dry_run = true; force = true
    filters = [{ exclude = "*.tmp" }, { include = "keep.tmp" }]   # in command-line order
    [initial]                   # a tree: `dirs` = empty directories, then the tables
    dirs = ["empty"]
    [initial.files]             # relpath = content (UTF-8 text)
    "a.txt" = "alpha"
    [initial.links]             # relpath = symlink target
    "ln" = "a.txt"
    [changes]                   # ops applied in order; every op is one inline table
    path1 = [{ write = "a.txt", content = "x", mtime = 1_700_000_100 }, { delete = "b" }]
    path2 = [{ rename = "c", to = "d" }, { mkdir = "e/f" }, { rmdir = "g" },
             { symlink = "ln", target = "a.txt" }, { clear = "." }]
    [during]                    # optional: ops applied while the engine waits after its scan
    path1 = [...]               # (TETHER_TEST_AFTER_SCAN seam; see below)
    [expect]
    rc = 0                      # or a list of acceptable exit codes
    conflicts = 1               # number of entries in the report's "conflicts"
    copied = { to_path1 = 0, to_path2 = 1 }     # optional exact counts
    deleted = { path1 = 0, path2 = 0 }          # optional exact counts
    refused = true              # a guard refused: errors must be non-empty, no convergence pass
    plan_includes = [{ action = "copy", to = "path2", path = "a.txt" }]  # subset match per entry
    plan_empty = true
    [expect.both]               # the final tree of both sides (or [expect.path1] + [expect.path2])
    [expect.both.files] / [expect.both.links] / dirs = [...]

Ops: ``write`` (creates parents; mtime in seconds, default T_CHANGE), ``delete`` (file,
symlink or whole directory), ``rmdir`` (empty directory), ``mkdir`` (with parents),
``rename`` (to = new path), ``symlink`` (target; replaces an existing link), ``clear``
(removes everything at the replica root except ``.tether``).  A file turns into a
directory with ``delete`` then ``write`` below it.

Names: a name beginning with ``bytes:`` is taken as raw bytes with ``\\xNN`` escapes
(write it as a TOML literal string: ``'bytes:caf\\xe9.txt'``); any other name is UTF-8.
In expected trees, ``{conflict}`` stands for ``.conflict-HOST-YYYYmmdd-HHMMSS`` (HOST
is this machine's hostname), e.g. ``"a{conflict}.txt"``.

With ``[during]``, the pass under test runs with TETHER_TEST_AFTER_SCAN; the ops are
applied once the engine reports its scan, then it is released.  The trees are checked
after a follow-up pass (which must exit 0), ``rc`` applies to the first pass and
``conflicts`` counts both passes; versions the user overwrote during the pass are
excused from the nothing-lost check, and versions written during the pass must survive
in the live trees (not only in trash or backups).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.rig.run import find_named, tether, tether_json

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "bisync_scenarios"
SCENARIO_FILES = sorted(SCENARIO_DIR.glob("*.toml"))
NAME_RE = re.compile(r"\d\d-[a-z0-9]+(?:-[a-z0-9]+)*\.toml")

T0 = 1_600_000_000  # mtime (s) of every file and link in the initial tree
T_CHANGE = 1_700_000_000  # default mtime (s) of what change ops write
META = b".tether"
SIDES = ("path1", "path2")
POLICIES = ("keep-both", "newer", "path1", "path2")
HOST = socket.gethostname()
CONFLICT_PLACEHOLDER = b"{conflict}"
# a conflict copy is named after the side it was made on: this host, or the pool `sc` (pool runs)
CONFLICT_INFIX = rb"\.conflict-(?:" + re.escape(HOST.encode()) + rb"|pool-sc)-\d{8}-\d{6}"
SEAM_DEADLINE_S = 60.0  # generous: the seam is about ordering, not speed

Entry = tuple[str, bytes]  # ("file", content) | ("link", target) | ("dir", b"") for empty dirs
Tree = dict[bytes, Entry]
Op = dict[str, Any]

OP_KEYS: dict[str, tuple[set[str], set[str]]] = {  # verb -> (required keys, optional keys)
    "write": ({"content"}, {"mtime"}),
    "delete": (set(), set()),
    "rmdir": (set(), set()),
    "mkdir": (set(), set()),
    "rename": ({"to"}, set()),
    "symlink": ({"target"}, {"mtime"}),
    "clear": (set(), set()),
}


# ---------------------------------------------------------------------------- format


class ScenarioError(ValueError):
    """A scenario file does not follow the format (a test-data bug, not an engine bug)."""


@dataclass(frozen=True)
class TreeSpec:
    files: dict[str, str]
    dirs: list[str]
    links: dict[str, str]

    def entries(self) -> list[tuple[bytes, Entry]]:
        out: list[tuple[bytes, Entry]] = [(name(k), ("file", v.encode())) for k, v in self.files.items()]
        out += [(name(k), ("link", name(v))) for k, v in self.links.items()]
        out += [(name(d), ("dir", b"")) for d in self.dirs]
        return out


@dataclass(frozen=True)
class Expect:
    rc: tuple[int, ...]
    refused: bool
    conflicts: int | None
    copied: dict[str, int] | None
    deleted: dict[str, int] | None
    plan_includes: list[dict[str, str]]
    plan_empty: bool
    trees: dict[str, TreeSpec]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    first_run: bool
    conflict: str | None
    dry_run: bool
    force: bool
    max_delete: int | None
    filters: list[tuple[str, str]]
    initial: TreeSpec
    changes: dict[str, list[Op]]
    during: dict[str, list[Op]] | None
    expect: Expect

    @property
    def policy(self) -> str:
        return self.conflict or "keep-both"


def name(text: str) -> bytes:
    """A scenario name to bytes: UTF-8, or raw bytes after a ``bytes:`` prefix."""
    if text.startswith("bytes:"):
        return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m[1], 16)]), text[6:].encode())
    return text.encode()


def _check_keys(where: str, table: dict[str, Any], allowed: set[str], required: set[str] | None = None) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = (required or set()) - set(table)
    if missing:
        raise ScenarioError(f"{where}: missing key(s) {sorted(missing)}")


def _str_table(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ScenarioError(f"{where}: must be a table of strings")
    return dict(value)


def _tree_spec(where: str, value: Any) -> TreeSpec:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: must be a table")
    _check_keys(where, value, {"files", "dirs", "links"})
    dirs = value.get("dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ScenarioError(f"{where}.dirs: must be a list of strings")
    return TreeSpec(
        files=_str_table(f"{where}.files", value.get("files", {})),
        dirs=list(dirs),
        links=_str_table(f"{where}.links", value.get("links", {})),
    )


def _ops(where: str, value: Any) -> list[Op]:
    if not isinstance(value, list) or not all(isinstance(op, dict) for op in value):
        raise ScenarioError(f"{where}: must be a list of inline tables")
    for i, op in enumerate(value):
        verbs = set(op) & set(OP_KEYS)
        if len(verbs) != 1:
            raise ScenarioError(f"{where}[{i}]: exactly one of {sorted(OP_KEYS)} expected, got {op}")
        verb = verbs.pop()
        required, optional = OP_KEYS[verb]
        _check_keys(f"{where}[{i}]", op, {verb} | required | optional, required)
    return list(value)


def _sides(where: str, value: Any) -> dict[str, list[Op]]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: must be a table")
    _check_keys(where, value, set(SIDES))
    return {side: _ops(f"{where}.{side}", value.get(side, [])) for side in SIDES}


def _counts(where: str, value: Any, keys: set[str]) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != keys or not all(isinstance(v, int) for v in value.values()):
        raise ScenarioError(f"{where}: must be a table with exactly the integer keys {sorted(keys)}")
    return dict(value)


def load_scenario(path: Path) -> Scenario:
    where = path.name
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{where}: {e}") from None
    _check_keys(
        where, doc, {"description", "first_run", "options", "initial", "changes", "during", "expect"}, {"description"}
    )
    opts = doc.get("options", {})
    _check_keys(f"{where}[options]", opts, {"conflict", "dry_run", "force", "max_delete", "filters"})
    if opts.get("conflict", "keep-both") not in POLICIES:
        raise ScenarioError(f"{where}[options].conflict: one of {POLICIES}")
    filters: list[tuple[str, str]] = []
    for f in opts.get("filters", []):
        if not isinstance(f, dict) or len(f) != 1 or next(iter(f)) not in ("exclude", "include"):
            raise ScenarioError(f"{where}[options].filters: entries are {{ exclude = PAT }} or {{ include = PAT }}")
        ((kind, pat),) = f.items()
        filters.append((kind, str(pat)))

    exp = doc.get("expect")
    if not isinstance(exp, dict):
        raise ScenarioError(f"{where}: [expect] is required")
    _check_keys(
        f"{where}[expect]",
        exp,
        {"rc", "refused", "conflicts", "copied", "deleted", "plan_includes", "plan_empty", "both", "path1", "path2"},
        {"rc"},
    )
    rc = exp["rc"]
    rcs = tuple(rc) if isinstance(rc, list) else (rc,)
    if "both" in exp:
        if "path1" in exp or "path2" in exp:
            raise ScenarioError(f"{where}[expect]: give either `both` or `path1` and `path2`")
        trees = {side: _tree_spec(f"{where}[expect.both]", exp["both"]) for side in SIDES}
    elif "path1" in exp and "path2" in exp:
        trees = {side: _tree_spec(f"{where}[expect.{side}]", exp[side]) for side in SIDES}
    else:
        raise ScenarioError(f"{where}[expect]: the final trees are required (`both`, or `path1` and `path2`)")
    plan_includes = exp.get("plan_includes", [])
    if not isinstance(plan_includes, list) or not all(isinstance(p, dict) for p in plan_includes):
        raise ScenarioError(f"{where}[expect].plan_includes: a list of inline tables")
    expect = Expect(
        rc=rcs,
        refused=bool(exp.get("refused", False)),
        conflicts=exp.get("conflicts"),
        copied=_counts(f"{where}[expect].copied", exp.get("copied"), {"to_path1", "to_path2"}),
        deleted=_counts(f"{where}[expect].deleted", exp.get("deleted"), {"path1", "path2"}),
        plan_includes=[{str(k): str(v) for k, v in p.items()} for p in plan_includes],
        plan_empty=bool(exp.get("plan_empty", False)),
        trees=trees,
    )
    description = doc["description"]
    if not isinstance(description, str) or not description.strip():
        raise ScenarioError(f"{where}: description must be a non-empty string")
    return Scenario(
        name=path.stem,
        description=description.strip(),
        first_run=bool(doc.get("first_run", False)),
        conflict=opts.get("conflict"),
        dry_run=bool(opts.get("dry_run", False)),
        force=bool(opts.get("force", False)),
        max_delete=opts.get("max_delete"),
        filters=filters,
        initial=_tree_spec(f"{where}[initial]", doc.get("initial", {})),
        changes=_sides(f"{where}[changes]", doc.get("changes", {})),
        during=_sides(f"{where}[during]", doc["during"]) if "during" in doc else None,
        expect=expect,
    )


# ---------------------------------------------------------------------------- trees on disk


def show(rel: bytes) -> str:
    return repr(rel.decode("utf-8", "backslashreplace"))


def fmt(entry: Entry | None) -> str:
    if entry is None:
        return "nothing"
    kind, data = entry
    if kind == "dir":
        return "empty dir"
    text = data.decode("utf-8", "backslashreplace")
    return f"{kind} {text[:70]!r}{'...' if len(text) > 70 else ''}"


# A path2 that is a pool: its root is the pool's first member, and these are the others. The
# harness reads the pool as one tree (the members merged) and makes each change on the member
# that holds the path, as a user of the pool's own folder would see it.
POOL_MEMBERS: dict[Path, list[Path]] = {}
POOL_SPEC: dict[Path, str] = {}  # root -> `pool:NAME`, what bisync is given


def scan(root: Path, *, meta: bool = False) -> Tree:
    """Files (with content), symlinks (with target) and empty dirs under root, never following links.

    The top-level ``.tether`` is skipped unless *meta*. A pool's members are merged: a path on two
    members is reported as a problem entry, and a folder is empty only if it is empty on all."""
    if root not in POOL_MEMBERS:
        return _scan(root, meta=meta)
    out: Tree = {}
    folders: set[bytes] = set()
    for member in [root, *POOL_MEMBERS[root]]:
        if not member.exists():
            continue
        for k, v in _scan(member, meta=meta).items():
            if v[0] == "dir":
                folders.add(k)
            elif k in out:
                out[k] = ("on two members", v[1])
            else:
                out[k] = v
    for d in folders:
        if not any(k.startswith(d + b"/") for k in out):
            out[d] = ("dir", b"")
    return out


def _scan(root: Path, *, meta: bool = False) -> Tree:
    out: Tree = {}
    rb = os.fsencode(root)
    stack = [b""]
    while stack:
        rel = stack.pop()
        names = os.listdir(os.path.join(rb, rel) if rel else rb)
        if not rel and not meta:
            names = [n for n in names if n != META]
        if rel and not names:
            out[rel] = ("dir", b"")
        for n in names:
            child = os.path.join(rel, n) if rel else n
            full = os.path.join(rb, child)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                out[child] = ("link", os.readlink(full))
            elif stat.S_ISDIR(mode):
                stack.append(child)
            elif stat.S_ISREG(mode):
                with open(full, "rb") as fh:
                    out[child] = ("file", fh.read())
            else:
                out[child] = (f"special({stat.S_IFMT(mode):o})", b"")
    return out


def versions(tree: Tree) -> set[Entry]:
    return {e for e in tree.values() if e[0] in ("file", "link")}


def live_versions(roots: dict[str, Path]) -> set[Entry]:
    return set().union(*(versions(scan(r)) for r in roots.values()))


def all_versions(roots: dict[str, Path]) -> set[Entry]:
    """Versions anywhere in either replica, .tether (the kept versions) included."""
    return set().union(*(versions(scan(r, meta=True)) for r in roots.values()))


def dump(tree: Tree) -> str:
    return "\n".join(f"    {show(k)}: {fmt(v)}" for k, v in sorted(tree.items())) or "    (empty)"


def tree_problems(actual: Tree, spec: TreeSpec) -> list[str]:
    """How *actual* differs from *spec*; exact names first, then {conflict} patterns."""
    remaining = dict(actual)
    problems: list[str] = []
    patterns: list[tuple[bytes, Entry]] = []
    for key, want in spec.entries():
        if CONFLICT_PLACEHOLDER in key:
            patterns.append((key, want))
            continue
        got = remaining.pop(key, None)
        if got != want:
            problems.append(f"{show(key)}: expected {fmt(want)}, found {fmt(got)}")
    for key, want in patterns:
        rx = re.compile(CONFLICT_INFIX.join(re.escape(p) for p in key.split(CONFLICT_PLACEHOLDER)), re.DOTALL)
        hits = sorted(n for n in remaining if rx.fullmatch(n))
        good = [h for h in hits if remaining[h] == want]
        if good:
            del remaining[good[0]]
        elif hits:
            problems.append(
                f"{show(key)} -> {show(hits[0])}: expected {fmt(want)}, found {fmt(remaining.pop(hits[0]))}"
            )
        else:
            problems.append(f"{show(key)}: expected {fmt(want)}, found no matching name")
    problems += [f"{show(k)}: unexpected {fmt(v)}" for k, v in sorted(remaining.items())]
    return problems


def assert_trees(roots: dict[str, Path], sc: Scenario, when: str) -> None:
    report: list[str] = []
    for side in SIDES:
        actual = scan(roots[side])
        problems = tree_problems(actual, sc.expect.trees[side])
        if problems:
            report.append(f"  {side} ({len(problems)} problems):\n    " + "\n    ".join(problems))
            report.append(f"  {side} actually holds:\n{dump(actual)}")
    if report:
        pytest.fail(f"{sc.name}: {when}: final trees differ from the scenario:\n" + "\n".join(report), pytrace=False)


def build_tree(root: Path, spec: TreeSpec) -> None:
    rb = os.fsencode(root)
    os.makedirs(rb, exist_ok=True)
    for rel, entry in spec.entries():
        if CONFLICT_PLACEHOLDER in rel:
            raise ScenarioError("{conflict} is only allowed in expected trees")
        p = os.path.join(rb, rel)
        kind, data = entry
        if kind == "dir":
            os.makedirs(p, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if kind == "file":
            with open(p, "wb") as fh:
                fh.write(data)
            os.utime(p, (T0, T0))
        else:
            os.symlink(data, p)
            os.utime(p, (T0, T0), follow_symlinks=False)


def _remove(p: bytes) -> None:
    if os.path.islink(p) or not os.path.isdir(p):
        os.unlink(p)
    else:
        shutil.rmtree(p)


def _holder(root: Path, rel: bytes) -> bytes:
    """The member of a pool that holds rel, else the one holding its nearest folder, else the
    first; for a plain folder, the folder itself."""
    members = [os.fsencode(m) for m in [root, *POOL_MEMBERS.get(root, [])]]
    for probe in [rel, *(rel.rsplit(b"/", k)[0] for k in range(1, rel.count(b"/") + 1))]:
        for m in members:
            if os.path.lexists(os.path.join(m, probe)):
                return m
    return members[0]


def apply_ops(root: Path, ops: list[Op]) -> None:
    for op in ops:
        verb = next(v for v in OP_KEYS if v in op)
        if root in POOL_MEMBERS and verb in ("delete", "rmdir", "clear"):  # on every member holding it
            for m in [root, *POOL_MEMBERS[root]]:
                if verb == "clear" or os.path.lexists(os.path.join(os.fsencode(m), name(op[verb]))):
                    _apply_op(m, op, verb)
            continue
        if root in POOL_MEMBERS and verb == "rename":  # on every member holding a part of it
            held = [m for m in [root, *POOL_MEMBERS[root]] if os.path.lexists(os.path.join(os.fsencode(m),
                                                                                      name(op[verb])))]  # fmt: skip
            for m in held:
                _apply_op(m, op, verb, merge=len(held) > 1)
            continue
        _apply_op(Path(os.fsdecode(_holder(root, name(op[verb])))), op, verb)


def _apply_op(root: Path, op: Op, verb: str, merge: bool = False) -> None:
    rb = os.fsencode(root)
    p = os.path.join(rb, name(op[verb]))
    if verb == "write":
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.islink(p):
            os.unlink(p)
        with open(p, "wb") as fh:
            fh.write(str(op["content"]).encode())
        t = int(op.get("mtime", T_CHANGE))
        os.utime(p, (t, t))
    elif verb == "delete":
        _remove(p)
    elif verb == "rmdir":
        os.rmdir(p)
    elif verb == "mkdir":
        os.makedirs(p, exist_ok=True)
    elif verb == "rename":
        dest = os.path.join(rb, name(op["to"]))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if merge and os.path.isdir(dest):  # a folder spread over members, renamed on each
            os.rmdir(dest)
        os.rename(p, dest)
    elif verb == "symlink":
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.islink(p):
            os.unlink(p)
        os.symlink(name(op["target"]), p)
        t = int(op.get("mtime", T_CHANGE))
        os.utime(p, (t, t), follow_symlinks=False)
    elif verb == "clear":
        for n in os.listdir(rb):
            if n != META:
                _remove(os.path.join(rb, n))


def state_snapshot(env: dict[str, str]) -> dict[str, bytes]:
    """The bisync state files (lock files aside), to prove a dry run leaves them alone."""
    root = Path(env["TETHER_HOME"]) / "state" / "bisync"
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and "lock" not in p.name
    }


# ---------------------------------------------------------------------------- running passes


def bisync_args(sc: Scenario, roots: dict[str, Path], *, under_test: bool) -> list[str | Path | bytes]:
    args: list[str | Path | bytes] = ["bisync", roots["path1"], POOL_SPEC.get(roots["path2"], roots["path2"])]
    if sc.conflict is not None:
        args += ["--conflict", sc.conflict]
    if sc.max_delete is not None:
        args += ["--max-delete", str(sc.max_delete)]
    for kind, pat in sc.filters:
        args += [f"--{kind}", pat]
    if under_test and sc.dry_run:
        args.append("--dry-run")
    if under_test and sc.force:
        args.append("--force")
    return args


def describe(doc: dict[str, Any]) -> str:
    shown = {k: v for k, v in doc.items() if not k.startswith("_")}
    return f"exit {doc['_rc']}\nreport: {json.dumps(shown, indent=1)}\nstderr:\n{doc['_stderr']}"


def run_pass(sc: Scenario, roots: dict[str, Path], env: dict[str, str], *, under_test: bool) -> dict[str, Any]:
    return tether_json(bisync_args(sc, roots, under_test=under_test), env)


def run_paused_pass(
    args: list[str | Path | bytes],
    env: dict[str, str],
    work: Path,
    label: str,
    while_paused: Callable[[subprocess.Popen[bytes]], None],
) -> tuple[int, str, str]:
    """Run a pass with the after-scan seam; call *while_paused* once it has scanned, then release it.

    Returns (exit code, stdout, stderr).  The pass is killed if it is still running at the end."""
    seam = work / "seam"
    scanned, go = Path(f"{seam}.scanned"), Path(f"{seam}.go")
    out_path, err_path = work / "seam.stdout", work / "seam.stderr"
    argv: list[str | bytes] = [sys.executable, "-m", "tether"]
    argv += [os.fsencode(a) for a in args]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, env={**env, "TETHER_TEST_AFTER_SCAN": str(seam)}, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + SEAM_DEADLINE_S
        while not scanned.exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"{label}: bisync exited ({proc.returncode}) without creating {scanned.name} "
                    f"(TETHER_TEST_AFTER_SCAN seam)\nstdout:\n{out_path.read_text(errors='replace')}\n"
                    f"stderr:\n{err_path.read_text(errors='replace')}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{label}: bisync did not create {scanned} within {SEAM_DEADLINE_S:.0f} s")
            time.sleep(0.01)
        while_paused(proc)
        go.touch()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = out_path.read_text(errors="backslashreplace")
    stderr = err_path.read_text(errors="backslashreplace")
    assert "Traceback" not in stderr, stderr
    return proc.returncode, stdout, stderr


def run_seam_pass(
    sc: Scenario, roots: dict[str, Path], env: dict[str, str], work: Path
) -> tuple[dict[str, Any], set[Entry], set[Entry]]:
    """The pass under test, with [during] applied after its scan; returns (report, versions removed, added)."""
    assert sc.during is not None
    during = sc.during
    seen: dict[str, set[Entry]] = {}

    def apply_during(_proc: subprocess.Popen[bytes]) -> None:
        seen["before"] = live_versions(roots)
        for side in SIDES:
            apply_ops(roots[side], during[side])
        seen["after"] = live_versions(roots)

    args = [*bisync_args(sc, roots, under_test=True), "--json"]
    rc, stdout, stderr = run_paused_pass(args, env, work, sc.name, apply_during)
    try:
        doc: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{sc.name}: no JSON report (exit {rc})\nstdout:\n{stdout}\nstderr:\n{stderr}")
    doc["_rc"], doc["_stderr"] = rc, stderr
    return doc, seen["before"] - seen["after"], seen["after"] - seen["before"]


REPORT_TYPES: dict[str, type] = {
    "ok": bool,
    "dry_run": bool,
    "first_run": bool,
    "copied": dict,
    "deleted": dict,
    "conflicts": list,
    "plan": list,
    "skipped": list,
    "errors": list,
}


def check_report(doc: dict[str, Any], label: str, *, dry_run: bool, first_run: bool) -> None:
    """The report's shape and the invariants the contract states for every pass."""
    for key, typ in REPORT_TYPES.items():
        assert isinstance(doc.get(key), typ), (
            f"{label}: report key {key!r} missing or not {typ.__name__}\n{describe(doc)}"
        )
    assert set(doc["copied"]) >= {"to_path1", "to_path2"}, f"{label}: copied keys\n{describe(doc)}"
    assert set(doc["deleted"]) >= {"path1", "path2"}, f"{label}: deleted keys\n{describe(doc)}"
    assert doc["dry_run"] is dry_run, f"{label}: dry_run should be {dry_run}\n{describe(doc)}"
    assert doc["first_run"] is first_run, f"{label}: first_run should be {first_run}\n{describe(doc)}"
    rc = doc["_rc"]
    assert rc in (0, 1), f"{label}: exit {rc} is neither 0 nor 1\n{describe(doc)}"
    assert doc["ok"] is (rc == 0), f"{label}: ok must be true exactly when the exit code is 0\n{describe(doc)}"
    if rc == 0:
        assert doc["errors"] == [] and doc["skipped"] == [], f"{label}: exit 0 with errors/skipped\n{describe(doc)}"
    else:
        assert doc["errors"] or doc["skipped"], f"{label}: exit 1 but no errors and no skipped\n{describe(doc)}"


def check_conflicts(sc: Scenario, doc: dict[str, Any], label: str) -> None:
    for c in doc["conflicts"]:
        assert c.get("policy") == sc.policy, f"{label}: conflict policy should be {sc.policy!r}: {c}\n{describe(doc)}"
        if sc.policy == "keep-both" and not sc.dry_run:
            stem, ext = os.path.splitext(os.path.basename(str(c.get("path"))))
            rx = re.escape(stem) + r"\.conflict-(?:" + re.escape(HOST) + r"|pool-sc)-\d{8}-\d{6}" + re.escape(ext)
            copy = os.path.basename(str(c.get("copy")))
            assert re.fullmatch(rx, copy), f"{label}: conflict copy name {copy!r} is not {rx!r}\n{describe(doc)}"


def plan_key(entry: dict[str, Any]) -> tuple[str, str, str]:
    return (str(entry.get("action")), str(entry.get("to")), str(entry.get("path")))


def assert_nothing_lost(roots: dict[str, Path], must: set[Entry], label: str) -> None:
    missing = must - all_versions(roots)
    assert not missing, (
        f"{label}: {len(missing)} version(s) present before the pass exist nowhere now "
        "(neither replica nor .tether/versions):\n    " + "\n    ".join(sorted(map(fmt, missing)))
    )


def assert_converged(sc: Scenario, roots: dict[str, Path], env: dict[str, str]) -> None:
    before = {side: scan(roots[side]) for side in SIDES}
    doc = run_pass(sc, roots, env, under_test=False)
    label = f"{sc.name}: convergence pass"
    check_report(doc, label, dry_run=False, first_run=False)
    assert doc["_rc"] == 0, f"{label}: expected exit 0\n{describe(doc)}"
    assert doc["plan"] == [], f"{label}: a converged pair must plan nothing\n{describe(doc)}"
    assert doc["conflicts"] == [], f"{label}: no conflicts expected\n{describe(doc)}"
    for side in SIDES:
        assert scan(roots[side]) == before[side], f"{label}: changed {side} although it planned nothing"


# ---------------------------------------------------------------------------- tests


def test_scenario_files_are_well_formed() -> None:
    assert len(SCENARIO_FILES) >= 24, f"only {len(SCENARIO_FILES)} scenarios in {SCENARIO_DIR}"
    for path in SCENARIO_FILES:
        assert NAME_RE.fullmatch(path.name), f"{path.name}: name must be NN-short-name.toml"
        load_scenario(path)
    numbers = [p.name[:2] for p in SCENARIO_FILES]
    assert len(set(numbers)) == len(numbers), f"duplicate scenario numbers: {numbers}"


def _cannot_keep(sc: Scenario) -> str | None:
    """What of a scenario an rclone replica (a pool) cannot keep, if anything: symlinks, and names
    that are not UTF-8 or hold control characters (rclone refuses both, and tether says so)."""
    specs = [sc.initial, *sc.expect.trees.values()]
    ops = [op for side_ops in [*sc.changes.values(), *(sc.during or {}).values()] for op in side_ops]
    if any(t.links for t in specs) or any("symlink" in op for op in ops):
        return "symlinks (rclone stores none)"
    names = [n for t in specs for n, _e in t.entries()] + [name(str(op[v])) for op in ops for v in OP_KEYS if v in op]
    for n in names:
        try:
            text = n.decode("utf-8")
        except UnicodeDecodeError:
            return "names that are not UTF-8"
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            return "names with control characters"
    return None


@pytest.mark.parametrize("replica", ["local", "pool"])
@pytest.mark.parametrize("scenario_file", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_scenario(scenario_file: Path, replica: str, tmp_path: Path, tether_env: dict[str, str]) -> None:
    """Every scenario with path2 a local folder, and with path2 a pool of two members (the first
    holding the initial tree, so that new files are placed on the second, the least used)."""
    sc = load_scenario(scenario_file)
    why = _cannot_keep(sc) if replica == "pool" else None
    if why:
        pytest.skip(f"a pool, as any rclone remote, cannot keep what the scenario needs: {why}")
    env = tether_env
    roots = {side: tmp_path / side for side in SIDES}
    for side in SIDES:
        build_tree(roots[side], sc.initial)
    if replica == "pool":
        other = tmp_path / "path2-member2"
        tether(["pool", "create", "sc", roots["path2"], other, "--policy", "least-used"], env, check_rc=0)
        POOL_MEMBERS[roots["path2"]], POOL_SPEC[roots["path2"]] = [other], "pool:sc"
    try:
        _run_scenario(sc, roots, env, tmp_path)
    finally:
        POOL_MEMBERS.pop(roots["path2"], None)
        POOL_SPEC.pop(roots["path2"], None)


def _run_scenario(sc: Scenario, roots: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:

    if not sc.first_run:
        doc = run_pass(sc, roots, env, under_test=False)
        label = f"{sc.name}: initial pass over two identical trees"
        check_report(doc, label, dry_run=False, first_run=True)
        assert doc["_rc"] == 0 and doc["conflicts"] == [], f"{label}: expected a clean pass\n{describe(doc)}"
        assert doc["copied"] == {"to_path1": 0, "to_path2": 0}, f"{label}: nothing to copy\n{describe(doc)}"
        initial = dict(sc.initial.entries())
        for side in SIDES:
            assert scan(roots[side]) == initial, f"{label}: changed {side}:\n{dump(scan(roots[side]))}"

    for side in SIDES:
        apply_ops(roots[side], sc.changes[side])
    before = {side: scan(roots[side]) for side in SIDES}
    must_survive = versions(before["path1"]) | versions(before["path2"])
    state_before = state_snapshot(env)
    exp = sc.expect
    label = f"{sc.name}: pass under test"

    if sc.during is not None:
        doc, user_removed, user_added = run_seam_pass(sc, roots, env, tmp_path)
        check_report(doc, label, dry_run=False, first_run=sc.first_run)
        assert doc["_rc"] in exp.rc, f"{label}: exit code should be one of {exp.rc}\n{describe(doc)}"
        check_conflicts(sc, doc, label)
        must_survive = (must_survive - user_removed) | user_added
        assert_nothing_lost(roots, must_survive, label)
        doc2 = run_pass(sc, roots, env, under_test=False)
        label2 = f"{sc.name}: follow-up pass after the concurrent change"
        check_report(doc2, label2, dry_run=False, first_run=False)
        assert doc2["_rc"] == 0, f"{label2}: expected exit 0\n{describe(doc2)}"
        check_conflicts(sc, doc2, label2)
        if exp.conflicts is not None:
            total = len(doc["conflicts"]) + len(doc2["conflicts"])
            assert total == exp.conflicts, (
                f"{sc.name}: expected {exp.conflicts} conflict(s) over both passes, got {total}\n"
                f"first pass:\n{describe(doc)}\nsecond pass:\n{describe(doc2)}"
            )
        assert_nothing_lost(roots, must_survive, label2)
        gone = user_added - live_versions(roots)
        assert not gone, f"{label2}: versions written during the pass are not live any more: {sorted(map(fmt, gone))}"
        assert_trees(roots, sc, "after the follow-up pass")
        assert_converged(sc, roots, env)
        return

    doc = run_pass(sc, roots, env, under_test=True)
    check_report(doc, label, dry_run=sc.dry_run, first_run=sc.first_run)
    assert doc["_rc"] in exp.rc, f"{label}: exit code should be one of {exp.rc}\n{describe(doc)}"
    if exp.refused:
        assert doc["errors"], f"{label}: a refusal must say why in errors\n{describe(doc)}"
    if exp.conflicts is not None:
        got = len(doc["conflicts"])
        assert got == exp.conflicts, f"{label}: expected {exp.conflicts} conflict(s), got {got}\n{describe(doc)}"
    check_conflicts(sc, doc, label)
    if exp.copied is not None:
        got_copied = {k: doc["copied"][k] for k in ("to_path1", "to_path2")}
        assert got_copied == exp.copied, f"{label}: copied should be {exp.copied}\n{describe(doc)}"
    if exp.deleted is not None:
        got_deleted = {k: doc["deleted"][k] for k in ("path1", "path2")}
        assert got_deleted == exp.deleted, f"{label}: deleted should be {exp.deleted}\n{describe(doc)}"
    plan = doc["plan"]
    for want in exp.plan_includes:
        assert any(all(str(e.get(k)) == v for k, v in want.items()) for e in plan), (
            f"{label}: plan lacks an entry like {want}\n{describe(doc)}"
        )
    if exp.plan_empty:
        assert plan == [], f"{label}: plan should be empty\n{describe(doc)}"
    assert_trees(roots, sc, "after the pass")
    assert_nothing_lost(roots, must_survive, label)
    assert not find_named(tmp_path, b"pwned"), f"{label}: a name was run by a shell"

    if sc.dry_run:
        for side in SIDES:
            assert scan(roots[side]) == before[side], f"{label}: a dry run changed {side}"
        assert state_snapshot(env) == state_before, f"{label}: a dry run changed the state under $TETHER_HOME"
        real = run_pass(sc, roots, env, under_test=False)
        real_label = f"{sc.name}: real pass after the dry run"
        check_report(real, real_label, dry_run=False, first_run=sc.first_run)
        assert sorted(map(plan_key, real["plan"])) == sorted(map(plan_key, plan)), (
            f"{real_label}: did not do what the dry run planned\ndry run:\n{describe(doc)}\nreal:\n{describe(real)}"
        )
        assert_nothing_lost(roots, must_survive, real_label)
    if not exp.refused:
        assert_converged(sc, roots, env)


def _simple_pair(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    """Two replicas holding a.txt and b.txt, synced once; then a.txt edited on path1."""
    roots = {side: tmp_path / side for side in SIDES}
    spec = TreeSpec(files={"a.txt": "a v1", "b.txt": "b v1"}, dirs=[], links={})
    for side in SIDES:
        build_tree(roots[side], spec)
    tether(["bisync", roots["path1"], roots["path2"]], env, check_rc=0)
    apply_ops(roots["path1"], [{"write": "a.txt", "content": "a v2 from path1"}])
    return roots


def test_a_replica_in_use_by_a_running_pass_is_locked(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """Exit 4 for any pass touching a replica that a running pass holds (same pair, reversed, or another pair)."""
    roots = _simple_pair(tmp_path, tether_env)
    path3 = tmp_path / "path3"
    path3.mkdir()
    before = {side: scan(roots[side]) for side in SIDES}
    outcomes: dict[str, subprocess.CompletedProcess[str]] = {}

    def contend(_proc: subprocess.Popen[bytes]) -> None:
        outcomes["same pair"] = tether(["bisync", roots["path1"], roots["path2"]], tether_env)
        outcomes["reversed pair"] = tether(["bisync", roots["path2"], roots["path1"]], tether_env)
        outcomes["path1 with another replica"] = tether(["bisync", roots["path1"], path3], tether_env)
        for side in SIDES:
            assert scan(roots[side]) == before[side], f"a locked-out pass changed {side}"

    args: list[str | Path | bytes] = ["bisync", roots["path1"], roots["path2"]]
    rc, stdout, stderr = run_paused_pass(args, tether_env, tmp_path, "locked", contend)
    for what, proc in outcomes.items():
        assert proc.returncode == 4, f"{what}: expected exit 4 (replica locked), got {proc.returncode}\n{proc.stderr}"
    assert scan(path3) == {}, "the locked-out pass wrote to path3"
    assert rc == 0, f"the pass holding the lock failed: exit {rc}\n{stdout}\n{stderr}"
    assert scan(roots["path2"])[b"a.txt"] == ("file", b"a v2 from path1")


def test_a_pass_killed_after_its_scan_breaks_nothing(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """SIGKILL between scan and execution: nothing lost, no stale lock, the next pass does the work."""
    roots = _simple_pair(tmp_path, tether_env)
    must_survive = versions(scan(roots["path1"])) | versions(scan(roots["path2"]))

    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()

    args: list[str | Path | bytes] = ["bisync", roots["path1"], roots["path2"]]
    run_paused_pass(args, tether_env, tmp_path, "killed", kill)
    assert_nothing_lost(roots, must_survive, "after the kill")
    doc = tether_json(args, tether_env)
    assert doc["_rc"] == 0, f"the pass after a killed one should just work\n{describe(doc)}"
    for side in SIDES:
        assert scan(roots[side]) == {b"a.txt": ("file", b"a v2 from path1"), b"b.txt": ("file", b"b v1")}, side
    again = tether_json(args, tether_env)
    assert again["_rc"] == 0 and again["plan"] == [], f"not converged\n{describe(again)}"


@pytest.mark.parametrize("case", ["path1 vanished after a sync", "same path twice", "unknown policy", "nested pair"])
def test_unusable_arguments(case: str, tmp_path: Path, tether_env: dict[str, str]) -> None:
    """Refused with a message and nothing written: exit 2 for bad input; a vanished replica (an unmounted
    disk) or a nested pair may also be refused as an error (exit 1), but never synced."""
    p1, p2 = tmp_path / "path1", tmp_path / "path2"
    for root in (p1, p2):
        build_tree(root, TreeSpec(files={"a.txt": "a", "b.txt": "b"}, dirs=[], links={}))
    (p1 / "inner").mkdir()
    args: dict[str, list[str | Path | bytes]] = {
        "path1 vanished after a sync": ["bisync", p1, p2],
        "same path twice": ["bisync", p1, p1],
        "unknown policy": ["bisync", p1, p2, "--conflict", "bogus"],
        "nested pair": ["bisync", p1, p1 / "inner"],
    }
    if case == "path1 vanished after a sync":
        tether(["bisync", p1, p2], tether_env, check_rc=0)
        shutil.rmtree(p1)
    before = scan(tmp_path)
    proc = tether(args[case], tether_env)
    allowed = (2,) if case in ("same path twice", "unknown policy") else (1, 2)
    assert proc.returncode in allowed, f"{case}: exit {proc.returncode}, expected {allowed}\n{proc.stderr}"
    assert proc.stderr.strip(), f"{case}: no message on stderr"
    after = scan(tmp_path)
    changed = sorted(show(k) for k in set(before) | set(after) if before.get(k) != after.get(k) and b"home/" not in k)
    assert not changed, f"{case}: files changed: {changed}"
