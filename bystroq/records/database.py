"""The records database: one connection, transactions, reconnecting, and migrations.

A Backend (bystroq.records.sqlite, .postgres), held by the store, supplies a way to
connect, its placeholder, how to classify its errors and how to lock records; everything
else is here. The schema is created and migrated on open (table `bystroq_schema` holds the
version); a read-only store only checks it.

Failures: a database that cannot be reached (connection lost, server restarted, disk full)
raises StoreUnavailable; the connection is opened again on a later call, no sooner than a
capped backoff allows, and each change of state is logged once. A transaction that
deadlocks, or meets a serialization failure, raises Conflict and is run again from the
start by `retry_conflicts`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ParamSpec, Protocol, TypeVar

import structlog

from bystroq.errors import BystroqError, StoreUnavailable
from bystroq.records.schema import MIGRATIONS, SCHEMA_VERSION

_S = TypeVar("_S", bound="Database")
_P = ParamSpec("_P")
_T = TypeVar("_T")

# How often a transaction that deadlocked (or met a serialization failure) is run again.
CONFLICT_RETRIES = 8
# Reconnecting to a store that went away: first wait, and the cap of the doubling waits.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0


class Cursor(Protocol):
    """The DB-API cursor the stores use (sqlite3's and psycopg's)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: Any, params: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """A DB-API connection: cursors inside explicit transactions."""

    def cursor(self) -> Cursor: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What one kind of database supplies (bystroq.records.sqlite, .postgres)."""

    placeholder: str  # how a query marks a parameter: "?" or "%s"
    # Whether lock_records takes locks (SQLite's transactions lock the whole database, so
    # its lock keys are not even computed), and whether many rows go in as one array a
    # column (PostgreSQL) rather than one VALUES list (SQLite).
    locks_records: bool
    array_insert: bool

    def connect(self) -> Connection:
        """A new connection (after the last one was lost); StoreUnavailable if none."""
        ...

    def classify(self, exc: BaseException) -> type[BaseException] | None:
        """StoreUnavailable or Conflict for a database error of that kind, else None."""
        ...

    def lock_records(self, cur: Cursor, keys: Sequence[int]) -> None:
        """Lock records (by `lock_key`) until the transaction ends, in the order given."""
        ...

    def lock_schema(self, cur: Cursor) -> None:
        """Keep two processes from migrating at once."""
        ...


class Conflict(Exception):
    """A transaction lost a race it cannot win by waiting (deadlock, serialization)."""


def retry_conflicts(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run a store method that is one transaction again when it loses a race."""

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return method(*args, **kwargs)
            except Conflict:
                time.sleep(0.001 * 2**attempt)
        return method(*args, **kwargs)

    return run


class Database:
    """A connection to the records database, with transactions, reconnecting and the
    schema's migrations (see the module docstring); the stores build on it."""

    url: str

    def __init__(self, url: str, backend: Backend, conn: Connection,
                 read_only: bool = False) -> None:
        self.url = url
        self.backend = backend
        self.read_only = read_only
        self._conn: Connection | None = conn
        self._lock = threading.RLock()
        self._log = structlog.get_logger("bystroq.records")
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff_s = RECONNECT_FIRST_S
        if read_only:
            self._check_schema()
        else:
            self._migrate()

    # -- plumbing ----------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        mark = self.backend.placeholder
        return text if mark == "?" else text.replace("?", mark)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        Raises StoreUnavailable when the database cannot be reached, Conflict when the
        transaction lost a race (see `retry_conflicts`)."""
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.cursor()
            except Exception as exc:
                self._failed(exc)
                raise
            try:
                yield cur
                conn.commit()
            except BaseException as exc:
                # The failure below says why; a lost connection is reopened later.
                with suppress(Exception):
                    conn.rollback()
                self._failed(exc)
                raise
            finally:
                with suppress(Exception):
                    cur.close()
        if self._down_since is not None:
            self._log.warning("records store reachable again", store=self.url,
                              down_s=round(time.monotonic() - self._down_since, 1))
            self._down_since, self._backoff_s = None, RECONNECT_FIRST_S

    def _connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        now = time.monotonic()
        if now < self._retry_at:
            raise StoreUnavailable(f"{self.url}: unavailable; trying again in "
                                   f"{self._retry_at - now:.1f} s")
        try:
            self._conn = self.backend.connect()
        except StoreUnavailable:
            self._wait_longer()
            raise
        return self._conn

    def _failed(self, exc: BaseException) -> None:
        """Turn a database error into StoreUnavailable or Conflict (raised from here)."""
        kind = self.backend.classify(exc)
        if kind is Conflict:
            raise Conflict(str(exc)) from exc
        if kind is StoreUnavailable:
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._log.error("records store unavailable", store=self.url,
                                reason=_first_line(exc))
            conn, self._conn = self._conn, None
            if conn is not None:
                with suppress(Exception):
                    conn.close()
            self._wait_longer()
            raise StoreUnavailable(f"{self.url}: {_first_line(exc)}") from exc

    def available_in(self) -> float:
        """Seconds until the store will try to reach its database again (0: now)."""
        if self._conn is not None:
            return 0.0
        return max(0.0, self._retry_at - time.monotonic())

    def _wait_longer(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_S)

    def _execute(self, cur: Cursor, text: str, params: Sequence[object] = ()) -> Cursor:
        cur.execute(self._sql(text), tuple(params))
        return cur

    def _migrate(self) -> None:
        with self.transaction() as cur:
            self.backend.lock_schema(cur)
            self._execute(cur, "CREATE TABLE IF NOT EXISTS bystroq_schema (version INTEGER)")
            row = self._execute(cur, "SELECT version FROM bystroq_schema").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise BystroqError(
                    f"{self.url}: records schema version {version} is newer than this "
                    f"bystroq ({SCHEMA_VERSION}); upgrade bystroq"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    self._execute(cur, statement)
            if row is None:
                self._execute(cur, "INSERT INTO bystroq_schema (version) VALUES (?)",
                              (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                self._execute(cur, "UPDATE bystroq_schema SET version = ?", (SCHEMA_VERSION,))

    def _check_schema(self) -> None:
        """For a read-only store: the schema must be there (nothing is created)."""
        try:
            with self.transaction() as cur:
                row = self._execute(cur, "SELECT version FROM bystroq_schema").fetchone()
        except StoreUnavailable:
            raise
        except Exception:
            raise BystroqError(f"{self.url}: no bystroq records there yet (nothing was "
                               f"recorded; check --records or `records:`)") from None
        if row is None or row[0] > SCHEMA_VERSION:
            raise BystroqError(f"{self.url}: records schema version "
                               f"{None if row is None else row[0]} is not one this bystroq "
                               f"reads ({SCHEMA_VERSION}); upgrade bystroq")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
