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
import marshal
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tether.agent_remote import VERSIONS, OpError, version_stamp
from tether.errors import TetherError
from tether.pools.definition import Pool
from tether.pools.placement import Room, place
from tether.pools.union import member_fs, probe, union_fs
from tether.transport.agent import AgentError
from tether.transport.rclone_agent import RcError, _join, _parent, _version_name
from tether.transport.rclone_target import RcloneTarget, _mtime


class PoolFull(TetherError):
    """Files that no member of the pool can take: nothing of them was sent."""


# A member that goes away must fail its calls soon, not after rclone's minute-long retries: the
# pass then opens the pool again without it (see open) and the other members go on.
FAIL_FAST = {"LowLevelRetries": 2, "ConnectTimeout": "5s", "Timeout": "30s"}


class PoolTarget(RcloneTarget):
    pool: Pool  # set by open(), before any write
    absent: frozenset[str] = frozenset()  # the members that could not be reached when it opened
    index: Path | None = None  # where which member holds which path is kept between runs

    def __init__(self, remote: str, root: str) -> None:
        super().__init__(remote, root)
        self._rooms: list[Room] | None = None
        # path under the root -> (member, size, mtime_ns) of the copy the pool holds
        self._holders: dict[str, tuple[int, int, int]] = {}
        self._versioned: set[str] = set()  # paths whose old version was kept (it stays on its member)
        self._uploading = threading.local()  # the member a bisync install's upload goes to (see _place)

    @classmethod
    def open(
        cls, pool: Pool, root: str, index: Path | None, *, create: bool, version_later: bool = False
    ) -> PoolTarget:
        """The pool's union without the members that cannot be reached now (rclone would refuse
        it whole); their files are known from the index, so nothing of theirs is sent again."""
        down = probe(pool)
        if len(down) == len(pool.members):
            raise AgentError(f"pool {pool.name}: no member can be reached", errno.EHOSTDOWN,
                             f"`tether pool status {pool.name}` shows each member")  # fmt: skip
        agent = cls.connect(union_fs(pool, without=down), root, create, version_later=version_later)
        agent.pool, agent.absent, agent.index = pool, down, index
        agent.info["host"] = f"pool-{pool.name}"  # what a conflict copy made on this side is named after
        agent.name = agent.remote_name = f"pool:{pool.name}" + (f"/{root}" if root else "")  # in messages
        return agent

    def degraded(self) -> str | None:
        if not self.absent:
            return None
        return f"pool {self.pool.name}: {', '.join(sorted(self.absent))} cannot be reached; its files wait"

    def capabilities_note(self) -> str:
        note = (
            f"pool {self.pool.name} ({len(self.pool.members)} members, {self.pool.policy}): "
            + super().capabilities_note()
        )
        if self.absent:
            note += f"; DOWN: {', '.join(sorted(self.absent))}: its files wait, new files go to the others"
        return note

    def _rc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method.startswith(("operations/", "sync/")):
            params = {**params, "_config": {**FAIL_FAST, **params.get("_config", {})}}
        return super()._rc(method, params)

    # ------------------------------------------------------------------ what each member holds

    def _member_fs(self, i: int) -> str:
        return member_fs(self.pool.members[i], self.info["root"])

    def _known(self) -> dict[str, tuple[str, int, int]]:
        """The index of the last run: path -> (member name, size, mtime_ns)."""
        if self.index is None:
            return {}
        try:
            with self.index.open("rb") as f:
                doc = marshal.load(f)
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _keep_index(self) -> None:
        """Written whole and renamed into place; what absent members hold comes from the last one
        (rooms() took it in), what was sent elsewhere meanwhile is what this run placed."""
        if self.index is None or self._rooms is None:
            return
        names = [m.name for m in self.pool.members]
        doc = {p: (names[i], size, mtime) for p, (i, size, mtime) in self._holders.items()}
        with contextlib.suppress(OSError):
            self.index.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.index.with_name(f".{self.index.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                marshal.dump(doc, f)
            os.replace(tmp, self.index)

    def rooms(self) -> list[Room]:
        """Each member's use (every byte tether put there, kept versions too: they fill it as
        much) and free space, and which member holds each path under the root; asked of every
        member at once, on the first write. A member that is down keeps what the index says it
        holds. A path found on two members (sent elsewhere while its member was away) keeps the
        copy the index names, else the newest; the other is kept as a version on its member."""
        if self._rooms is not None:
            return self._rooms
        names = [m.name for m in self.pool.members]

        def ask(i: int) -> tuple[Room, list[tuple[str, int, int]]]:
            m = self.pool.members[i]
            if m.name in self.absent:
                return Room(up=False), []
            try:
                size = self._rc("operations/size", {"fs": member_fs(m)})
            except RcError as e:
                if e.errno != errno.ENOENT:  # a member nothing was put on yet is empty, not down
                    return Room(up=False), []
                size = {}
            room = Room(used=int(size.get("bytes", 0) or 0))
            with contextlib.suppress(RcError):
                about = self._rc("operations/about", {"fs": member_fs(m)})
                if isinstance(about.get("free"), int):
                    room.free = int(about["free"])
            opt = {"recurse": True, "filesOnly": True, "noMimeType": True}
            try:
                items = self._rc("operations/list", {"fs": self._member_fs(i), "remote": "", "opt": opt})
            except RcError:
                items = {}
            files = [(str(it["Path"]), int(it["Size"]), _mtime(str(it["ModTime"]))) for it in items.get("list") or []
                     if not str(it["Path"]).startswith(".tether/")]  # fmt: skip
            return room, files

        with concurrent.futures.ThreadPoolExecutor(len(self.pool.members)) as ex:
            got = list(ex.map(ask, range(len(self.pool.members))))
        rooms = [room for room, _ in got]
        known = self._known()
        found: dict[str, list[tuple[int, int, int]]] = {}
        for i, (_room, files) in enumerate(got):
            for path, size, mtime in files:
                found.setdefault(path, []).append((i, size, mtime))
        for path, (name, size, mtime) in known.items():  # what the absent members hold
            if name in self.absent and name in names and path not in found:
                found[path] = [(names.index(name), size, mtime)]
        for path, copies in found.items():
            if len(copies) > 1:
                said = known.get(path)
                keep = next((c for c in copies if said and names[c[0]] == said[0]), max(copies, key=lambda c: c[2]))
                for c in copies:
                    if c is not keep:  # kept as a version on its member: its bytes stay counted there
                        self._stale_aside(c[0], path)
                copies = [keep]
            self._holders[path] = copies[0]
        self._rooms = rooms
        self._keep_index()
        return rooms

    def _stale_aside(self, i: int, path: str) -> None:
        """An older copy of path on member i (the pool holds a newer one elsewhere): moved into
        that member's versions, where `tether versions` finds it (left where it is if it cannot be)."""
        folder, name = _parent(path)
        dest = _join(VERSIONS.decode(), folder, _version_name(name, "replaced", version_stamp().decode(), set()))
        with contextlib.suppress(RcError):
            self._rc("operations/movefile", {"srcFs": self._member_fs(i), "srcRemote": path,
                                             "dstFs": self._member_fs(i), "dstRemote": dest})  # fmt: skip

    def listing(self) -> dict[str, tuple[str, int, int]]:
        """The union's listing, and the files of members that are down as the index knows them:
        they are in the pool, only away, and are not sent again."""
        out = super().listing()
        if self.absent:
            for path, (name, size, mtime) in self._known().items():
                if name in self.absent and path not in out:
                    out[path] = ("f", size, mtime)
                    parent = path.rpartition("/")[0]
                    while parent and parent not in out:
                        out[parent] = ("d", 0, 0)
                        parent = parent.rpartition("/")[0]
        return out

    def close(self) -> None:
        if self._rooms is not None:
            self._keep_index()
        super().close()

    # ------------------------------------------------------------------ writes, placed

    def _placed(
        self, files: Iterable[tuple[str, int]], mtimes: dict[str, int] | None = None
    ) -> tuple[dict[int, list[str]], dict[str, int], list[str]]:
        """(member -> paths to send there, path -> member of an old copy to drop, unplaced)."""
        rooms = self.rooms()
        files = list(files)
        held = {}
        for p, _size in files:
            if p in self._holders:
                i, old, _mtime_ns = self._holders[p]
                held[p] = (i, 0 if p in self._versioned else old)  # a kept version frees nothing
        got = place(files, self.pool.members, rooms, self.pool.policy, held)
        by_member: dict[int, list[str]] = {}
        for p, i in got.where.items():
            by_member.setdefault(i, []).append(p)
        sizes = dict(files)
        for p, i in got.where.items():
            self._holders[p] = (i, sizes[p], (mtimes or {}).get(p, 0))
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
        mtimes: dict[str, int] = {}
        for r in rels:
            try:
                st = os.lstat(os.path.join(src_root, r))
                sized[r], mtimes[r] = st.st_size, st.st_mtime_ns
            except FileNotFoundError:
                sized[r] = 0  # gone since the scan: rclone says so for the pass
        by_member, leaving, unplaced = self._placed(sized.items(), mtimes)
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
        **ignored: Any,
    ) -> dict[str, Any]:
        """One small file, as for any remote, uploaded to the member placement chooses."""
        rel = self._rel(path)
        if trash_root is not None:
            self._versioned.add(rel)  # an old version, if there is one, stays on its member
        by_member, leaving, unplaced = self._placed([(rel, len(data))], {rel: mtime_ns or 0})
        if unplaced:
            raise self._full(unplaced, {rel: len(data)})
        (self._uploading.member,) = by_member
        try:
            got = super()._put_op(path, data, mode, mtime_ns, trash_root, **ignored)
        finally:
            self._uploading.member = None
        self._drop_old(leaving)
        return got

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
                i, size, _mtime_ns = self._holders.pop(p)
                if freed and self._rooms is not None:
                    room = self._rooms[i]
                    room.used -= size
                    if room.free is not None:
                        room.free += size

    # ------------------------------------------------------------------ bisync's install, placed

    def _place(self, local: str, rel: str, before: Callable[[], None], replace: bool = False) -> bool:
        """bisync's install: the upload (staged, or straight to rel) goes to the member placement
        chooses; the move into place then happens through the union, on that member."""
        st = os.lstat(local)
        size = st.st_size
        by_member, leaving, unplaced = self._placed([(rel, size)], {rel: st.st_mtime_ns})
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
