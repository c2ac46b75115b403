"""`Idempotency-Key` on POST: the same key with the same body returns the first response;
with another body, 422; while the first is still running, 409. Keys live in the records
store (table bystroq_idempotency) for at least `idempotency_ttl_s` (24 h by default)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec

from bystroq.records import feeds
from bystroq.records.sql import SQLStore
from bystroq.web.problems import Problem

MAX_KEY_LENGTH = 255


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


def run_once(
    store: SQLStore, key: str, scope: str, print_: str, ttl_s: float,
    run: Callable[[], StoredResponse],
) -> tuple[StoredResponse, bool]:
    """The response of the request that first used `key` in `scope`, and whether it is a
    replay. `run` is called only by that first request; an exception it raises (nothing
    was done) forgets the key, so the request may be sent again."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable "
                      "characters")
    stored_key = f"{scope}\n{key}"
    claimed, row = feeds.claim_key(store, stored_key, print_, ttl_s)
    if not claimed:
        if row.fingerprint != print_:
            raise Problem(422, "this Idempotency-Key was used with another request body; "
                          "use a new key for a new request")
        if row.state != "done" or row.response is None:
            raise Problem(409, "a request with this Idempotency-Key is still in progress; "
                          "retry later")
        return _DECODE.decode(row.response), True
    try:
        response = run()
    except BaseException:
        feeds.drop_key(store, stored_key)
        raise
    feeds.finish_key(store, stored_key, response.status, _ENCODE(response).decode())
    return response, False
