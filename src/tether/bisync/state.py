"""The bisync state: the last synced entry of every path on each side, in one SQLite file per job.

Why SQLite: a crash mid-pass must leave a state the next pass can trust, row by row.  Rows are
written only after their action succeeded; WAL with synchronous=NORMAL survives a killed
process (not a power cut, where the worst case is a stale row, which the next pass reads as
"changed on both sides" and settles by comparing content).  A state that cannot be read is
set aside and the pass runs as a first run, which never deletes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from tether.bisync.plan import Entry, Synced

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS synced (
    path BLOB PRIMARY KEY,
    t1 TEXT, s1 INTEGER, m1 INTEGER, md1 INTEGER, i1 INTEGER, l1 BLOB,
    t2 TEXT, s2 INTEGER, m2 INTEGER, md2 INTEGER, i2 INTEGER, l2 BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
    copy BLOB PRIMARY KEY, path BLOB NOT NULL, at REAL NOT NULL, note TEXT NOT NULL
) WITHOUT ROWID;
"""


def _cols(e: Entry | None) -> tuple[object, ...]:
    if e is None:
        return (None, None, None, None, None, None)
    return (e.type, e.size, e.mtime, e.mode, e.ino, e.link)


def _entry(row: tuple[object, ...]) -> Entry | None:
    if row[0] is None:
        return None
    t, s, m, md, i, lk = row
    return Entry(str(t), int(s), int(m), int(md), int(i), bytes(lk) if lk is not None else None)  # type: ignore[call-overload]


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reset_note: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open()
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
            db.execute("SELECT count(*) FROM synced").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def load_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM synced").fetchone()[0])

    def load(self) -> dict[bytes, Synced]:
        out: dict[bytes, Synced] = {}
        for row in self.db.execute("SELECT * FROM synced"):
            out[bytes(row[0])] = Synced(_entry(row[1:7]), _entry(row[7:13]))
        return out

    def put(self, rows: Iterable[tuple[bytes, Entry | None, Entry | None]]) -> None:
        """Record paths as synced (both entries None: forget the path); one transaction."""
        ups, dels = [], []
        for path, e1, e2 in rows:
            if e1 is None and e2 is None:
                dels.append((path,))
            else:
                ups.append((path, *_cols(e1), *_cols(e2)))
        with self.db:
            self.db.execute("BEGIN")
            if ups:
                self.db.executemany(f"INSERT OR REPLACE INTO synced VALUES ({','.join('?' * 13)})", ups)
            if dels:
                self.db.executemany("DELETE FROM synced WHERE path = ?", dels)

    def add_conflict(self, path: bytes, copy: bytes, note: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?, ?)", (copy, path, time.time(), note))

    def conflicts(self) -> list[tuple[bytes, bytes, float, str]]:
        rows = self.db.execute("SELECT path, copy, at, note FROM conflicts ORDER BY at, path")
        return [(bytes(p), bytes(c), float(at), str(n)) for p, c, at, n in rows]

    def drop_conflicts(self, copies: Iterable[bytes]) -> None:
        self.db.executemany("DELETE FROM conflicts WHERE copy = ?", [(c,) for c in copies])
