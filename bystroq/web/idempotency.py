"""`Idempotency-Key` on POST: the same key with the same body returns the first response;
with another body, 422; while the first is still running, 409. Keys live in the records
store (table bystroq_idempotency) for at least `idempotency_ttl_s` (24 h by default)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool

from bystroq.records import feeds
from bystroq.records.sql import SQLStore
from bystroq.web.problems import Problem

MAX_KEY_LENGTH = 255
# Runs a blocking call off the event loop (the thread pool, or bystroq.web.serial).
Blocking = Callable[[Callable[[], Any]], Awaitable[Any]]


class StoredResponse(msgspec.Struct, frozen=True):
    status: int
    body: str
    headers: dict[str, str]


_DECODE = msgspec.json.Decoder(StoredResponse)
_ENCODE = msgspec.json.Encoder().encode


def fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


async def run_once(
    store: Callable[[], SQLStore], key: str, scope: str, print_: str, ttl_s: float,
    run: Callable[[], Awaitable[StoredResponse]], blocking: Blocking = run_in_threadpool,
) -> tuple[StoredResponse, bool]:
    """The response of the request that first used `key` in `scope`, and whether it is a
    replay. `run` is awaited only by that first request, and its response stored even if
    the request is cancelled meanwhile; an exception it raises (nothing was done) forgets
    the key, so the request may be sent again. `store()` (the records store, opened on
    first use) is used through `blocking`, off the event loop."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable "
                      "characters")
    stored_key = f"{scope}\n{key}"
    claimed, row = await blocking(lambda: feeds.claim_key(store(), stored_key, print_, ttl_s))
    if not claimed:
        if row.fingerprint != print_:
            raise Problem(422, "this Idempotency-Key was used with another request body; "
                          "use a new key for a new request")
        if row.state != "done" or row.response is None:
            raise Problem(409, "a request with this Idempotency-Key is still in progress; "
                          "retry later")
        return _DECODE.decode(row.response), True

    async def first() -> StoredResponse:
        try:
            response = await run()
        except Exception:
            await blocking(lambda: feeds.drop_key(store(), stored_key))
            raise
        await blocking(lambda: feeds.finish_key(
            store(), stored_key, response.status, _ENCODE(response).decode()))
        return response

    return await asyncio.shield(asyncio.ensure_future(first())), False
