"""`/v1/batches`: create a batch from a JSON list of records or an uploaded JSON-lines or
CSV file (checked as the CLI checks them: every record before anything is created), list
them, see how far one got (counts, percent, rate, ETA, first failures), cancel one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from bystroq.config import DEFAULT_PRIORITY
from bystroq.errors import BystroqError, UnknownCategory
from bystroq.ops.batches import BatchStatus, batch_status, cancel_batch, create_batch
from bystroq.records.views import BatchStatusView, batch_view, failure_view
from bystroq.web.bodies import read_body
from bystroq.web.problems import FieldError, Problem, ProblemRoute
from bystroq.web.responses import json_response
from bystroq.web.services import Services

# A batch's file may be far larger than one job; its records are streamed to disk.
MAX_UPLOAD_BYTES = 256 * 2**20


class CreateBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """A batch from a JSON list of records (each one job of the category)."""

    category: str
    records: list[dict[str, Any]]
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5
    error_policy: Literal["continue", "stop"] = "continue"
    shuffle: bool = True
    seed: int | None = None
    max_records: Annotated[int, msgspec.Meta(ge=1)] | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    params_override: bool = False
    priority: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = DEFAULT_PRIORITY


_DECODE_CREATE = msgspec.json.Decoder(CreateBatch)
_ENCODE = msgspec.json.Encoder().encode
# Inlined in the OpenAPI document (CreateBatch refers to no other schema).
_SCHEMA = msgspec.json.schema_components([CreateBatch])[1]["CreateBatch"]


def status_view(status: BatchStatus) -> BatchStatusView:
    return BatchStatusView(batch=batch_view(status.batch), counts=status.counts,
                           done=status.done, percent=status.percent,
                           rate_per_s=status.rate_per_s, eta_s=status.eta_s,
                           failures=[failure_view(r) for r in status.failures])


async def _spool(request: Request, path: Path, limit: int) -> None:
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, f"the file is over the limit of {limit} bytes")
            out.write(chunk)


def router(services: Services) -> APIRouter:
    batches = APIRouter(prefix="/batches", route_class=ProblemRoute, tags=["batches"])
    config = services.config

    def create(category: str, path: Path, **options: Any) -> Response:
        try:
            name = config.resolve(category).name
        except UnknownCategory as exc:
            raise Problem(404, str(exc)) from None
        try:
            created = create_batch(config, services.store, name, path, **options)
        except BystroqError as exc:
            detail = str(exc).replace(str(path.parent) + "/", "")
            raise Problem(422, detail, [FieldError("records", detail)]) from None
        view = status_view(batch_status(services.store, created.batch_id))
        return json_response(view, 201,
                             {"location": f"/v1/batches/{created.batch_id}"})

    @batches.post("", status_code=201, summary="Create a batch from a JSON list of records",
                  openapi_extra={"requestBody": {"required": True, "content": {
                      "application/json": {"schema": _SCHEMA}}}})
    async def create_from_json(request: Request) -> Response:
        body = await read_body(request, MAX_UPLOAD_BYTES)
        try:
            spec = _DECODE_CREATE.decode(body)
        except msgspec.ValidationError as exc:
            raise Problem(422, str(exc), [FieldError("body", str(exc))]) from None
        except msgspec.DecodeError as exc:
            raise Problem(422, f"the body is not valid JSON: {exc}") from None

        def run() -> Response:
            with tempfile.TemporaryDirectory(prefix="bystroq-batch-") as folder:
                path = Path(folder) / "records.jsonl"
                with path.open("wb") as out:
                    for record in spec.records:
                        out.write(_ENCODE(record) + b"\n")
                return create(spec.category, path, shuffle=spec.shuffle, seed=spec.seed,
                              max_records=spec.max_records, concurrency=spec.concurrency,
                              error_policy=spec.error_policy, params=spec.params,
                              params_override=spec.params_override, priority=spec.priority)

        return await run_in_threadpool(run)

    @batches.post("/{category}/upload", status_code=201,
                  summary="Create a batch from an uploaded JSON-lines or CSV file (the body)",
                  openapi_extra={"requestBody": {"required": True, "content": {
                      "application/x-ndjson": {"schema": {"type": "string"}},
                      "text/csv": {"schema": {"type": "string"}}}}})
    async def upload(
        category: str, request: Request,
        format: Annotated[Literal["jsonl", "csv"] | None,
                          Query(description="default: from Content-Type")] = None,
        concurrency: Annotated[int, Query(ge=1, le=100_000)] = 5,
        error_policy: Annotated[Literal["continue", "stop"], Query(alias="errorPolicy")]
        = "continue",
        shuffle: bool = True, seed: int | None = None,
        max_records: Annotated[int | None, Query(ge=1, alias="maxRecords")] = None,
        priority: Annotated[int, Query(ge=0, le=2**32 - 1)] = DEFAULT_PRIORITY,
    ) -> Response:
        kind = format or ("csv" if "csv" in request.headers.get("content-type", "")
                          else "jsonl")
        with tempfile.TemporaryDirectory(prefix="bystroq-batch-") as folder:
            path = Path(folder) / f"records.{kind}"
            await _spool(request, path, MAX_UPLOAD_BYTES)
            return await run_in_threadpool(
                create, category, path, shuffle=shuffle, seed=seed, max_records=max_records,
                concurrency=concurrency, error_policy=error_policy, priority=priority)

    @batches.get("", summary="Batches, newest first")
    def list_batches(limit: Annotated[int, Query(ge=1, le=500)] = 20) -> Response:
        store = services.store
        return json_response([status_view(batch_status(store, b.batch_id))
                              for b in store.list_batches(limit)])

    @batches.get("/{batch_id}", summary="How far a batch got")
    def get_batch(batch_id: str) -> Response:
        if services.store.get_batch(batch_id) is None:
            raise Problem(404, f"no batch {batch_id!r}")
        return json_response(status_view(batch_status(services.store, batch_id)))

    @batches.post("/{batch_id}/cancel", summary="No new jobs; queued ones deleted; "
                  "running ones stopped by their workers")
    def cancel(batch_id: str) -> Response:
        if services.store.get_batch(batch_id) is None:
            raise Problem(404, f"no batch {batch_id!r}")
        try:
            cancel_batch(services.store, batch_id)
        except BystroqError as exc:
            raise Problem(409, str(exc)) from None
        return json_response(status_view(batch_status(services.store, batch_id)))

    return batches

