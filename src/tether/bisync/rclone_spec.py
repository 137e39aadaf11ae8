"""Which `name:path` specs are rclone remotes, and the Rclone replica endpoint.

`name:path` is also how ssh hosts are written, so a name counts as an rclone remote when rclone
knows it: a `[name]` section of rclone's config file (RCLONE_CONFIG, else the default path) or
an `RCLONE_CONFIG_<NAME>_TYPE` variable, as rclone itself resolves names.  The config is read
here as text, not by running `rclone listremotes`, so an ssh pass pays nothing for the check.
A name that is both an rclone remote and an ssh alias is the rclone remote, as in rclone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from tether.endpoints import Endpoint, Local, check_overlap, parse_endpoint
from tether.errors import UsageError

_SPEC = re.compile(r"^([A-Za-z0-9_.+@ -]+?):(.*)$", re.S)


class Rclone(NamedTuple):
    remote: str  # the remote's name, without the colon
    path: str  # path inside the remote

    @property
    def kind(self) -> str:
        return "rclone"

    def key(self) -> str:
        return f"rclone:{self.remote}:{os.path.normpath(self.path) if self.path else ''}"

    def __str__(self) -> str:
        return f"{self.remote}:{self.path}"


ReplicaSpec = Endpoint | Rclone


def _config_file(env: dict[str, str]) -> Path:
    if env.get("RCLONE_CONFIG"):
        return Path(env["RCLONE_CONFIG"])
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "rclone" / "rclone.conf"


def rclone_remotes(env: dict[str, str] | None = None) -> set[str]:
    env = dict(os.environ) if env is None else env
    names = {m.group(1).lower() for k in env if (m := re.fullmatch(r"RCLONE_CONFIG_(.+)_TYPE", k))}
    try:
        text = _config_file(env).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    names |= {m.group(1).lower() for m in re.finditer(r"(?m)^\s*\[([^\]]+)\]\s*$", text)}
    return names


def parse_replica(spec: str, *, base: str | None = None) -> ReplicaSpec:
    """A local path, ssh `host:/path`, or rclone `remote:path`."""
    m = _SPEC.match(spec)
    if m and "/" not in m.group(1) and m.group(1).lower() in rclone_remotes():
        return Rclone(m.group(1), m.group(2))
    return parse_endpoint(spec, base=base)


def check_targets(source: Local, targets: Sequence[ReplicaSpec]) -> None:
    """check_overlap for local and ssh targets; an rclone target may only be given once."""
    seen: set[str] = set()
    for t in targets:
        if isinstance(t, Rclone):
            if t.key() in seen:
                raise UsageError(f"target {t} is given twice", "list each target once")
            seen.add(t.key())
    check_overlap(source, [t for t in targets if not isinstance(t, Rclone)])
