"""Records in PostgreSQL (psycopg 3): the same schema, for many producers and consumers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bystroq.errors import BystroqError, StoreUnavailable
from bystroq.records.batchstore import Store
from bystroq.records.database import Conflict, Connection, Cursor

# Any constant will do: it keeps two processes from migrating the schema at once.
MIGRATION_LOCK = 0x6279_7374
CONNECT_TIMEOUT_S = 5


def postgres_store(url: str, read_only: bool = False) -> Store:
    """Records in PostgreSQL (`postgresql://user@host:5432/db`)."""
    backend = PostgresBackend(url)
    return Store(backend.url, backend, backend.first, read_only)


class PostgresBackend:
    """How the store talks to PostgreSQL: psycopg 3, transaction-scoped advisory locks."""

    placeholder = "%s"
    locks_records = True
    array_insert = True

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise BystroqError(
                f"{url}: PostgreSQL records need psycopg 3: pip install 'bystroq[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._dsn = url
        safe = redact(url)
        reserved = sorted(set(_password(url)) & set("@/?#"))
        if reserved:
            raise BystroqError(
                f"{safe}: the password holds {', '.join(map(repr, reserved))}, which a URL "
                f"reserves; percent-encode it (@ as %40, / as %2F, ? as %3F, # as %23)")
        self.url = safe
        try:
            self.first = self._open()
        except psycopg.OperationalError as exc:
            raise BystroqError(f"{safe}: cannot connect: {_one_line(exc, url)}") from None
        except psycopg.ProgrammingError as exc:  # a URL psycopg cannot parse
            raise BystroqError(f"{safe}: not a valid PostgreSQL URL "
                               f"(postgresql://user:password@host:5432/db): "
                               f"{_one_line(exc, url)}") from None

    def _open(self) -> Connection:
        conn: Connection = self._psycopg.connect(self._dsn, autocommit=False,
                                                 connect_timeout=CONNECT_TIMEOUT_S)
        return conn

    def connect(self) -> Connection:
        try:
            return self._open()
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.url}: cannot connect: "
                                   f"{_one_line(exc, self._dsn)}") from None

    def classify(self, exc: BaseException) -> type[BaseException] | None:
        errors = self._psycopg.errors
        if isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure):
            return Conflict
        if isinstance(exc, self._psycopg.OperationalError | self._psycopg.InterfaceError):
            return StoreUnavailable
        return None

    def lock_records(self, cur: Cursor, keys: Sequence[int]) -> None:
        if keys:  # sorted by the caller: two writers always lock in the same order
            cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) "
                        "WITH ORDINALITY AS t(k, n) ORDER BY n", (list(keys),))

    def lock_schema(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if "@" not in rest.split("/", 1)[0] and "@" not in rest:
        return url
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def _one_line(exc: BaseException, url: str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact_text(" ".join(lines) or type(exc).__name__, url)


def _password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return ""
    credentials = url.split("://", 1)[1].rsplit("@", 1)[0]
    return credentials.split(":", 1)[1] if ":" in credentials else ""


def redact_text(text: str, url: str) -> str:
    """`text` (a driver's message) with the password from `url`, and any piece of it a
    parser may have split off, removed."""
    password = _password(url)
    pieces = [password, *re.split(r"[@:/?#]", password)] if password else []
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3 or (piece and piece == password):
            text = text.replace(piece, "***")
    return re.sub(r"password=\S+", "password=***", text)
