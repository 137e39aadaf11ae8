"""Change records and coalesce(): many raw filesystem events -> a short batch safe to replay.

A batch is applied to a target that matched the source when the window opened. The output is
structural operations first (moves and deletes, in event order), then writes (in first-seen
order). Writes copy the source's state *at execution time*, so they are only correct after
every move that could carry their path: a write that precedes a move of its path is carried
along to the new name and replayed after the move.

The coalescer also tracks what the target cannot have yet (paths created in the window, and
everything below a directory that appeared in the window), so that a move or delete of such a
path becomes a write of the destination, or nothing, instead of an operation the target cannot
perform. All bookkeeping is per path touched in this window; nothing outlives a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

WRITE = "write"
DELETE = "delete"
MOVE = "move"
RESCAN = "rescan"


@dataclass(frozen=True)
class Change:
    """One change under the watched root; paths are relative, `/`-separated, "" for the root.

    kind "write": the path was created or changed (content, mode, owner, times); copy it.
      is_dir=True means a directory appeared here (mkdir or moved in): send its whole subtree,
      the target has nothing below it. A write with is_dir=False may still name a directory
      (a mode change): copy that directory's own metadata only.
      created=True means the path did not exist just before this event (inotify IN_CREATE), so
      a later delete in the same window cancels out.
    kind "delete": remove the path (and its subtree). Deleting what the target lacks is a no-op.
    kind "move": rename `old` to `path` on the target (replacing what is at `path`).
    kind "rescan": events were lost; compare the whole tree (path "") again.
    """

    kind: str
    path: str
    is_dir: bool = False
    old: str | None = None
    created: bool = False


def _parents(path: str) -> Iterator[str]:
    """Strict ancestors of a relative path, root ("") first."""
    if not path:
        return
    yield ""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _overlap(p: str, q: str) -> bool:
    """Whether one path is the other or lies below it."""
    return p == q or not p or not q or q.startswith(p + "/") or p.startswith(q + "/")


# What the target holds at a path once the pending operations are applied.
_PRESENT, _MAYBE, _ABSENT = 0, 1, 2
# Marks on a path: an operation put it there (with its subtree), or made it as a parent of that;
# or a dropped move left a write there, so the target holds at most an older thing at the path.
_PLACED, _EXISTS, _STALE = 1, 2, 3


class _Node:
    """One path in the window: a pending write (seq >= 0) and/or what operations left there."""

    __slots__ = ("created", "is_dir", "kids", "mark", "seq")

    def __init__(self) -> None:
        self.kids: dict[str, _Node] = {}
        self.seq = -1
        self.is_dir = False
        self.created = False
        self.mark = 0

    def walk(self, path: str) -> Iterator[tuple[str, _Node]]:
        yield path, self
        for name, kid in self.kids.items():
            yield from kid.walk(f"{path}/{name}" if path else name)


class _Batch:
    """The state of one coalescing pass; see coalesce() for the rules it implements."""

    def __init__(self, transient: bool = False) -> None:
        self.transient = transient
        self.root = _Node()
        self.seq = 0
        self.ops: list[Change | None] = []
        self.last_touch: dict[str, int] = {}  # path -> index of the last op naming it
        self.touch_below: dict[str, int] = {}  # path -> index of the last op naming a path below it
        self.moved_to: dict[str, int] = {}  # path -> index of the last move onto it
        self.deletes_below: dict[str, list[int]] = {}  # dir -> indexes of deletes below it
        self.made_dirs: set[int] = set()  # moves whose parents did not exist on the target

    # -- the tree of pending writes ------------------------------------------------------
    def find(self, path: str, create: bool = False) -> _Node | None:
        node = self.root
        if not path:
            return node
        for name in path.split("/"):
            kid = node.kids.get(name)
            if kid is None:
                if not create:
                    return None
                kid = node.kids[name] = _Node()
            node = kid
        return node

    def detach(self, path: str) -> _Node | None:
        parent, _, name = path.rpartition("/")
        up = self.find(parent)
        return None if up is None else up.kids.pop(name, None)

    def attach(self, path: str, node: _Node) -> None:
        parent, _, name = path.rpartition("/")
        up = self.find(parent, create=True)
        assert up is not None
        up.kids[name] = node

    def state(self, path: str) -> int:
        """Whether the target has `path` after the pending ops: present, maybe, or surely absent."""
        node, below = self.root, _PRESENT
        parts = path.split("/") if path else []
        for i, name in enumerate(parts):
            kid = node.kids.get(name)
            if kid is None:
                return below
            node = kid
            if node.mark == _PLACED:
                here, below = _PRESENT, _PRESENT
            elif node.mark == _STALE:
                here, below = (_ABSENT if node.created else _MAYBE), _ABSENT
            else:
                here = below
                if node.seq >= 0:
                    if node.created:
                        here = _ABSENT
                    elif node.is_dir and here == _PRESENT:
                        here = _MAYBE  # moved in: may have replaced an empty directory
                    if node.is_dir:
                        below = _ABSENT
                if node.mark == _EXISTS:
                    here = _PRESENT
            if i == len(parts) - 1:
                return here
        return _PRESENT

    # -- the list of structural operations ----------------------------------------------
    def touched_after(self, path: str, idx: int) -> bool:
        if self.touch_below.get(path, -1) > idx or self.last_touch.get(path, -1) > idx:
            return True
        return any(self.last_touch.get(p, -1) > idx for p in _parents(path))

    def append(self, op: Change) -> int:
        idx = len(self.ops)
        self.ops.append(op)
        for p in (op.path, op.old) if op.old is not None else (op.path,):
            self.last_touch[p] = idx
            for up in _parents(p):
                self.touch_below[up] = idx
        if op.kind == MOVE:
            self.moved_to[op.path] = idx
        else:
            for up in _parents(op.path):
                self.deletes_below.setdefault(up, []).append(idx)
        return idx

    # -- one event at a time ------------------------------------------------------------
    def write(self, c: Change) -> None:
        node = self.find(c.path, create=True)
        assert node is not None
        if node.seq < 0:
            node.seq, self.seq = self.seq, self.seq + 1
            node.created = c.created
        node.is_dir = node.is_dir or c.is_dir

    def delete(self, c: Change) -> None:
        state = self.state(c.path)
        self.detach(c.path)  # pending writes at and below the path are moot
        if state == _ABSENT:
            self._parent_changed(c.path)
            if self.transient:  # made and gone in this window: said, for the target to judge
                self.append(Change(DELETE, c.path, c.is_dir, created=True))
            return  # created in this window: the target never had it
        for j in self.deletes_below.pop(c.path, ()):
            op = self.ops[j]
            if op is not None and not self.touched_after(op.path, j):
                self.ops[j] = None  # the delete of this directory covers it
        self.append(c)

    def move(self, c: Change) -> None:
        old, new = c.old, c.path
        assert old is not None
        if old == new:
            return
        state = self.state(old)
        made = self.state(new.rpartition("/")[0]) != _PRESENT  # the executor creates the parent
        self.detach(new)  # what was at the destination is replaced
        node = self.detach(old) or _Node()
        self.attach(new, node)
        if state != _PRESENT:
            # The target lacks the source of this move (or may lack it): send the result instead.
            for _, n in node.walk(new):
                n.mark = 0
            if node.seq < 0:
                node.seq, self.seq = self.seq, self.seq + 1
            node.is_dir = node.is_dir or c.is_dir
            node.created = False  # the destination may have existed and been replaced
            node.mark = _STALE
            if state == _MAYBE:
                self.append(Change(DELETE, old, c.is_dir))
            else:
                self._parent_changed(old)
                if self.transient:  # as for a delete: a transfer meanwhile may have copied it
                    self.append(Change(DELETE, old, c.is_dir, created=True))
            return
        node.mark = _PLACED
        up = self.root
        for name in new.split("/")[:-1]:
            up = up.kids[name]
            if up.mark == 0:
                up.mark = _EXISTS
        if not self.chain(old, new, c.is_dir, made):
            idx = self.append(c)
            if made:
                self.made_dirs.add(idx)

    def _parent_changed(self, path: str) -> None:
        """An entry made and gone again in this window leaves no op, but its directory's mtime
        changed: a write of the directory (not new) gives the target's its mode and mtime again.
        The root's are the full pass's."""
        parent = path.rpartition("/")[0]
        if parent:
            self.write(Change(WRITE, parent, False))

    def chain(self, a: str, b: str, is_dir: bool, made: bool) -> bool:
        """x->a then a->b becomes x->b (plus a delete of a, which the first move may have
        replaced on the target), when nothing between the two moves involved x, a or b."""
        i = self.moved_to.get(a)
        if i is None or i in self.made_dirs:
            return False
        first = self.ops[i]
        if first is None or first.kind != MOVE or first.path != a or first.old is None:
            return False
        x = first.old
        if x != b and _overlap(x, b):
            return False
        if any(self.touched_after(p, i) for p in (x, a, b)):
            return False
        self.ops[i] = None
        if x != b:
            idx = self.append(Change(MOVE, b, is_dir, old=x))
            if made:
                self.made_dirs.add(idx)
        self.append(Change(DELETE, a, is_dir))
        return True

    def result(self) -> list[Change]:
        out = [op for op in self.ops if op is not None]
        writes: list[tuple[int, Change]] = []
        stack: list[tuple[str, _Node]] = [("", self.root)]
        while stack:
            path, node = stack.pop()
            if node.seq >= 0:
                writes.append((node.seq, Change(WRITE, path, node.is_dir, created=node.created)))
                if node.is_dir:
                    continue  # the subtree is sent whole
            for name, kid in node.kids.items():
                stack.append((f"{path}/{name}" if path else name, kid))
        writes.sort(key=lambda w: w[0])
        return out + [w for _, w in writes]


def _bad_move(c: Change) -> bool:
    """A move the kernel cannot report (root, or into itself): distrust the whole window."""
    return not c.old or (c.old != c.path and _overlap(c.old, c.path))


def coalesce(changes: Iterable[Change], *, transient: bool = False) -> list[Change]:
    """Merge a window's changes into the fewest that bring the target to the same end state.

    transient=True (the watcher's windows) keeps a path made and deleted in the window as a
    delete with created=True instead of nothing: a transfer running meanwhile may have copied
    it, which only the target's worker knows (see `for_target`).

    Output order: moves and deletes in event order, then writes in first-seen order.

    ======================================  ==============================================
    input (in order)                        output
    ======================================  ==============================================
    write a, write a                        write a
    write a (created), delete a             (nothing); transient: delete a (created=True)
    write d/a (created), delete d/a         write d (its mtime changed)
    write a, delete a                       delete a
    delete d (dir) after writes below d     delete d (the writes below d are dropped)
    delete d/x, ..., delete d               delete d (when nothing in between touched d/x)
    write d (is_dir), write d/x             write d (is_dir; the subtree is sent whole)
    write a, move a->b                      move a->b, write b
    move a->b, write b                      move a->b, write b
    move a->b, write b/x                    move a->b, write b/x
    write a (created), move a->b            write b (created=False: b may have existed)
    write d/a (created), move d/a->b        write b, write d (d's mtime changed)
    write d (is_dir), move d/x->y           write d (is_dir), write y (x never reached target)
    move a->b, move b->c                    move a->c, delete b (b may have been replaced)
    move a->b, move b->a                    delete b (plus write a if a was written)
    write b, move a->b                      move a->b (the old b is replaced)
    rescan anywhere                         rescan "" (alone: a full pass covers everything)
    ======================================  ==============================================

    The executor must: create missing parent directories for a move's destination; treat a
    delete of a missing path as done; and copy a write's path as it is at execution time.
    A delete of a path the target may not have is kept rather than dropped: an extra no-op
    delete is cheap, a dropped one leaves a stale file on the target.
    """
    batch = _Batch(transient)
    for c in changes:
        if c.kind == RESCAN or (c.kind != WRITE and not c.path) or (c.kind == MOVE and _bad_move(c)):
            return [Change(RESCAN, "")]
        if c.kind == WRITE:
            batch.write(c)
        elif c.kind == DELETE:
            batch.delete(c)
        elif c.kind == MOVE:
            batch.move(c)
        else:
            raise ValueError(f"unknown change kind {c.kind!r}")
    return batch.result()


def for_target(changes: Iterable[Change], copied_meanwhile: bool) -> list[Change]:
    """A watcher's batch as one target's worker must queue it.

    copied_meanwhile: a transfer to this target ran (or ended less than a watcher window ago)
    since these paths could have been made, and may have copied them. Then nothing is new to
    the target (a later delete must not cancel out against a creation) and a path made and gone
    again is deleted there; otherwise the target never had it, and its delete is dropped.
    """
    out: list[Change] = []
    for c in changes:
        if c.kind == DELETE and c.created:
            if copied_meanwhile:
                out.append(Change(DELETE, c.path, c.is_dir))
        elif c.created and copied_meanwhile:
            out.append(Change(c.kind, c.path, c.is_dir, c.old))
        else:
            out.append(c)
    return out
