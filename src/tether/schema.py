"""The one schema framework for tether's TOML files: typed keys with defaults and examples,
and errors that name file:line, the key, and what to write instead.

A kind of job is a `Schema` (a dict of `Key`s, one line per key); `Doc` is a parsed file
checked against it. A file that does not validate never runs, so a typo cannot turn into a
partial sync.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tether.errors import ConfigError


class Key(NamedTuple):
    """One key: what it must be (words for the message), the check, an example line, the
    value a file without it gets (`required` keys have none), and names people may write
    for it instead (`also`, suggested back as this key)."""

    what: str
    check: Callable[[Any], bool]
    example: str
    default: Any = None
    required: bool = False
    also: tuple[str, ...] = ()


Schema = dict[str, Key]


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)


# -- checks, shared by every schema ---------------------------------------------------------
def is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def is_command(v: Any) -> bool:
    return is_str_list(v) and bool(v) and v[0] != ""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A finite number: TOML reads `nan` and `inf` as floats, and no key of tether's means them."""
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


YEAR = 365 * 86400  # the longest span any key takes: timers beyond it overflow poll() and its kin
SECONDS = "a number of seconds (more than 0, at most a year)"


def is_seconds(v: Any) -> bool:
    return is_num(v) and 0 < v <= YEAR


def parse_size(v: Any) -> int | None:
    """A size (`min_free`, `log_max_size`): bytes, or "500M", "1G", "1.5T" (powers of 1024, as df -h shows them)."""
    if is_int(v) and v >= 0:
        return int(v)
    if isinstance(v, str):
        m = _SIZE.fullmatch(v.strip())
        if m:
            return int(float(m.group(1)) * 1024 ** "_KMGT".index((m.group(2) or "_").upper()))
    return None


def choice(name: str, choices: tuple[str, ...], default: str | None = None) -> Key:
    """A key whose value must be one of `choices` (default: the first)."""
    return Key(
        "one of " + ", ".join(choices),
        lambda v: v in choices,
        f'{name} = "{choices[0]}"',
        choices[0] if default is None else default,
    )


def did_you_mean(key: str, known: list[str], also: dict[str, str] | None = None) -> str | None:
    """The known name closest to a misspelt `key`; `also` maps other names to known ones."""
    import difflib  # only for a file with a mistake

    names = {k: k for k in known} | (also or {})
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return f"did you mean {names[close[0]]!r}?" if close else None


# -- reading ---------------------------------------------------------------------------------
def read_toml(file: Path) -> tuple[str, dict[str, Any]]:
    """The text and the parsed table; a syntax error names file:line. A missing file raises
    FileNotFoundError for the caller to explain (a job name, a config file)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {e}", "give a readable UTF-8 text file") from None
    return text, parse_toml(file, text)


def parse_toml(file: Path, text: str) -> dict[str, Any]:
    import tomllib  # only where a file is read: `tether bisync A B` reads none

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line = m.group(1) if m else str(max(1, len(text.splitlines())))  # "at end of document"
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise ConfigError(
            f"{file}:{line}: invalid TOML: {msg}", "see https://toml.io for the syntax; strings need quotes"
        ) from None


def key_line(text: str, key: str) -> int | None:
    """The line where a top-level `key` is set (bare or quoted, `key =`, `key.sub =` or a
    `[key]` header); None when it cannot be found."""
    q = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    rx = re.compile(rf"^\s*(?:{q}\s*[=.]|\[\[?\s*{q}\s*[\].])")
    for no, ln in enumerate(text.splitlines(), 1):
        if rx.match(ln):
            return no
    return None


class Doc:
    """A parsed TOML table checked against a schema; values read through it get the defaults."""

    def __init__(self, file: Path, text: str, data: dict[str, Any], schema: Schema) -> None:
        self.file, self.text, self.data, self.schema = file, text, data, schema

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        """A ConfigError that points at file:line of `key` (or at the file)."""
        line = key_line(self.text, key) if key else None
        where = f"{self.file}:{line}" if line else str(self.file)
        return ConfigError(f"{where}: {message}", hint)

    def check(self, elsewhere: Callable[[str], str | None] = lambda _k: None) -> Doc:
        """Every key known and of the right type, every required key there; `elsewhere` may
        say where an unknown key belongs (another kind of job)."""
        for key, value in self.data.items():
            k = self.schema.get(key)
            if k is None:
                also = {a: name for name, k in self.schema.items() for a in k.also}
                hint = elsewhere(key) or did_you_mean(key, list(self.schema), also)  # another kind's key: say so
                known = "known keys: " + ", ".join(self.schema)
                raise self.error(key, f"unknown key {key!r}", f"{hint} {known}" if hint else known)
            if not k.check(value):
                what = f"{key} must be {k.what}, not {value!r}"
                raise self.error(key, what, f"write for example: {k.example}")
        for key, k in self.schema.items():
            if k.required and key not in self.data:
                raise self.error(None, f"missing key {key!r}", f"add a line like: {k.example}")
        return self

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getitem__(self, key: str) -> Any:
        """The value in the file, else the key's default."""
        return self.data[key] if key in self.data else self.schema[key].default
