"""inosync (hollow/inosync and its forks): a Python config -> mirror jobs, one target per node.

inosync `import`s its config; here it is parsed with `ast` and only literal assignments are
read (a file that computes a value is refused with its line, never run). Both shapes are
understood: `wpath`/`rpath` (one pair, synced as directory contents) and `wpaths`/`rpaths`
(one job per pair; rsync's trailing-slash rule decides contents or the directory itself).
Each node of `rnodes` ("user@host:", "" for local, or "ssh://user@host:port") prefixes the
remote path, as inosync's rsync command did.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
from pathlib import Path
from typing import Any, NamedTuple

from tether.errors import ConfigError
from tether.importers import Imported, TomlValue, patterns, ssh_spec, to_toml
from tether.jobkeys import validate_rsync_args

NAME = "inosync"

_LOOKS = re.compile(r"(?m)^(wpaths?|rpaths?|rnodes|rexcludes|rspeed)[ \t]*=")
DEFAULT_EVENTS = {"IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO"}
MAX_DELAY = 60.0  # what a tether job's `delay` allows


class Literal(NamedTuple):
    value: Any
    line: int


def looks_like(text: str, path: Path) -> bool:
    return len(set(_LOOKS.findall(text))) >= 2


def literals(text: str, path: Path) -> dict[str, Literal]:
    """Top-level `NAME = <literal>` of a Python file, without running any of it."""
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno or 1}: Python syntax error: {e.msg}") from None
    out: dict[str, Literal] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare string
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or value is None:
            raise ConfigError(
                f"{path}:{node.lineno}: only `name = value` lines are read (the file is never run)",
                "write the settings out as plain values",
            )
        try:
            out[target.id] = Literal(ast.literal_eval(value), node.lineno)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ConfigError(
                f"{path}:{node.lineno}: {target.id} is not a plain value (the file is never run)",
                "write the value out: a string, a number or a list of strings",
            ) from None
    return out


class _Convert:
    def __init__(self, path: Path, keys: dict[str, Literal], imp: Imported) -> None:
        self.path, self.keys, self.imp = path, dict(keys), imp  # keys: what is still to be read
        self.lines = {k: lit.line for k, lit in keys.items()}

    def error(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        line = self.lines.get(key)
        return ConfigError(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}", hint)

    def take(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        lit = self.keys.pop(key, None)
        if lit is None or lit.value is None:
            return None
        if not isinstance(lit.value, kind) or (isinstance(lit.value, bool) and kind is not bool):
            raise self.error(key, f"{key} must be {what}, not {lit.value!r}")
        return lit.value

    def strings(self, key: str) -> list[str] | None:
        v = self.take(key, (list, tuple), "a list of strings")
        if v is not None and not all(isinstance(x, str) for x in v):
            raise self.error(key, f"{key} must be a list of strings")
        return None if v is None else list(v)

    def pairs(self) -> list[tuple[str, str, bool]]:
        """(watched path, remote path, contents?) for each pair of the config."""
        if "wpath" in self.keys or "rpath" in self.keys:
            w, r = self.take("wpath", str, "a path"), self.take("rpath", str, "a path")
            if not w or not r:
                raise self.error("wpath", "wpath and rpath are both needed", 'e.g. wpath = "/var/www"')
            return [(w, r, True)]
        ws, rs = self.strings("wpaths"), self.strings("rpaths")
        if not ws or not rs:
            raise ConfigError(
                f"{self.path}: no wpath/rpath (or wpaths/rpaths): an inosync config names what to watch "
                "and where it goes",
                'e.g. wpath = "/var/www" and rpath = "/var/www"',
            )
        if len(ws) != len(rs):
            raise self.error("rpaths", f"{len(ws)} wpaths but {len(rs)} rpaths: they go in pairs")
        return [(w, r, w.endswith("/")) for w, r in zip(ws, rs, strict=True)]

    def prefix(self, node: str) -> str | None:
        """What a node puts before the remote path, as in inosync's `rsync ... node + rpath`."""
        if node.startswith("ssh://"):
            user, _, hostport = node[len("ssh://") :].rpartition("@")
            host, _, port = hostport.partition(":")
            return ssh_spec(self.imp, "rnodes", user, host, port.rstrip("/"), "")
        if "::" in node or node.startswith("rsync://"):
            self.imp.drop("rnodes", f"{node!r}: an rsync daemon module is not a tether target (use ssh)")
            return None
        return node

    def extra(self, job: dict[str, TomlValue]) -> None:
        """inosync pasted `extra` into its rsync command line; tether takes the options it allows."""
        text = self.take("extra", str, "a string of rsync options")
        try:
            args = shlex.split(text or "")
        except ValueError as e:
            raise self.error("extra", f"extra: {e}", "the shell could not have read it either") from None
        words: list[str] = []
        for arg in args:
            words += [f"-{c}" for c in arg[1:]] if re.fullmatch(r"-[A-Za-z]{2,}", arg) else [arg]
        keep: list[str] = []
        while words:
            w = words.pop(0)
            if w in ("-e", "--rsh") and words:
                w = f"--rsh={words.pop(0)}"
            if w in ("-a", "--archive"):
                self.imp.note("extra", f"{w}: tether's rsync runs with -a already")
            elif w in ("-v", "--verbose"):
                self.imp.note("extra", f"{w}: `tether sync NAME -v` shows each rsync command")
            elif w == "--delete":
                self.imp.note("extra", '--delete: a tether mirror deletes already (delete = "mirror")')
            elif w == "--rsh=ssh":
                self.imp.note("extra", f"{w}: tether runs ssh itself")
            elif not w.startswith("-") or validate_rsync_args([w]):
                self.imp.drop(f"extra ({w})", "tether runs rsync and ssh with its own settings there")
            else:
                keep.append(w)
        if keep:
            job["rsync_args"] = keep
            self.imp.note("extra", f"rsync_args = {keep!r}")

    def run(self, name: str) -> dict[str, str]:
        pairs = self.pairs()
        nodes = self.strings("rnodes")
        if not nodes:
            raise self.error("rnodes", "no remote nodes (rnodes)", 'e.g. rnodes = ["user@host:"]')
        prefixes = [p for p in (self.prefix(n) for n in nodes) if p is not None]
        if not prefixes:
            raise self.error("rnodes", "no node is a target tether can use", "give user@host: or an empty string")
        common: dict[str, TomlValue] = {}
        excludes = self.strings("rexcludes")
        if excludes:
            pats, changed = patterns.translate(excludes)
            common["exclude"] = pats
            if changed:
                self.imp.note("rexcludes", patterns.explain(changed))
        speed = self.take("rspeed", int, "a number of KB/s")
        if speed:
            common["bwlimit"] = speed
            self.imp.note("rspeed", f"bwlimit = {speed} (KB/s, as rsync reads a bare number)")
        rsync = self.take("rsync", str, "a path")
        if rsync:
            common["rsync"] = rsync
        self.extra(common)
        self.delays(common)
        self.the_rest()
        jobs: dict[str, str] = {}
        for i, (wpath, rpath, contents) in enumerate(pairs, 1):
            source = os.path.expanduser(wpath).rstrip("/") or "/"
            if not os.path.isabs(source):
                raise self.error("wpath" if len(pairs) == 1 else "wpaths", f"{wpath!r} is not an absolute path")
            rtarget = rpath.rstrip("/") or "/"
            if not contents:
                rtarget = f"{rtarget}/{os.path.basename(source)}"
                self.imp.note("wpaths", f"{wpath!r} has no trailing '/': rsync put the directory itself into {rtarget}")
            job: dict[str, TomlValue] = {"source": source, "targets": [p + rtarget for p in prefixes], **common}
            job_name = name if len(pairs) == 1 else f"{name}-{i}"
            jobs[job_name] = to_toml(job, [f"imported from the inosync config {self.path}", "by tether import-config"])
        self.imp.note("rnodes", "one target per node: node + remote path, as inosync's rsync command made it")
        return jobs

    def delays(self, job: dict[str, TomlValue]) -> None:
        """inosync's edelay (and a fork's sleep_time) batch changes for that long: tether's delay."""
        delays: list[float] = []
        for key in ("edelay", "sleep_time"):
            v = self.take(key, (int, float), "a number of seconds")
            if v is None:
                continue
            delays.append(min(float(v), MAX_DELAY))
            self.imp.note(
                key,
                f"delay = {delays[-1]:g}: tether gathers changes for `delay` seconds and sends them as one batch"
                + (f" (at most {MAX_DELAY:g})" if v > MAX_DELAY else ""),
            )
        if delays:
            job["delay"] = max(delays)

    def the_rest(self) -> None:
        mask = self.strings("emask")
        if mask is not None and not set(mask) >= DEFAULT_EVENTS:
            self.imp.drop("emask", "tether acts on every kind of change; a narrower event mask has no equivalent")
        elif mask is not None:
            self.imp.note("emask", "the default events: tether acts on these and the rest")
        if self.take("logfile", str, "a path"):
            self.imp.drop("logfile", "tether keeps a log per job in its state dir (`tether log NAME`)")
        if self.strings("inotify_excludes"):
            self.imp.drop(
                "inotify_excludes", "tether syncs what it watches: leave paths out of both with exclude instead"
            )
        for key, lit in sorted(self.keys.items(), key=lambda kv: kv[1].line):
            if lit.value not in (None, "", [], ()):
                self.imp.drop(key, "not an inosync setting tether knows")


def convert(text: str, path: Path, name: str) -> Imported:
    imp = Imported()
    imp.jobs.update(_Convert(path, literals(text, path), imp).run(name))
    return imp
