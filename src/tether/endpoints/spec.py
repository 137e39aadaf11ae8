"""Where files live: a local directory or an ssh host's directory, parsed from a spec.

Specs follow rsync: `host:path` or `user@host:path` is ssh (the host may be an alias from
~/.ssh/config, which ssh itself resolves); anything else, or anything with a `/` before
the first `:`, is a local path. Local paths are made absolute so that a name starting
with `-` can never be read as an option by a child process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from tether.endpoints.caps import POSIX, SSH, Caps
from tether.errors import UsageError

if TYPE_CHECKING:
    from tether.ssh import SshOptions
    from tether.transport.agent import AgentClient

# A conservative host/user syntax: ssh would read a leading '-' as an option.
_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>[A-Za-z0-9_.\[:%][A-Za-z0-9_.\[\]:%-]*)$")


class Local(NamedTuple):
    path: str  # absolute, normalised; may hold surrogate-escaped bytes

    @property
    def caps(self) -> Caps:
        return POSIX

    @property
    def kind(self) -> str:
        return "local"

    @property
    def ssh_host(self) -> str | None:
        return None

    def connector(self, ssh: SshOptions, python: str = "auto", *, create: bool = False) -> Callable[[], AgentClient]:
        """How to open this endpoint's agent (here: in-process, no child at all)."""
        from tether.transport.agent import AgentClient

        return lambda: AgentClient.local(self.path, create=create)

    def rsync_root(self, root: str) -> str:
        """The root as rsync names it, with a trailing slash (its contents)."""
        return root.rstrip("/") + "/"

    def overlaps(self, other: AnyEndpoint) -> bool:
        """One inside the other (or the same): a sync loop or a wipe."""
        if other.local_path is None:
            return False
        a, b = os.path.realpath(self.path), os.path.realpath(other.local_path)
        return is_inside(a, b) or is_inside(b, a)

    def rsync_arg(self) -> str:
        return self.path.rstrip("/") + "/"

    def key(self) -> str:
        return os.path.realpath(self.path)

    @property
    def local_path(self) -> str | None:
        """The folder on this machine, for what only a local endpoint offers (None elsewhere)."""
        return self.path

    @property
    def local_folders(self) -> tuple[str, ...]:
        """Every folder on this machine that writing here writes into (overlap checks)."""
        return (self.path,)

    def __str__(self) -> str:
        return self.path


class Ssh(NamedTuple):
    host: str  # as the user wrote it, `user@alias` allowed; ssh resolves aliases
    path: str  # remote path; empty or relative means relative to the remote home

    @property
    def caps(self) -> Caps:
        return SSH

    @property
    def kind(self) -> str:
        return "ssh"

    @property
    def ssh_host(self) -> str | None:
        return self.host

    def connector(self, ssh: SshOptions, python: str = "auto", *, create: bool = False) -> Callable[[], AgentClient]:
        """How to open this endpoint's agent: the far-side program over one ssh channel."""
        from tether.transport.agent import AgentClient

        return lambda: AgentClient.connect_ssh(ssh, self.host, self.path or ".", python, create=create)

    def rsync_root(self, root: str) -> str:
        return f"{self.host}:{root}/"

    def overlaps(self, other: AnyEndpoint) -> bool:
        if other.ssh_host != self.host:
            return False
        a, b = os.path.normpath(self.path or "."), os.path.normpath(other.path or ".")
        return is_inside(a, b) or is_inside(b, a)

    @property
    def hostname(self) -> str:
        return self.host.rsplit("@", 1)[-1]

    @property
    def local_path(self) -> str | None:
        return None

    @property
    def local_folders(self) -> tuple[str, ...]:
        return ()

    def rsync_arg(self) -> str:
        path = self.path.rstrip("/")
        return f"{self.host}:{path}/" if path else f"{self.host}:"

    def key(self) -> str:
        return f"{self.host}:{os.path.normpath(self.path) if self.path else ''}"

    def __str__(self) -> str:
        return f"{self.host}:{self.path}"


Endpoint = Local | Ssh


class AnyEndpoint(Protocol):
    """What every endpoint kind answers (Local, Ssh, and the rclone Rclone)."""

    @property
    def path(self) -> str: ...
    @property
    def local_path(self) -> str | None: ...
    @property
    def ssh_host(self) -> str | None: ...
    @property
    def local_folders(self) -> tuple[str, ...]: ...


class KeyedEndpoint(AnyEndpoint, Protocol):
    def key(self) -> str: ...


def as_local(ep: AnyEndpoint) -> Local | None:
    """The endpoint as a local folder, where it is one (a mirror's source must be)."""
    return Local(ep.local_path) if ep.local_path is not None else None


def parse_endpoint(spec: str, *, base: str | None = None) -> Endpoint:
    """Parse a command-line or config spec; `base` resolves relative local paths."""
    if not spec:
        raise UsageError("an empty path was given", "give a directory like /srv/data or host:/srv/data")
    colon = spec.find(":")
    slash = spec.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        host, path = spec[:colon], spec[colon + 1 :]
        if host.startswith("[") and "]" in spec:  # [ipv6]:path
            end = spec.index("]")
            host, path = spec[: end + 1], spec[end + 2 :]
        if not _HOST_RE.match(host):
            raise UsageError(
                f"{spec!r}: {host!r} is not a valid ssh host",
                "write host:/path or user@host:/path; for a local path with ':' write ./" + spec,
            )
        return Ssh(host, path)
    path = os.path.normpath(os.path.join(base or os.getcwd(), os.path.expanduser(spec)))
    return Local(path)


def is_inside(inner: str, outer: str) -> bool:
    """True when `inner` is `outer` or below it (both absolute, already normalised)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def check_overlap(source: Local, targets: Sequence[KeyedEndpoint], what: str = "target") -> None:
    """Refuse a target given twice, inside its source, or holding it (a sync loop or a wipe)."""
    src = os.path.realpath(source.path)
    seen: dict[str, KeyedEndpoint] = {}
    for t in targets:
        k = t.key()
        if k in seen:
            raise UsageError(f"{what} {t} is given twice", "list each target once")
        seen[k] = t
        for folder in t.local_folders:
            _refuse_nesting(source, src, t, os.path.realpath(folder), what)


def _refuse_nesting(source: Local, src: str, t: KeyedEndpoint, dst: str, what: str) -> None:
    """A target (or a local folder it writes into, a pool's member) and the source nested."""
    if is_inside(dst, src):
        raise UsageError(
            f"{what} {t} is inside the source {source}"
            + ("" if dst == os.path.realpath(str(t)) else f" (its folder {dst})"),
            "choose a target outside the source tree (or exclude it and use a sibling folder)",
        )
    if is_inside(src, dst):
        raise UsageError(
            f"the source {source} is inside the {what} {t}"
            + ("" if dst == os.path.realpath(str(t)) else f" (its folder {dst})"),
            "mirroring would delete the source itself; choose a target beside it",
        )
