"""The embedded records store: one SQLite file (WAL mode; one writer at a time)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from bystroq.errors import BystroqError, StoreUnavailable
from bystroq.records.batchstore import Store
from bystroq.records.database import Connection, Cursor

BUSY_TIMEOUT_S = 30.0
# What SQLite says when the database cannot take a write now but may later.
_UNAVAILABLE = ("disk is full", "disk i/o error", "unable to open", "locked", "readonly",
                "read-only")


def sqlite_store(url: str, path: str, read_only: bool = False) -> Store:
    """Records in a SQLite file (`sqlite:///path/to/bystroq.db`, or `sqlite://:memory:`)."""
    backend = SQLiteBackend(url, path, read_only)
    return Store(url, backend, backend.first, read_only)


class SQLiteBackend:
    """How the store talks to SQLite: a file opened in WAL mode, one writer at a time."""

    placeholder = "?"
    locks_records = False
    array_insert = False

    def __init__(self, url: str, path: str, read_only: bool = False) -> None:
        self.url = url
        self._path = path
        self._read_only = read_only
        if read_only and path != ":memory:" and not Path(path).is_file():
            raise BystroqError(f"{url}: no records database at {Path(path).resolve()}; "
                               f"nothing was recorded there (check --records or `records:`)")
        if not read_only and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BystroqError(f"{url}: cannot create the folder for the records "
                                   f"database: {exc.strerror or exc}") from None
        try:
            self.first: Connection = self._open()
        except sqlite3.Error as exc:
            raise BystroqError(f"{url}: cannot open the records database: {exc}") from None

    def _open(self) -> _Transactional:
        if self._read_only:
            return _Transactional(_open_read_only(self._path), begin="BEGIN")
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return _Transactional(conn)

    def connect(self) -> Connection:
        try:
            return self._open()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.url}: cannot open the records database: {exc}"
                                   ) from None

    def classify(self, exc: BaseException) -> type[BaseException] | None:
        if isinstance(exc, sqlite3.OperationalError) and any(
                text in str(exc).lower() for text in _UNAVAILABLE):
            return StoreUnavailable
        return None

    def lock_records(self, cur: Cursor, keys: Sequence[int]) -> None:
        pass  # BEGIN IMMEDIATE (below) already holds the write lock

    def lock_schema(self, cur: Cursor) -> None:
        pass  # as above


def _open_read_only(path: str) -> sqlite3.Connection:
    """Open without writing anything; on a read-only file system (where WAL's shared
    memory file cannot be made) read the file as immutable."""
    uri = Path(path).resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                           isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                           check_same_thread=False)


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

    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self._conn = conn
        self._begin = begin

    def cursor(self) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.execute(self._begin)
        return cur

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()
