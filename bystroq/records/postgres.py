"""Records in PostgreSQL (psycopg 3): the same schema, for many producers and consumers."""

from __future__ import annotations

from typing import Any

from bystroq.errors import BystroqError
from bystroq.records.batchstore import Store

# Any constant will do: it keeps two processes from migrating the schema at once.
MIGRATION_LOCK = 0x6279_7374


class PostgresStore(Store):
    """Records in PostgreSQL (`postgresql://user@host:5432/db`)."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise BystroqError(
                f"{url}: PostgreSQL records need psycopg 3: pip install 'bystroq[postgres]'"
            ) from None
        try:
            conn = psycopg.connect(url, autocommit=False)
        except psycopg.OperationalError as exc:
            raise BystroqError(f"{_safe(url)}: cannot connect: {exc}".strip()) from None
        super().__init__(_safe(url), conn)

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
