"""The bisync state: the last synced entry of every path on each side, in one SQLite file per job.

Why SQLite: a crash mid-pass must leave a state the next pass can trust, row by row.  The
state is a snapshot (the whole map, marshalled: loading 20,000 paths takes milliseconds, where
rows would take a tenth of a second) plus a journal of rows, one per finished action, folded
into the snapshot in one transaction now and then.  Journal rows are written only after their
action succeeded; WAL with synchronous=NORMAL survives a killed
process (not a power cut, where the worst case is a stale row, which the next pass reads as
"changed on both sides" and settles by comparing content).  A state that cannot be read is
set aside and the pass runs as a first run, which never deletes.
"""

from __future__ import annotations

import marshal
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from tether.bisync.plan import Raw
from tether.errors import TetherError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, path BLOB NOT NULL, e1 BLOB, e2 BLOB
);
CREATE TABLE IF NOT EXISTS conflicts (
    copy BLOB PRIMARY KEY, path BLOB NOT NULL, at REAL NOT NULL, note TEXT NOT NULL
) WITHOUT ROWID;
"""
COMPACT_AT = 2000  # journal rows that trigger folding the journal into the snapshot


def _pack(e: Raw | None) -> bytes | None:
    return None if e is None else marshal.dumps(tuple(e))


class State:
    def __init__(self, path: Path | None) -> None:
        """path None: an empty state in memory (a dry run of a first pass writes nothing anywhere)."""
        self.path = path if path is not None else Path(":memory:")
        self.reset_note: str | None = None
        self._map: dict[bytes, tuple[Raw | None, Raw | None]] | None = None
        self._journal = 0
        path = self.path
        try:
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open()
        except (OSError, sqlite3.OperationalError) as e:  # cannot open or busy: not corrupt, never set aside
            raise TetherError(f"cannot open the state {path}: {e}", "check that the state dir is writable") from None
        except sqlite3.DatabaseError as e:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            for extra in ("-wal", "-shm"):
                path.with_name(path.name + extra).unlink(missing_ok=True)
            self.reset_note = f"state {path} could not be read ({e}); set aside as {aside.name}, running as a first run"
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM journal").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()
        self._map = None

    def start_over(self, why: str, *, keep_file: bool = False) -> None:
        """Begin again from an empty state (the next pass is a first run: nothing is deleted),
        the old one set aside beside it, never removed; `keep_file` (a dry run): only in memory."""
        self.db.close()
        self._map, self._journal = None, 0
        if keep_file or str(self.path) == ":memory:":
            self.path = Path(":memory:")
            self.reset_note = f"{why}; a real pass sets this state aside and runs as a first run"
        else:
            aside = self.path.with_name(f"{self.path.name}.other-pair-{time.strftime('%Y%m%d-%H%M%S')}")
            self.db = sqlite3.connect(self.path, isolation_level=None)  # fold the WAL in before the move
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()
            self.path.rename(aside)
            for extra in ("-wal", "-shm"):
                self.path.with_name(self.path.name + extra).unlink(missing_ok=True)
            self.reset_note = f"{why}; set aside as {aside.name}, running as a first run (nothing is deleted)"
        self.db = self._open()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def is_empty(self) -> bool:
        """Nothing recorded yet (cheap: does not load the map)."""
        row = self.db.execute("SELECT EXISTS (SELECT 1 FROM snapshot) OR EXISTS (SELECT 1 FROM journal)").fetchone()
        return not row[0]

    def load(self) -> dict[bytes, tuple[Raw | None, Raw | None]]:
        """path -> (entry on path1, entry on path2): the snapshot with the journal applied."""
        if self._map is not None:
            return self._map
        row = self.db.execute("SELECT data FROM snapshot WHERE id = 1").fetchone()
        m: dict[bytes, tuple[Raw | None, Raw | None]] = marshal.loads(row[0]) if row else {}
        loads = marshal.loads
        n = 0
        for path, e1, e2 in self.db.execute("SELECT path, e1, e2 FROM journal ORDER BY seq"):
            n += 1
            if e1 is None and e2 is None:
                m.pop(path, None)
            else:
                m[path] = (None if e1 is None else loads(e1), None if e2 is None else loads(e2))
        self._map, self._journal = m, n
        return m

    def put(self, rows: Iterable[tuple[bytes, Raw | None, Raw | None]]) -> None:
        """Record paths as synced (both entries None: forget the path); one transaction."""
        m = self.load()
        batch = []
        for path, e1, e2 in rows:
            batch.append((path, _pack(e1), _pack(e2)))
            if e1 is None and e2 is None:
                m.pop(path, None)
            else:
                m[path] = (None if e1 is None else tuple(e1), None if e2 is None else tuple(e2))
        if not batch:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO journal (path, e1, e2) VALUES (?, ?, ?)", batch)
        self._journal += len(batch)
        if self._journal >= COMPACT_AT:
            self.compact()

    def compact(self) -> None:
        """Fold the journal into the snapshot, atomically: a crash keeps one or the other."""
        if not self._journal or self._map is None:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?)", (marshal.dumps(self._map),))
            self.db.execute("DELETE FROM journal")
        self._journal = 0

    def add_conflict(self, path: bytes, copy: bytes, note: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?, ?)", (copy, path, time.time(), note))

    def conflicts(self) -> list[tuple[bytes, bytes, float, str]]:
        rows = self.db.execute("SELECT path, copy, at, note FROM conflicts ORDER BY at, path")
        return [(bytes(p), bytes(c), float(at), str(n)) for p, c, at, n in rows]

    def drop_conflicts(self, copies: Iterable[bytes]) -> None:
        self.db.executemany("DELETE FROM conflicts WHERE copy = ?", [(c,) for c in copies])
