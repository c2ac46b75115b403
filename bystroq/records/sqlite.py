"""The embedded records store: one SQLite file (WAL mode; one writer at a time)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bystroq.errors import BystroqError
from bystroq.records.batchstore import Store

BUSY_TIMEOUT_S = 30.0


class SQLiteStore(Store):
    """Records in a SQLite file (`sqlite:///path/to/bystroq.db`, or `sqlite://:memory:`)."""

    placeholder = "?"

    def __init__(self, url: str, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise BystroqError(f"{url}: cannot open the records database: {exc}") from None
        super().__init__(url, _Transactional(conn))

    def _lock_schema(self, cur: Any) -> None:
        pass  # BEGIN IMMEDIATE (below) already holds the write lock


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL (readers never block the writer). Switching needs the database to
    itself and does not wait on the busy timeout, so wait here while another opens it."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _Transactional:
    """sqlite3 in autocommit mode, with explicit `BEGIN IMMEDIATE` per transaction, so a
    read-modify-write never meets another writer half way (no SQLITE_BUSY on upgrade)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        return cur

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()
