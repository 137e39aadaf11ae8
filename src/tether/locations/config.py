"""`locations.toml`: named sets of WORKING and BACKUP folders, validated strictly.

Every error names file:line and the key, because a set that half-validates could send a
backup the wrong way. PATH arguments are matched here too: which set and location a path
belongs to, and where that relative path lives in the other locations.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.dirs import Dirs
from tether.endpoints import is_inside
from tether.errors import ConfigError, UsageError
from tether.hooks import NO_HOOKS, PassHooks
from tether.jobkeys import SHARED
from tether.output import shown
from tether.schema import did_you_mean, parse_toml

WORKING, BACKUP = "WORKING", "BACKUP"
STATE_DIR = b".tether"  # tether's own folder at each location root: never listed or copied
SET_KEYS = {
    "working": 'working = ["~/Pictures"]',
    "backup": 'backup = ["/mnt/disk1/Pictures"]',
    "keep_versions": "keep_versions = 5",
}
# the commands around applying to each destination: the job keys of the same names
HOOK_KEYS = ("before", "after", "command_timeout", "before_fails", "after_on_error")
SET_KEYS.update({k: SHARED[k].example for k in HOOK_KEYS})
LOCATIONS_JOB = "locations."  # a set is the job `locations.NAME` in events, alerts and hooks


@dataclass(frozen=True)
class Location:
    set_name: str
    role: str  # WORKING or BACKUP
    path: str  # absolute, normalised; may hold surrogate-escaped bytes

    @property
    def accessible(self) -> bool:
        """A disk that is not mounted leaves no directory behind its path."""
        return os.path.isdir(self.path)

    def __str__(self) -> str:
        return shown(self.path)


@dataclass(frozen=True)
class LocationSet:
    name: str
    working: tuple[Location, ...]
    backup: tuple[Location, ...]
    keep_versions: int = 5
    hooks: PassHooks = NO_HOOKS

    @property
    def locations(self) -> tuple[Location, ...]:
        return self.working + self.backup


@dataclass(frozen=True)
class Config:
    file: Path
    sets: tuple[LocationSet, ...]

    def get(self, name: str) -> LocationSet:
        return next(s for s in self.sets if s.name == name)


@dataclass(frozen=True)
class Target:
    """A PATH argument resolved: the location holding it and the path inside, as bytes."""

    location: Location
    rel: bytes  # b"" for the location root


def config_file(dirs: Dirs) -> Path:
    return dirs.config / "locations.toml"


class _Where:
    """Finds the line of a key inside one `[sets.NAME]` table, for file:line errors."""

    def __init__(self, file: Path, text: str) -> None:
        self.file, self.lines = file, text.splitlines()

    def line(self, set_name: str | None, key: str | None) -> int | None:
        start = 0
        if set_name is not None:
            head = re.compile(rf"^\s*\[\s*sets\s*\.\s*(?:{re.escape(set_name)}|\"{re.escape(set_name)}\")\s*\]")
            start = next((i for i, ln in enumerate(self.lines) if head.match(ln)), -1)
            if start < 0:
                return None
            if key is None:
                return start + 1
        rx = re.compile(rf"^\s*\"?{re.escape(key or '')}\"?\s*=")
        for i in range(start + (1 if set_name else 0), len(self.lines)):
            if set_name is not None and self.lines[i].lstrip().startswith("["):
                break
            if rx.match(self.lines[i]):
                return i + 1
        return start + 1 if set_name is not None else None

    def error(self, set_name: str | None, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        no = self.line(set_name, key)
        where = f"{self.file}:{no}" if no else str(self.file)
        what = f"sets.{set_name}" + (f".{key}" if key else "") if set_name else (key or "")
        return ConfigError(f"{where}: {what}: {message}" if what else f"{where}: {message}", hint)


def _did_you_mean(key: str, known: list[str]) -> str:
    near = did_you_mean(key, known)
    return (f"{near} " if near else "") + "known keys: " + ", ".join(known)


def load(dirs: Dirs) -> Config | None:
    """The validated config, or None when there is no locations.toml yet."""
    file = config_file(dirs)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {e}") from None
    return parse(file, text)


def parse(file: Path, text: str) -> Config:
    where = _Where(file, text)
    data = parse_toml(file, text)
    for key in data:
        if key != "sets":
            raise where.error(None, key, f"unknown key {key!r}", _did_you_mean(key, ["sets"]))
    sets_data = data.get("sets", {})
    if not isinstance(sets_data, dict):
        raise where.error(None, "sets", "must be tables like [sets.photos]")
    base = file.parent
    return Config(file, tuple(_parse_set(where, base, name, body) for name, body in sets_data.items()))


def _parse_set(where: _Where, base: Path, name: str, body: Any) -> LocationSet:
    if not isinstance(body, dict):
        raise where.error(None, "sets", f"sets.{name} must be a table like [sets.{name}]")
    for key in body:
        if key not in SET_KEYS:
            raise where.error(name, key, f"unknown key {key!r}", _did_you_mean(key, list(SET_KEYS)))
    roles: dict[str, tuple[Location, ...]] = {}
    for key, role in (("working", WORKING), ("backup", BACKUP)):
        value = body.get(key)
        if value is None:
            raise where.error(name, None, f"missing key {key!r}", f"add a line like: {SET_KEYS[key]}")
        if not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
            raise where.error(name, key, f"must be a non-empty list of paths, not {value!r}", SET_KEYS[key])
        roles[key] = tuple(Location(name, role, _resolve(base, v)) for v in value)
    keep = body.get("keep_versions", 5)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise where.error(
            name, "keep_versions", f"must be a whole number >= 0, not {keep!r}", SET_KEYS["keep_versions"]
        )
    for w in roles["working"]:
        for b in roles["backup"]:
            if _overlap(w.path, b.path):
                raise where.error(
                    name,
                    "backup",
                    f"WORKING {w} and BACKUP {b} overlap (one contains the other)",
                    "a BACKUP must lie outside every WORKING of its set, and the reverse",
                )
    return LocationSet(name, roles["working"], roles["backup"], keep, _hooks(where, name, body))


def _hooks(where: _Where, name: str, body: dict[str, Any]) -> PassHooks:
    """before/after and their settings, checked as a job's are."""
    got = {}
    for k in HOOK_KEYS:
        key = SHARED[k]
        got[k] = body.get(k, key.default)
        if k in body and not key.check(got[k]):
            raise where.error(name, k, f"must be {key.what}, not {got[k]!r}", key.example)
    return PassHooks(
        tuple(got["before"]), tuple(got["after"]), float(got["command_timeout"]), before_fails=got["before_fails"],
        after_on_error=got["after_on_error"], job=LOCATIONS_JOB + name, kind="locations",
    )  # fmt: skip


def _resolve(base: Path, text: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(text)))


def _overlap(a: str, b: str) -> bool:
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    return is_inside(a, b) or is_inside(b, a) or is_inside(ra, rb) or is_inside(rb, ra)


def _keys(path: str) -> set[str]:
    return {path, os.path.realpath(path)}


def resolve_path(config: Config, arg: str) -> Target:
    """Match a PATH argument to the location holding it (longest match across all sets).

    The parent is resolved and the name kept, so a PATH that is itself a symlink is not
    followed: the link is what gets copied.
    """
    absolute = os.path.abspath(arg)
    name = os.path.basename(absolute)
    candidates = {absolute, os.path.join(os.path.realpath(os.path.dirname(absolute)), name)}
    best: list[tuple[int, Location, str]] = []
    for loc_set in config.sets:
        for loc in loc_set.locations:
            for key in _keys(loc.path):
                for cand in candidates:
                    if is_inside(cand, key):
                        best.append((len(key), loc, os.path.relpath(cand, key)))
    if not best:
        names = ", ".join(s.name for s in config.sets) or "none"
        raise UsageError(
            f"{shown(arg)} is not inside any location (configured sets: {names})",
            f"`tether locations` lists them; add the folder to {config.file}",
        )
    top = max(n for n, _, _ in best)
    found = {(loc, rel) for n, loc, rel in best if n == top}
    if len({loc.set_name for loc, _ in found}) > 1:
        sets = " and ".join(sorted({loc.set_name for loc, _ in found}))
        raise UsageError(f"{shown(arg)} belongs to the sets {sets}", "give each folder to one set only")
    loc, rel = sorted(found, key=lambda f: f[0].path)[0]
    rel_b = b"" if rel == "." else os.fsencode(rel)
    if rel_b.split(b"/")[0] == STATE_DIR:
        raise UsageError(f"{shown(arg)} is inside tether's own folder {STATE_DIR.decode()}", "give a PATH outside it")
    return Target(loc, rel_b)


def match_location(config: Config, arg: str) -> Location:
    """A --from/--to value: must name a configured location exactly."""
    for key in _keys(os.path.abspath(arg)):
        for loc_set in config.sets:
            for loc in loc_set.locations:
                if key in _keys(loc.path):
                    return loc
    known = ", ".join(str(loc) for s in config.sets for loc in s.locations)
    raise UsageError(f"{shown(arg)} is not a configured location", f"choose one of: {known}")
