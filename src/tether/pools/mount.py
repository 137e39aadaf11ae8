"""A pool as one folder (`rclone mount` of its union over FUSE), and a pool brought back into an
empty folder after a reinstall (`tether pool import`).

The mount is read-only: tether places the pool's files (caps, reserves, the policy); writes
through a mount would be placed by rclone's union, which knows none of them. Its VFS cache
(whole-file reads, so programs can seek) lives under tether's state dir, sized by the caller.
Which folder a pool is mounted on is noted in the runtime dir, so `umount NAME` finds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tether.dirs import Dirs
from tether.errors import TetherError, UsageError
from tether.pools.definition import Pool
from tether.pools.union import META, union_fs
from tether.transport.rclone_bin import rclone_program


def fuse_missing() -> str | None:
    """Why FUSE cannot be used here (with what to install), or None."""
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing: load the fuse module (modprobe fuse), or give the container the device"
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount is missing: install the fuse3 package (apt-get install fuse3)"
    return None


def _noted(dirs: Dirs, name: str) -> Path:
    return dirs.runtime / "pools" / f"{name}.mount.json"


def mounted_at(dirs: Dirs, name: str) -> Path | None:
    try:
        where = Path(json.loads(_noted(dirs, name).read_text())["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return where if os.path.ismount(where) else None


def mount(dirs: Dirs, pool: Pool, where: Path, cache_size: str = "1G") -> Path:
    why = fuse_missing()
    if why:
        raise UsageError(f"cannot mount pool {pool.name}: {why}")
    now = mounted_at(dirs, pool.name)
    if now is not None:
        raise UsageError(f"pool {pool.name} is mounted at {now} already", f"`tether pool umount {pool.name}` first")
    where = where.absolute()
    where.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(where) or any(where.iterdir()):
        raise UsageError(f"{where} is not an empty folder", "mount the pool on an empty folder")
    cache = dirs.state / "pools" / pool.name / "vfs"
    cache.mkdir(parents=True, exist_ok=True)
    argv = [rclone_program(), "mount", union_fs(pool), str(where), "--read-only", "--daemon",
            "--vfs-cache-mode", "full", "--vfs-cache-max-size", cache_size, "--cache-dir", str(cache),
            "--exclude", f"/{META}/**", "--dir-cache-time", "10s"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode or not os.path.ismount(where):
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise TetherError(f"rclone could not mount pool {pool.name} on {where}: {last}",
                          "`tether pool status` shows whether every member is reachable")  # fmt: skip
    note = _noted(dirs, pool.name)
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(json.dumps({"dir": str(where)}))
    return where


def umount(dirs: Dirs, name: str) -> Path:
    where = mounted_at(dirs, name)
    if where is None:
        _noted(dirs, name).unlink(missing_ok=True)
        raise UsageError(f"pool {name} is not mounted", f"`tether pool mount {name} DIR` mounts it")
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
    proc = subprocess.run([tool, "-u", str(where)], capture_output=True, text=True)
    if proc.returncode:
        hint = "leave the folder (a shell or a program is inside it), then run again" if "busy" in proc.stderr else None
        raise TetherError(f"cannot unmount {where}: {proc.stderr.strip() or 'no message'}", hint)
    _noted(dirs, name).unlink(missing_ok=True)
    return where


def import_pool(pool: Pool, dest: Path, partial: bool = False) -> tuple[int, int]:
    """Everything the pool holds (not tether's versions) copied into the empty folder dest, with
    rclone's progress on a terminal; (files, bytes) there afterwards. A member that cannot be
    reached is named and the import refused, unless `partial` (what the others hold comes back)."""
    from tether.pools.union import probe

    dest = dest.absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} is not an empty folder",
                         "import restores a pool into an empty folder (after a reinstall): give a new one")  # fmt: skip
    down = probe(pool)
    if down and (not partial or len(down) == len(pool.members)):
        away = ", ".join(sorted(down))
        hint = "run the import again when it is back, or pass --partial to import what the others hold"
        raise TetherError(f"pool {pool.name}: {away} cannot be reached; what lives only there would be missing", hint)
    argv = [rclone_program(), "copy", union_fs(pool, without=down), str(dest), "--exclude", f"/{META}/**",
            "--create-empty-src-dirs"]  # fmt: skip
    if sys.stderr.isatty():
        argv.append("--progress")
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=None if sys.stderr.isatty() else subprocess.DEVNULL,
                          stderr=None if sys.stderr.isatty() else subprocess.PIPE, text=True)  # fmt: skip
    if proc.returncode:
        last = ((proc.stderr or "").strip().splitlines() or ["see rclone's words above"])[-1]
        hint = "`tether pool status` shows whether every member is reachable; run the import again"
        raise TetherError(f"import of pool {pool.name} into {dest} failed: {last}", hint)
    files = size = 0
    for d, _dirs, names in os.walk(dest):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(d, n)).st_size
    return files, size


@contextlib.contextmanager
def mounted_while_running(dirs: Dirs, endpoints: Iterable[object]) -> Iterator[None]:
    """For `tether run`: the pools among a job's endpoints that name a mount folder are mounted
    there while the job runs (a pool mounted already stays as it is), and unmounted after."""
    from tether.endpoints.pool import pools_of
    from tether.pools.definition import load_pool

    log = logging.getLogger("tether")
    mine: list[str] = []
    try:
        for end in pools_of(endpoints):
            pool = load_pool(dirs, end.name)
            if pool.mount and pool.name not in mine and mounted_at(dirs, pool.name) is None:
                mount(dirs, pool, Path(pool.mount), pool.cache_size)
                mine.append(pool.name)
                log.info("pool %s mounted at %s (read-only) while the job runs", pool.name, pool.mount)
        yield
    finally:
        for name in mine:
            try:
                where = umount(dirs, name)
                log.info("pool %s unmounted from %s", name, where)
            except TetherError as e:
                log.warning("pool %s: %s", name, e)
