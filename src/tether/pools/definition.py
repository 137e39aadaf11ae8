"""A pool's definition: its members, each one's cap and reserve, and the placement policy.

Kept by tether in `<config>/pools/NAME.toml`, written by `tether pool create` and readable by
hand:

    policy = "most-free"
    members = ["s3box:bucket/tether", "gdrive:tether", "/mnt/disk2/pool"]
    caps = { "s3box:bucket/tether" = "40G" }
    reserves = { "gdrive:tether" = "2G" }

A member is an rclone remote (`remote:path`, the remote set up in rclone's own config) or a
local folder. rclone itself is configured from this (pools/union.py): tether keeps no rclone
config of its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.dirs import Dirs
from tether.errors import UsageError
from tether.pools.placement import POLICIES, Member
from tether.schema import Doc, Key, Schema, choice, parse_size, read_toml

POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _sizes(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and parse_size(x) is not None for k, x in v.items())


def _members(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, str) and x for x in v)


SCHEMA: Schema = {
    "members": Key("a list of rclone remotes or local folders", _members, 'members = ["s3box:bucket/tether"]',
                   required=True),
    "policy": choice("policy", POLICIES),
    "caps": Key("a table of member = size", _sizes, 'caps = { "s3box:bucket/tether" = "40G" }', {}),
    "reserves": Key("a table of member = size", _sizes, 'reserves = { "gdrive:tether" = "2G" }', {}),
    # mounted (read-only) while a job that uses the pool runs: `tether start` mounts, `stop` unmounts
    "mount": Key("an absolute path", lambda v: isinstance(v, str) and v.startswith("/"), 'mount = "/mnt/pool"'),
    "cache_size": Key("a size", lambda v: parse_size(v) is not None, 'cache_size = "2G"', "1G"),
}  # fmt: skip


@dataclass(frozen=True)
class Pool:
    name: str
    members: tuple[Member, ...]
    policy: str = POLICIES[0]
    mount: str | None = None  # where a running job that uses it mounts it
    cache_size: str = "1G"  # the mount's VFS cache

    def to_toml(self) -> str:
        """The file `tether pool create` writes (json quoting is TOML's basic string quoting)."""
        import json

        q = json.dumps
        lines = [f"policy = {q(self.policy)}", "members = [" + ", ".join(q(m.name) for m in self.members) + "]"]
        caps = [f"{q(m.name)} = {m.cap}" for m in self.members if m.cap is not None]
        reserves = [f"{q(m.name)} = {m.reserve}" for m in self.members if m.reserve]
        if caps:
            lines.append("caps = { " + ", ".join(caps) + " }")
        if reserves:
            lines.append("reserves = { " + ", ".join(reserves) + " }")
        if self.mount:
            lines.append(f"mount = {q(self.mount)}")
        if self.cache_size != "1G":
            lines.append(f"cache_size = {q(self.cache_size)}")
        return "\n".join(lines) + "\n"


def check_name(name: str) -> str:
    if not POOL_NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a valid pool name", "use letters, digits, '-', '_' and '.'")
    return name


def pool_file(dirs: Dirs, name: str) -> Path:
    return dirs.config / "pools" / f"{check_name(name)}.toml"


def check_member(spec: str) -> str:
    """A member as written: a local folder (made absolute) or `remote:path`. Quotes cannot be
    passed to rclone's union inside its list of upstreams: refused here, with the way out."""
    if any(c in spec for c in "\"'\n"):
        raise UsageError(f"pool member {spec!r}: quotes and newlines cannot be passed to rclone's union",
                         "rename the folder, or set up an rclone alias remote for it")  # fmt: skip
    from tether.transport.rclone_bin import remote_spec

    if remote_spec(spec) is None and not spec.startswith("/"):
        return os.path.abspath(spec)
    return spec


def load_pool(dirs: Dirs, name: str) -> Pool:
    file = pool_file(dirs, name)
    try:
        text, data = read_toml(file)
    except FileNotFoundError:
        raise UsageError(f"no pool named {name!r}", f"make it with `tether pool create {name} MEMBER...`") from None
    doc = Doc(file, text, data, SCHEMA).check()
    members = [check_member(m) for m in doc["members"]]
    if len(set(members)) != len(members):
        raise doc.error("members", "a member is listed twice", "list each member once")
    for key in ("caps", "reserves"):
        unknown = [k for k in doc[key] if k not in members]
        if unknown:
            raise doc.error(key, f"{key} names {unknown[0]!r}, which is not a member", "use a name from members")
    caps, reserves = doc["caps"], doc["reserves"]

    def member(m: str) -> Member:
        return Member(m, parse_size(caps[m]) if m in caps else None, parse_size(reserves.get(m, 0)) or 0)

    return Pool(name, tuple(member(m) for m in members), doc["policy"], doc["mount"], str(doc["cache_size"]))


def save_pool(dirs: Dirs, pool: Pool) -> Path:
    """Written whole, then renamed into place: a reader never sees half a definition."""
    file = pool_file(dirs, pool.name)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(pool.to_toml(), encoding="utf-8")
    os.replace(tmp, file)
    return file


def list_pools(dirs: Dirs) -> list[str]:
    d = dirs.config / "pools"
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []
