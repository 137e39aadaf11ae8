"""A mirror target on an rclone remote: the mirror's agent words (put, move, remove, trash, mkdir,
stat...) as rc calls to the private `rclone rcd` that RcloneAgent runs, plus the bulk steps of a
pass (one listing, one `sync/copy` for a batch of files).

Why these choices:
- a small file is one `operations/copyfile` from a scratch file carrying the source's mtime, with
  NoCheckDest (tether decided it changed; rclone must not decide again).  rclone 1.75 uploads to a
  partial name and renames on local and sftp backends; object stores show an upload whole.
- renames are server-side: `operations/movefile` for a file, `sync/move` for a directory (one
  DirMove where the backend has it; else per file, server-side copy + delete where it has Copy).
- a batch of files is one `sync/copy` with the list as FilesFromRaw, never a process per file.
- trash keeps what is replaced or deleted under .tether/trash/<day>/<path> (numbered when taken),
  moved there server-side as above.
Names with control characters are refused (rclone's encodings turn `\\n` into another character
on every backend tried here, and files-from lists are line based).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import errno
import os
import tempfile
from typing import Any

from tether.agent_remote import OpError, show, to_bytes, version_stamp
from tether.transport.rclone_agent import (
    NO_MTIME_NS,
    Item,
    RcError,
    RcloneAgent,
    _entry,
    _join,
    _parent,
    _version_name,
    parse_mtime,
)

LISTERS = 4  # recursive list calls at once in a listing
KEEPERS = 8  # server-side moves at once when a batch keeps the versions it replaces


class RcloneTarget(RcloneAgent):
    """RcloneAgent with the mirror's words, and counters of what crossed (for tests and status)."""

    def __init__(self, remote: str, root: str) -> None:
        super().__init__(remote, root)
        self.uploaded_files = 0  # files whose bytes went up (put, copy_files)
        self.uploaded_bytes = 0
        self.server_moves = 0  # renames and trash moves done on the remote, bytes not re-sent
        self.empty_dirs = True  # whether the backend keeps empty directories (object stores do not)
        self._handlers.update(
            {
                "put": self._put_op,
                "symlink": self._symlink_op,
                "mkdir": self._mkdir_op,
                "set_meta": self._set_meta_op,
                "move": self._move_op,
                "remove": self._remove_op,
                "trash": self._trash_op,
                "stat": self._stat_op,
                "fold_trash": lambda path, trash_root: {"folded": 0, "failed": []},  # rsync never writes here
            }
        )

    def _open(self, create: bool, version_later: bool = False) -> None:
        super()._open(create, version_later)
        self.empty_dirs = bool(self.features.get("CanHaveEmptyDirectories", True))

    @property
    def keeps_mtimes(self) -> bool:
        return self.precision_ns < NO_MTIME_NS

    def same(self, size: int, mtime_ns: int, item_size: int, item_mtime_ns: int, at_least: int = 1) -> bool:
        """Whether a target file is the source's version, as far as this backend can tell: equal
        size, and mtimes equal within the backend's precision (or `at_least`, a listing's own,
        where that is coarser) where it keeps mtimes at all."""
        if size != item_size:
            return False
        return not self.keeps_mtimes or abs(mtime_ns - item_mtime_ns) < max(self.precision_ns, at_least)

    def degraded(self) -> str | None:
        """Why only part of this target can be reached now (a pool's member), else None."""
        return None

    def capabilities_note(self) -> str:
        """What this backend cannot keep, in one line for the log (said once per job start)."""
        if not self.keeps_mtimes:
            times = "keeps no mtimes: files are compared by size only"
        elif self.precision_ns > 1:
            times = f"keeps mtimes to {precision_text(self.precision_ns)}: compared within that"
        else:
            times = "keeps mtimes to the ns"
        move = "server-side moves" if self.can_move else "no server-side moves: renames copy and delete"
        return f"{self.fs}: rclone {self.version}; {times}; keeps no modes, owners or symlinks; {move}"

    # ------------------------------------------------------------------ helpers

    def listing(self) -> dict[str, tuple[str, int, int]]:
        """Every entry under the root but .tether: path -> (type, size, mtime_ns).  The top level
        first, then each top-level directory by its own recursive list call, a few at once: rcd
        walks one call's tree alone, as `rclone sync` would not (its checkers list in parallel)."""
        out: dict[str, tuple[str, int, int]] = {}

        def add(items: list[Item]) -> None:
            for it in items:  # Path is relative to the root, whatever dir was listed
                p = str(it["Path"])
                if p == ".tether" or p.startswith(".tether/"):
                    continue
                out[p] = ("d", 0, 0) if it.get("IsDir") else ("f", int(it["Size"]), _mtime(str(it["ModTime"])))

        top = self._rc("operations/list", {"fs": self.fs, "remote": "", "opt": {"noMimeType": True}}).get("list")
        add(top or [])
        dirs = [str(it["Path"]) for it in top or [] if it.get("IsDir") and it["Path"] != ".tether"]

        def below(d: str) -> list[Item]:
            opt = {"recurse": True, "noMimeType": True}
            return list(self._rc("operations/list", {"fs": self.fs, "remote": d, "opt": opt}).get("list") or [])

        with concurrent.futures.ThreadPoolExecutor(min(LISTERS, len(dirs)) or 1) as pool:
            for items in pool.map(below, dirs):
                add(items)
        return out

    def _drop(self, rel: str, item: Item) -> None:
        if item.get("IsDir"):
            self._rc("operations/purge", {"fs": self.fs, "remote": rel})
        else:
            self._delete(rel)

    def _move_any(self, src: str, dst: str, item: Item) -> None:
        """A server-side move of a file or a whole directory to a free name."""
        if item.get("IsDir"):
            self._move_dir(src, dst)
        else:
            self._move(src, dst)
        self.server_moves += 1

    def keep(self, rel: str, item: Item, trash_root: str, why: str = "replaced") -> str:
        """Keep the entry at rel (a file or a folder) as a version in the tree at trash_root."""
        return self.keep_version(rel, trash_root, why, move=lambda src, dst: self._move_any(src, dst, item))

    def keep_versions(self, rels: list[str], trash_root: str) -> None:
        """Before a batch replaces these files: keep the target's current versions.  Each folder
        and its versions folder are listed once, the names chosen here, and the moves made a few
        at once: one at a time, with a listing each, an object store took ~0.2 s a file."""
        by_dir: dict[str, list[str]] = {}
        for rel in rels:
            folder, name = _parent(rel)
            by_dir.setdefault(folder, []).append(name)
        troot = self._rel(trash_root)
        moves: list[tuple[str, str, Item]] = []
        for folder, names in by_dir.items():  # one listing per folder, not a stat per file
            there = {str(it["Name"]): it for it in self._list(folder)} if len(names) > 1 else None
            vdir = _join(troot, folder)
            taken: set[str] | None = None  # the versions folder's names, listed when first needed
            stamp = version_stamp().decode()
            for name in names:
                rel = _join(folder, name)
                item = there.get(name) if there is not None else self._stat(rel)
                if item is None:
                    continue
                if taken is None:
                    taken = {str(it["Name"]) for it in self._list(vdir)}
                dest = _version_name(name, "replaced", stamp, taken)
                taken.add(dest)
                moves.append((rel, _join(vdir, dest), item))
        with concurrent.futures.ThreadPoolExecutor(min(KEEPERS, len(moves)) or 1) as pool:
            for _ in pool.map(lambda m: self._move_any(*m), moves):
                pass

    def copy_files(self, src_root: str, rels: list[str], sizes: int = 0) -> None:
        """Send these files (paths relative to the local src_root) in one sync/copy."""
        if not rels:
            return
        fd, listing = tempfile.mkstemp(prefix="files-", dir=self._tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(r + "\n" for r in rels))
            self._rc(
                "sync/copy",
                {"srcFs": src_root, "dstFs": self.fs, "_filter": {"FilesFromRaw": [listing]},
                 "_config": {"NoCheckDest": True}},
            )  # fmt: skip
        finally:
            with contextlib.suppress(OSError):
                os.unlink(listing)
        self.uploaded_files += len(rels)
        self.uploaded_bytes += sizes

    # ------------------------------------------------------------------ the mirror's words

    def _put_op(
        self,
        path: str | bytes,
        data: bytes = b"",
        mode: int = 0o644,
        mtime_ns: int | None = None,
        trash_root: str | bytes | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        """Write a file (mode is not kept on a remote); with trash_root the replaced version is kept."""
        rel = self._rel(path)
        if trash_root is not None:
            item = self._stat(rel)
            if item is not None:
                self.keep(rel, item, self._rel(trash_root))
        local, _ = self._source_file(data, mtime_ns, None)
        try:
            try:
                self._upload(local, rel)
            except RcError:
                item = self._stat(rel)
                if item is None or not item.get("IsDir"):
                    raise
                self._drop(rel, item)  # a directory held the name (the delete is on its way)
                self._upload(local, rel)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(local)
        self.uploaded_files += 1
        self.uploaded_bytes += len(data)
        return {"size": len(data)}

    def _symlink_op(self, path: str | bytes, target: str | bytes, **_ignored: Any) -> dict[str, Any]:
        """A remote holds no symlinks: skipped (the applier says so once)."""
        return {"skipped": True}

    def _mkdir_op(self, path: str | bytes, mode: int = 0o755, mtime_ns: int | None = None) -> dict[str, Any]:
        rel = self._rel(path)
        item = self._stat(rel)
        if item is not None and item.get("IsDir"):
            return {"created": False}
        if item is not None:
            self._delete(rel)
        self._rc("operations/mkdir", {"fs": self.fs, "remote": rel})
        return {"created": True}

    def _set_meta_op(self, path: str | bytes, mode: int | None = None, mtime_ns: int | None = None,
                     **_ignored: Any) -> dict[str, Any]:  # fmt: skip
        """Dirs' modes and mtimes (all the mirror sets this way) are not kept on a remote."""
        self._rel(path)
        return {}

    def _move_op(self, old: str | bytes, new: str | bytes, trash_root: str | bytes | None = None) -> dict[str, Any]:
        """Rename old to new server-side (an existing new is replaced, or kept with trash_root);
        {"moved": False} when old is not there, so the caller sends new instead."""
        o, n = self._rel(old), self._rel(new)
        if o == n:
            return {"moved": True}
        if n.startswith(o + "/") or o.startswith(n + "/"):
            raise OpError(errno.EINVAL, f"move {o} -> {n}: one path is inside the other")
        item = self._stat(o)
        if item is None:
            return {"moved": False, "reason": "missing"}
        there = self._stat(n)
        if there is not None:
            if trash_root is not None:
                self.keep(n, there, self._rel(trash_root))
            else:
                self._drop(n, there)
        self._move_any(o, n, item)
        t, size, mtime = _entry(item)[:3]
        return {"moved": True, "type": t, "size": size, "mtime_ns": mtime}

    def _remove_op(self, paths: list[str | bytes]) -> dict[str, Any]:
        removed, missing = 0, 0
        failed: list[dict[str, Any]] = []
        for p in paths:
            try:
                rel = self._rel(p)
                item = self._stat(rel)
                if item is None:
                    missing += 1
                    continue
                self._drop(rel, item)
                removed += 1
            except (OpError, RcError) as e:
                failed.append({"path": p, "error": f"remove {show(to_bytes(p))}: {e}", "errno": e.errno})
        return {"removed": removed, "missing": missing, "failed": failed}

    def _trash_op(self, paths: list[str | bytes], trash_root: str | bytes) -> dict[str, Any]:
        troot = self._rel(trash_root)
        trashed, missing = 0, 0
        failed: list[dict[str, Any]] = []
        dests: list[str] = []
        for p in paths:
            try:
                rel = self._rel(p)
                if rel == troot or rel.startswith(troot + "/"):
                    raise OpError(errno.EINVAL, f"refusing to trash {rel}: it is inside the trash")
                item = self._stat(rel)
                if item is None:
                    missing += 1
                    continue
                dests.append(self.keep(rel, item, troot, "deleted"))
                trashed += 1
            except (OpError, RcError) as e:
                failed.append({"path": p, "error": f"trash {show(to_bytes(p))}: {e}", "errno": e.errno})
        return {"trashed": trashed, "missing": missing, "failed": failed, "dests": dests}

    def _stat_op(self, paths: list[str | bytes]) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for p in paths:
            item = self._stat(self._rel(p))
            if item is None:
                out.append({"type": None})
            else:
                t, size, mtime = _entry(item)[:3]
                out.append({"type": t, "size": size, "mtime_ns": mtime, "mode": 0})
        return {"entries": out}


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_US = datetime.timedelta(microseconds=1)
_fromiso = datetime.datetime.fromisoformat


def _mtime(text: str) -> int:
    """parse_mtime, fast for rclone's usual forms (2026-12-06T08:27:01.500999911Z, 0-9 fraction
    digits, Z or +hh:mm): datetime parses them in C to the µs (it ignores what follows a fraction's
    6th digit, so the digits are checked here) and the 7th to 9th digits are added; a listing of
    20,000 files in 16 ms instead of 26 (a cache of days) or 50 (parse_mtime)."""
    tz = 1 if text[-1:] == "Z" else 6 if text[-6:-5] in ("+", "-") else 0
    end = len(text) - tz
    if tz and text[10:11] == "T" and (end == 19 or (21 <= end <= 29 and text[19] == "." and text[20:end].isdigit())):
        try:
            us: int = (_fromiso(text) - _EPOCH) // _US
        except ValueError:
            return parse_mtime(text)
        return us * 1000 + int(text[26:end].ljust(3, "0")) if end > 26 else us * 1000
    return parse_mtime(text)


def precision_text(ns: int) -> str:
    for unit, n in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if ns >= n:
            return f"{ns / n:g} {unit}"
    return f"{ns} ns"
