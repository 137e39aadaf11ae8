"""A mirror's writes into a pool: each new file goes to the member placement chooses, straight to
that member (one sync/copy per member for a batch); a changed file goes back to the member that
holds it while it fits there. Everything else (the listing, moves, deletes, versions, reads)
goes through the pool's union, which acts on the member holding each path: a rename stays on
its member, server-side, and a version is kept beside the file it was.

What each member holds is counted when the first write needs it (every member listed at once)
and kept up to date with what this target sends, so caps and reserves hold within a batch.
A file no member can take is not sent at all; the batch's other files are, and the pass fails
naming the pool, the file and what to do (a cap, a member, free space).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

from tether.agent_remote import OpError
from tether.errors import TetherError
from tether.pools.definition import Pool
from tether.pools.placement import Room, place
from tether.pools.union import member_fs
from tether.transport.rclone_agent import RcError
from tether.transport.rclone_target import RcloneTarget


class PoolFull(TetherError):
    """Files that no member of the pool can take: nothing of them was sent."""


class PoolTarget(RcloneTarget):
    pool: Pool  # set by open(), before any write

    def __init__(self, remote: str, root: str) -> None:
        super().__init__(remote, root)
        self._rooms: list[Room] | None = None
        self._holders: dict[str, tuple[int, int]] = {}  # path under the root -> (member, size there)
        self._versioned: set[str] = set()  # paths whose old version was kept (it stays on its member)
        self._uploading = threading.local()  # the member a bisync install's upload goes to (see _place)

    @classmethod
    def open(cls, pool: Pool, remote: str, root: str, *, create: bool, version_later: bool = False) -> PoolTarget:
        agent = cls.connect(remote, root, create, version_later=version_later)
        agent.pool = pool
        return agent

    # ------------------------------------------------------------------ what each member holds

    def _member_fs(self, i: int) -> str:
        return member_fs(self.pool.members[i], self.info["root"])

    def rooms(self) -> list[Room]:
        """Each member's use (every byte tether put there, kept versions too: they fill it as
        much) and free space, and which member holds each path under the root; asked of every
        member at once, on the first write."""
        if self._rooms is not None:
            return self._rooms

        def ask(i: int) -> tuple[Room, list[tuple[str, int]]]:
            m = self.pool.members[i]
            try:
                size = self._rc("operations/size", {"fs": member_fs(m)})
            except RcError as e:
                if e.errno != 2:  # a member nothing was put on yet is empty, not down
                    return Room(up=False), []
                size = {}
            room = Room(used=int(size.get("bytes", 0) or 0))
            with contextlib.suppress(RcError):
                about = self._rc("operations/about", {"fs": member_fs(m)})
                if isinstance(about.get("free"), int):
                    room.free = int(about["free"])
            try:
                items = self._rc(
                    "operations/list",
                    {
                        "fs": self._member_fs(i),
                        "remote": "",
                        "opt": {"recurse": True, "filesOnly": True, "noMimeType": True},
                    },
                )
            except RcError:
                items = {}
            files = [(str(it["Path"]), int(it["Size"])) for it in items.get("list") or []
                     if not str(it["Path"]).startswith(".tether/")]  # fmt: skip
            return room, files

        with concurrent.futures.ThreadPoolExecutor(len(self.pool.members)) as ex:
            got = list(ex.map(ask, range(len(self.pool.members))))
        self._rooms = [room for room, _ in got]
        for i, (_room, files) in enumerate(got):
            for path, size in files:
                self._holders.setdefault(path, (i, size))
        return self._rooms

    # ------------------------------------------------------------------ writes, placed

    def _placed(self, files: Iterable[tuple[str, int]]) -> tuple[dict[int, list[str]], dict[str, int], list[str]]:
        """(member -> paths to send there, path -> member of an old copy to drop, unplaced)."""
        rooms = self.rooms()
        files = list(files)
        held = {}
        for p, _size in files:
            if p in self._holders:
                i, old = self._holders[p]
                held[p] = (i, 0 if p in self._versioned else old)  # a kept version frees nothing
        got = place(files, self.pool.members, rooms, self.pool.policy, held)
        by_member: dict[int, list[str]] = {}
        for p, i in got.where.items():
            by_member.setdefault(i, []).append(p)
        sizes = dict(files)
        for p, i in got.where.items():
            self._holders[p] = (i, sizes[p])
            self._versioned.discard(p)
        return by_member, got.leaving, got.unplaced

    def _full(self, unplaced: list[str], sizes: dict[str, int]) -> PoolFull:
        first = unplaced[0]
        more = f" and {len(unplaced) - 1} more" if len(unplaced) > 1 else ""
        return PoolFull(
            f"pool {self.pool.name} is full: no member can take {first} ({sizes[first]} bytes){more}; nothing of"
            " them was sent",
            f"raise a member's cap, add a member (`tether pool create {self.pool.name} ... --force`), or free space;"
            f" `tether pool status {self.pool.name}` shows each member",
        )

    def copy_files(self, src_root: str, rels: list[str], sizes: int = 0) -> None:
        """These files to the members placement chooses: one sync/copy per member."""
        if not rels:
            return
        sized: dict[str, int] = {}
        for r in rels:
            try:
                sized[r] = os.lstat(os.path.join(src_root, r)).st_size
            except FileNotFoundError:
                sized[r] = 0  # gone since the scan: rclone says so for the pass
        by_member, leaving, unplaced = self._placed(sized.items())
        for i, paths in by_member.items():
            self._copy_to(i, src_root, paths)
            self.uploaded_files += len(paths)
            self.uploaded_bytes += sum(sized[p] for p in paths)
        self._drop_old(leaving)
        if unplaced:
            raise self._full(unplaced, sized)

    def _copy_to(self, i: int, src_root: str, paths: list[str]) -> None:
        fd, listing = tempfile.mkstemp(prefix="files-", dir=self._tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(p + "\n" for p in paths))
            params = {"srcFs": src_root, "dstFs": self._member_fs(i), "_filter": {"FilesFromRaw": [listing]},
                      "_config": {"NoCheckDest": True}}  # fmt: skip
            self._rc("sync/copy", params)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(listing)

    def _drop_old(self, leaving: dict[str, int]) -> None:
        """The old copies of files placed anew elsewhere (they outgrew their member)."""
        for p, i in leaving.items():
            with contextlib.suppress(RcError):
                self._rc("operations/deletefile", {"fs": self._member_fs(i), "remote": p})

    def _put_op(
        self,
        path: str | bytes,
        data: bytes = b"",
        mode: int = 0o644,
        mtime_ns: int | None = None,
        trash_root: str | bytes | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        """One small file, to its member (kept version first, with trash_root)."""
        rel = self._rel(path)
        if trash_root is not None:
            item = self._stat(rel)
            if item is not None:
                self.keep(rel, item, self._rel(trash_root))
                self._versioned.add(rel)
        by_member, leaving, unplaced = self._placed([(rel, len(data))])
        if unplaced:
            raise self._full(unplaced, {rel: len(data)})
        (i,) = by_member
        local, _ = self._source_file(data, mtime_ns, None)
        try:
            self._copy("/", local.lstrip("/"), self._member_fs(i), rel)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(local)
        self._drop_old(leaving)
        self.uploaded_files += 1
        self.uploaded_bytes += len(data)
        return {"size": len(data)}

    def keep_versions(self, rels: list[str], trash_root: str) -> None:
        super().keep_versions(rels, trash_root)
        self._versioned.update(rels)  # the old bytes stay on their member, as a version

    def _remove_op(self, paths: list[str | bytes]) -> dict[str, Any]:
        got = super()._remove_op(paths)
        self._forget(self._rel(p) for p in paths)
        return got

    def _trash_op(self, paths: list[str | bytes], trash_root: str | bytes) -> dict[str, Any]:
        got = super()._trash_op(paths, trash_root)
        self._forget((self._rel(p) for p in paths), freed=False)  # kept as versions, on their members
        return got

    def _move_op(self, old: str | bytes, new: str | bytes, trash_root: str | bytes | None = None) -> dict[str, Any]:
        got = super()._move_op(old, new, trash_root)
        if got.get("moved"):  # the union moved it on its member: so does the count
            o, n = self._rel(old), self._rel(new)
            for p in [p for p in self._holders if p == o or p.startswith(o + "/")]:
                self._holders[n + p[len(o) :]] = self._holders.pop(p)
        return got

    def _forget(self, rels: Iterable[str], freed: bool = True) -> None:
        """Removed paths (and what lay below them): no member holds them now; deleted, their
        bytes are free again on it."""
        for rel in rels:
            for p in [p for p in self._holders if p == rel or p.startswith(rel + "/")]:
                i, size = self._holders.pop(p)
                if freed and self._rooms is not None:
                    room = self._rooms[i]
                    room.used -= size
                    if room.free is not None:
                        room.free += size

    # ------------------------------------------------------------------ bisync's install, placed

    def _place(self, local: str, rel: str, before: Callable[[], None], replace: bool = False) -> bool:
        """bisync's install: the upload (staged, or straight to rel) goes to the member placement
        chooses; the move into place then happens through the union, on that member."""
        size = os.lstat(local).st_size
        by_member, leaving, unplaced = self._placed([(rel, size)])
        if unplaced:
            raise OpError(errno.ENOSPC, str(self._full(unplaced, {rel: size})))
        (i,) = by_member
        self._uploading.member = i
        try:
            placed = super()._place(local, rel, before, replace)
        finally:
            self._uploading.member = None
        if placed:
            self._drop_old(leaving)
        return placed

    def _upload(self, local: str, rel: str, fresh: bool = True) -> None:
        i = getattr(self._uploading, "member", None)
        if i is None:
            super()._upload(local, rel, fresh)
        else:
            self._copy("/", local.lstrip("/"), self._member_fs(i), rel, fresh)
