"""`tether import-config`: other sync tools' configs turned into tether job files.

One module per format, each with the same three names (the interface every format keeps):

    NAME: str                                            e.g. "mimi"
    def looks_like(text: str, path: Path) -> bool        recognised by content, not by file name
    def convert(text: str, path: Path, name: str) -> Imported

`convert` never runs the file (shell configs are read, Python configs are parsed with `ast`);
a syntax error is a ConfigError naming FILE:LINE. Every key of the file either becomes tether
settings (with a note where its meaning or unit changes) or is listed as dropped with why:
nothing is lost without saying so.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol, cast

from tether.errors import UsageError

TomlValue = str | int | float | bool | Sequence[str] | Sequence[int]


@dataclass
class Imported:
    """What one config becomes; nothing here is written until the CLI has validated it."""

    jobs: dict[str, str] = field(default_factory=dict)  # job name -> TOML text of jobs/NAME.toml
    locations: str | None = None  # TOML text of locations.toml, or None
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (key, why it has no equivalent)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (key, how its meaning was translated)

    def drop(self, key: str, why: str) -> None:
        self.dropped.append((key, why))

    def note(self, key: str, how: str) -> None:
        self.notes.append((key, how))


class Format(Protocol):
    """A format module, as the registry sees it."""

    NAME: str

    def looks_like(self, text: str, path: Path) -> bool: ...

    def convert(self, text: str, path: Path, name: str) -> Imported: ...


# In the order they are tried: the most specific content first.
_MODULES = ("mimi", "osync", "micsync", "inosync", "unison")
DISPLAY = {"mimi": "MiMi", "osync": "osync", "micsync": "micsync", "inosync": "inosync", "unison": "unison"}


def _load(names: Sequence[str]) -> list[Format]:
    """The format modules that exist: one still being written on another branch is skipped."""
    found: list[Format] = []
    for n in names:
        full = f"{__name__}.{n}"
        try:
            module: ModuleType = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name != full:
                raise
            continue
        found.append(cast(Format, module))
    return found


def detect(text: str, path: Path) -> Format:
    """The first format whose looks_like accepts the file's content."""
    for fmt in FORMATS:
        if fmt.looks_like(text, path):
            return fmt
    names = [DISPLAY[n] for n in _MODULES]
    raise UsageError(
        f"{path}: not a config of {', '.join(names[:-1])} or {names[-1]}",
        "give the config file of one of these tools (its content decides, not its name)",
    )


def ssh_spec(imp: Imported, key: str, user: str, host: str, port: str, path: str) -> str:
    """`user@host:path` for an ssh address given in parts. tether's specs carry no port (ssh and
    ~/.ssh/config choose it), so a port other than 22 is dropped with the line that restores it."""
    if port and port != "22":
        imp.drop(
            key,
            f"port {port}: a tether path has no port and ssh would use 22; before running the job, "
            f"add `Host {host}` with `Port {port}` to ~/.ssh/config",
        )
    elif port:
        imp.note(key, "port 22 is ssh's default: tether lets ssh (and ~/.ssh/config) choose it")
    return f"{user}@{host}:{path}" if user else f"{host}:{path}"


def _scalar(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no TOML form here")
        return repr(value)
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def to_toml(
    values: Mapping[str, TomlValue], header: Sequence[str] = (),
    tables: Mapping[str, Mapping[str, TomlValue]] | None = None,
) -> str:  # fmt: skip
    """A job file: comment lines, then `key = value` lines, then each of `tables` (by its dotted
    name, e.g. "alerts.email") as a `[name]` header and its lines."""
    lines = ["# " + "".join(c if c.isprintable() else "?" for c in h) for h in header]
    for name, table in [("", values), *(tables or {}).items()]:
        if name:
            lines.append(f"\n[{name}]")
        for key, value in table.items():
            if isinstance(value, str | int | float | bool):
                text = _scalar(value)
            else:
                text = "[" + ", ".join(_scalar(v) for v in value) + "]"
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


FORMATS: list[Format] = _load(_MODULES)
