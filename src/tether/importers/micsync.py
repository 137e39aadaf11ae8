"""micsync's `~/.micsync.json`: each CONFIGURATION becomes a set of tether's locations file.

micsync and tether's locations share the model (WORKING and BACKUP folders, the actions
backup/work/transfer/tree and their -m -d -D -s -v flags), so the import is a change of
syntax; what differs is written to `notes`, and anything else to `dropped`, never lost.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import unicodedata
from pathlib import Path
from typing import Any

from tether.endpoints import is_inside
from tether.errors import ConfigError
from tether.importers import Imported
from tether.importers import _toml_text as toml

NAME = "micsync"
HINT = 'micsync reads ~/.micsync.json: {"configs": [{"name": ..., "work": [...], "backup": [...]}]}'


def looks_like(text: str, path: Path) -> bool:
    """A JSON object whose `configs` list holds work/backup entries (also when the JSON is broken,
    so that converting it reports the syntax error instead of "unknown format")."""
    try:
        data = json.loads(text)
    except ValueError:
        return bool(re.search(r'"configs"\s*:\s*\[', text)) and bool(re.search(r'"(work|backup)"\s*:', text))
    configs = data.get("configs") if isinstance(data, dict) else None
    return isinstance(configs, list) and any(isinstance(c, dict) and ("work" in c or "backup" in c) for c in configs)


class _Where:
    """Line numbers of the `configs` entries, for FILE:LINE errors (json gives none after parsing)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self.spans: list[tuple[int, int]] = []
        m = re.search(r'"configs"\s*:\s*\[', text)
        if not m:
            return
        dec, i, n = json.JSONDecoder(), m.end(), len(text)
        try:
            while True:
                while i < n and text[i] in " \t\r\n,":
                    i += 1
                if i >= n or text[i] == "]":
                    return
                _, end = dec.raw_decode(text, i)
                self.spans.append((i, end))
                i = end
        except ValueError:
            return

    def line(self, index: int | None, key: str | None = None) -> int | None:
        if index is None or index >= len(self.spans):
            return None
        start, end = self.spans[index]
        if key is not None:
            m = re.compile(rf'"{re.escape(key)}"\s*:').search(self.text, start, end)
            if m:
                start = m.start()
        return self.text.count("\n", 0, start) + 1

    def error(self, index: int | None, key: str | None, message: str, hint: str = HINT) -> ConfigError:
        no = self.line(index, key)
        return ConfigError(f"{self.path}{f':{no}' if no else ''}: {message}", hint)


def _slug(text: str) -> str:
    """A bare TOML key from a free-text CONFIGURATION name, cut at a word boundary."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()  # Zdjęcia -> Zdjecia
    s = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(s) > 40:
        s = s[:41].rsplit("-", 1)[0] if "-" in s[:41] else s[:40]
    return s


def _location(raw: str) -> tuple[str, bool]:
    """(tether path, was relative). micsync resolves a relative path against the directory it is
    started from, which changes from run to run; tether needs one place: the home directory."""
    p = raw.strip()
    if p.startswith("~"):
        head, _, rest = p.partition("/")
        return (head + "/" + posixpath.normpath(rest) if rest.strip("/") else head), False
    if p.startswith("/"):
        return posixpath.normpath(p), False
    return "~/" + posixpath.normpath(p), True


def _paths(where: _Where, i: int, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(i, key, f"configs[{i}].{key} must be a list of paths, not {value!r}")
    return list(value)


def convert(text: str, path: Path, name: str) -> Imported:
    """The locations file for every CONFIGURATION; sets are named from micsync's names (`name`
    only names a set whose micsync name holds no letter or digit)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})", HINT) from None
    where = _Where(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
        raise where.error(None, None, 'no "configs" list: not a micsync configuration')
    out = Imported()
    for key in data:
        if key != "configs":
            out.dropped.append((key, "micsync reads only the configs list; this key had no effect there either"))
    sets: list[str] = []
    taken: set[str] = set()
    owner: dict[str, str] = {}  # expanded path -> the set that holds it first
    for i, config in enumerate(data["configs"]):
        if not isinstance(config, dict):
            raise where.error(i, None, f"configs[{i}] must be an object with name, work and backup")
        for key in ("name", "work", "backup"):
            if key not in config:
                raise where.error(i, None, f'configs[{i}] has no "{key}" (micsync refuses it too)')
        label = config["name"]
        if not isinstance(label, str):
            raise where.error(i, "name", f"configs[{i}].name must be a string, not {label!r}")
        work, backup = _paths(where, i, "work", config["work"]), _paths(where, i, "backup", config["backup"])
        for key in config:
            if key not in ("name", "work", "backup"):
                out.dropped.append((f"configs[{i}].{key}", "not a micsync key: micsync reads name, work and backup"))
        if not work or not backup:
            missing = "WORKING" if not work else "BACKUP"
            why = f"{label!r} has no {missing}: micsync could do nothing with it, a tether set needs both"
            out.dropped.append((f"configs[{i}]", why))
            continue
        base = _slug(label) or name
        set_name, n = base, 1
        while set_name in taken:
            n += 1
            set_name = f"{base}-{n}"
        taken.add(set_name)
        if set_name != label:
            out.notes.append((f"configs[{i}].name", f"the set is named {set_name!r} (a TOML key), from {label!r}"))
        roles: dict[str, list[str]] = {}
        for key, raws in (("work", work), ("backup", backup)):
            roles[key] = []
            for j, raw in enumerate(raws):
                loc, relative = _location(raw)
                roles[key].append(loc)
                if relative:
                    out.notes.append(
                        (
                            f"configs[{i}].{key}[{j}]",
                            f"{raw!r} is relative: micsync took it from the directory it ran in, tether needs one "
                            f"place: {loc} (check it is the folder you meant)",
                        )
                    )
        for loc in roles["work"] + roles["backup"]:
            first = owner.setdefault(os.path.expanduser(loc), set_name)
            if first != set_name:
                out.notes.append(
                    (
                        f"configs[{i}]",
                        f"{loc} is also in the set {first!r}: micsync asked which CONFIGURATION to use, "
                        "tether refuses a PATH that two sets hold (give each folder to one set, or merge the sets)",
                    )
                )
        for w in roles["work"]:
            for b in roles["backup"]:
                a, c = os.path.expanduser(w), os.path.expanduser(b)
                if is_inside(a, c) or is_inside(c, a):
                    raise where.error(
                        i,
                        "backup",
                        f"configs[{i}]: WORKING {w} and BACKUP {b} overlap (micsync refuses it too)",
                        "a BACKUP must lie outside every WORKING of its CONFIGURATION, and the reverse",
                    )
        sets.append(
            "# micsync: " + "".join(c if c.isprintable() else " " for c in label).strip() + "\n"
            f"[sets.{toml.key(set_name)}]\n" + toml.table({"working": roles["work"], "backup": roles["backup"]})
        )
    if not sets:
        raise where.error(None, None, "no CONFIGURATION with both work and backup paths: nothing to import")
    out.notes.append(
        (
            "configs",
            "each CONFIGURATION is a set: work -> working, backup -> backup; micsync --backup/--work/--transfer/"
            "--tree PATH are `tether backup|work|transfer|tree PATH`, with the same -m -d -D -s -v flags",
        )
    )
    out.notes.append(
        (
            "configs",
            "micsync overwrote and deleted without keeping old versions; tether keeps the last 5 of what it "
            "overwrites or deletes in each location's .tether/versions/ (keep_versions = 0 keeps none)",
        )
    )
    out.locations = "\n".join(sets)
    return out
