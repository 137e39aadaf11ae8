"""Where tether keeps config, state and runtime files (XDG, or all under TETHER_HOME)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


def _tmp() -> str:
    return os.environ.get("TMPDIR") or "/tmp"


class Dirs(NamedTuple):
    config: Path
    state: Path
    runtime: Path

    @property
    def jobs(self) -> Path:
        return self.config / "jobs"

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> Dirs:
        env = os.environ if env is None else env
        home = env.get("TETHER_HOME")
        if home:
            base = Path(home).expanduser().absolute()
            return cls(base / "config", base / "state", base / "run")
        user_home = Path.home()
        config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config") / "tether"
        state = Path(env.get("XDG_STATE_HOME") or user_home / ".local" / "state") / "tether"
        runtime_base = env.get("XDG_RUNTIME_DIR")
        runtime = Path(runtime_base) / "tether" if runtime_base else Path(_tmp()) / f"tether-{os.getuid()}"
        return cls(config, state, runtime)

    def ssh_socket_dir(self) -> Path:
        """A directory short enough for ssh ControlPath sockets (108-byte limit on Linux).

        ssh adds `/<40 hex>` for %C and a 17-byte temporary suffix, so long runtime
        paths (deep test dirs, long home dirs) fall back to a hashed name under /tmp.
        """
        d = self.runtime / "ssh"
        if len(os.fsencode(d)) > 48:
            import hashlib

            tag = hashlib.sha256(os.fsencode(d)).hexdigest()[:10]
            d = Path(_tmp()) / f"tether-ssh-{tag}"
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d
