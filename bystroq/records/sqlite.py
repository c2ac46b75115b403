"""The embedded records store: one SQLite file (WAL mode; one writer at a time)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bystroq.records.sql import SQLStore

BUSY_TIMEOUT_S = 30.0


class SQLiteStore(SQLStore):
    """Records in a SQLite file (`sqlite:///path/to/bystroq.db`, or `sqlite://:memory:`)."""

    placeholder = "?"

    def __init__(self, url: str, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        super().__init__(url, _Transactional(conn))

    def _lock_schema(self, cur: Any) -> None:
        pass  # BEGIN IMMEDIATE (below) already holds the write lock


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
