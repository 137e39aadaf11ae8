"""A tiny TOML writer for the importers: strings, numbers, booleans and lists of strings only.

tether itself only reads TOML (tomllib); the importers write job and locations files that
must read back exactly, so every string goes through one escaping function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

Value = str | bool | int | float | Sequence[str]


def string(s: str) -> str:
    """A TOML basic string: JSON's escaping is valid TOML, except that TOML also escapes DEL."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else string(k)


def value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return string(v)
    items = [string(x) for x in v]
    if len(items) <= 1 or sum(len(x) + 2 for x in items) < 80:
        return "[" + ", ".join(items) + "]"
    return "[\n" + "".join(f"    {x},\n" for x in items) + "]"


def table(items: Mapping[str, Value]) -> str:
    """`key = value` lines, in the mapping's order."""
    return "".join(f"{key(k)} = {value(v)}\n" for k, v in items.items())
