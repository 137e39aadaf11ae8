"""The one job loader: `jobs/NAME.toml` read and parsed once, its `kind` taken from the parsed
table (default "mirror"), the table checked against that kind's schema and built into a job.

Every command that reads a job (sync, check, jobs, run, start, conflicts, import-config) comes
through `load_job`, so a file means the same to all of them: `"kind" = "bisync"` (a quoted
key, valid TOML) is a bisync job everywhere, and every error names file:line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Union

from tether.dirs import Dirs
from tether.errors import UsageError
from tether.schema import Doc, Schema, did_you_mean, read_toml

if TYPE_CHECKING:
    from tether.bisync.config import BisyncJob
    from tether.config import MirrorJob

Job = Union["MirrorJob", "BisyncJob"]

KINDS = ("mirror", "bisync")
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _kind(kind: str) -> tuple[Schema, Callable[[Doc, str], Job]]:
    """A kind's schema and builder, imported only when a job of that kind is read."""
    if kind == "bisync":
        from tether.bisync.config import SCHEMA as BISYNC
        from tether.bisync.config import build as build_bisync

        return BISYNC, build_bisync
    from tether.config import SCHEMA as MIRROR
    from tether.config import build as build_mirror

    return MIRROR, build_mirror


def load_job(file: Path, name: str) -> Job:
    """The validated job in `file`; a ConfigError naming file:line for anything wrong in it."""
    try:
        text, data = read_toml(file)
    except FileNotFoundError:
        raise UsageError(f"no job named {name!r} ({file} does not exist)", "`tether jobs` lists the jobs") from None
    from tether.alerts.config import refuse_secrets

    refuse_secrets(file, text, data)
    kind = data.get("kind", "mirror")
    if kind not in KINDS:
        doc = Doc(file, text, data, {})
        near = did_you_mean(kind, list(KINDS)) if isinstance(kind, str) else None
        raise doc.error(
            "kind",
            f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}",
            (near + " " if near else "") + 'write kind = "mirror" (the default) or kind = "bisync"',
        )
    schema, build = _kind(kind)

    def elsewhere(key: str) -> str | None:
        others = [k for k in KINDS if k != kind and key in _kind(k)[0]]
        return f"{key!r} is a key of {others[0]} jobs, and this is a {kind} job." if others else None

    return build(Doc(file, text, data, schema).check(elsewhere), name)


def job_file(dirs: Dirs, name: str) -> Path:
    if not JOB_NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a valid job name", "use letters, digits, '-', '_' and '.'")
    return dirs.jobs / f"{name}.toml"


def load_named(dirs: Dirs, name: str) -> Job:
    return load_job(job_file(dirs, name), name)


def list_jobs(dirs: Dirs) -> list[str]:
    if not dirs.jobs.is_dir():
        return []
    return sorted(p.stem for p in dirs.jobs.glob("*.toml"))
