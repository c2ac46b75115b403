"""The `/v1` API router (FastAPI), over bystroq.ops and the public views.

`create_router(config)` builds it with everything it needs (store, producer, decoders),
opened on first use and closed by the router's lifespan; mount it in any FastAPI app with
`app.include_router(router)`. Errors are problem+json (bystroq.web.problems); auth is
bystroq.web.auth. Endpoints that touch the store or a server run in the thread pool, and
submits go through the submitter's writer thread (bystroq.web.submitter), so the event
loop never waits on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from bystroq.config import LoadedConfig
from bystroq.errors import (
    BystroqError,
    DuplicateSubmission,
    JobTooBig,
    ServersUnavailable,
    SubmitOutcomeUnknown,
    UnknownCategory,
)
from bystroq.messages import key_to_submission_id, record_key
from bystroq.ops.cancel import cancel_submission
from bystroq.ops.retry import retry_submission
from bystroq.producer import Submitted
from bystroq.records.model import STATES, Record
from bystroq.records.views import (
    CancelView,
    SubmittedView,
    submission_view,
    timeline_view,
)
from bystroq.web import batches, health, idempotency, queues, sse, webhooks, workers
from bystroq.web.auth import authorizer
from bystroq.web.bodies import read_body
from bystroq.web.cursor import Filters, submission_page
from bystroq.web.problems import Problem, ProblemRoute, problem_response
from bystroq.web.responses import JSON, json_response
from bystroq.web.schema import ProgressView, SubmissionDetailView, SubmissionPageView
from bystroq.web.services import Services
from bystroq.web.settings import WebSettings
from bystroq.web.validate import check_body

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MAX_PAGE = 500
# Every job; the category's own Struct checks the rest (422 naming the field).
JOB_SCHEMA = {"type": "object", "required": ["submissionID"],
              "properties": {"submissionID": {"type": ["string", "integer"]}},
              "additionalProperties": True}
_ENCODE = msgspec.json.Encoder().encode
StateName = Literal["queued", "unknown", "started", "retrying", "completed", "failed",
                    "cancelled"]
assert set(StateName.__args__) == set(STATES)  # type: ignore[attr-defined]


def create_router(config: LoadedConfig, settings: WebSettings | None = None,
                  *, health_routes: bool = True, dashboard: bool = True,
                  metrics: CollectorRegistry | None = None) -> APIRouter:
    """The API router: `/v1/...`, the dashboard at its root unless `dashboard` is False,
    and `/healthz`, `/readyz` unless `health_routes` is False; `/metrics` over the
    `metrics` registry when given (bystroq.web.metrics). Its lifespan closes the store
    and producer it opened."""
    settings = settings or WebSettings.from_config(config)
    services = Services(config, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(services.close)

    router = APIRouter(route_class=ProblemRoute, lifespan=lifespan)
    if health_routes:
        router.include_router(health.router(services))
    v1 = APIRouter(prefix="/v1", route_class=ProblemRoute,
                   dependencies=[Depends(authorizer(settings))])
    _submissions(v1, services)
    v1.include_router(batches.router(services))
    v1.include_router(queues.router(services))
    v1.include_router(sse.router(services))
    v1.include_router(webhooks.router(services))
    v1.include_router(workers.router(services))
    router.include_router(v1)
    if metrics is not None:
        from bystroq.web.metrics import metrics_router

        router.include_router(metrics_router(services, metrics))
    if dashboard:
        from bystroq.web.dashboard import dashboard_router

        router.include_router(dashboard_router(services))
    return router


def _category(services: Services, name: str) -> str:
    try:
        return services.config.resolve(name).name
    except UnknownCategory as exc:
        raise Problem(404, str(exc)) from None


def _record(services: Services, submission_id: str) -> Record:
    record = services.store.get(submission_id)
    if record is None:
        raise Problem(404, f"no submission {submission_id!r}")
    return record


def _submitted(handle: Submitted, submission_id: str | int | None) -> SubmittedView:
    return SubmittedView(submission_id=submission_id, queue_id=handle.job_id,
                         server=handle.server.name, tube=handle.tube)


def _progress(record: Record, timeline: list[Any]) -> ProgressView:
    total = None
    for entry in reversed(timeline):
        data = entry.body.get("data") if entry.event == "progress" else None
        if isinstance(data, dict) and isinstance(data.get("total"), int) and data["total"] > 0:
            total = data["total"]
            break
    if record.state == "completed" and total is None:
        percent: float | None = 100.0
    else:
        percent = None if total is None else min(100.0, round(
            100.0 * (record.progress + record.skipped) / total, 2))
    return ProgressView(count=record.progress, skipped=record.skipped, total=total,
                        percent=percent)


def _traceback(timeline: list[Any]) -> str | None:
    for entry in reversed(timeline):
        if entry.event == "failed":
            text = entry.body.get("traceback") or entry.body.get("reason")
            return text if isinstance(text, str) else None
    return None


def _submissions(router: APIRouter, services: Services) -> None:
    @router.post("/submissions/{category}", status_code=202, tags=["submissions"],
                 summary="Submit one job of a category",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {"schema": JOB_SCHEMA}}}})
    async def submit(
        category: str, request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        name = _category(services, category)
        limit = services.known_body_limit()
        if limit is None:
            limit = await run_in_threadpool(services.body_limit)
        body = await read_body(request, limit)
        known = services.known_decoder(name)
        if known is None:
            known = await run_in_threadpool(services.decoder, name)
        decoder = known[0]
        submission_id = check_body(decoder, body)

        async def put() -> idempotency.StoredResponse:
            try:
                handle = await services.submitter.submit(name, body, submission_id)
            except JobTooBig as exc:
                raise Problem(413, str(exc)) from None
            except DuplicateSubmission as exc:
                raise Problem(409, str(exc)) from None
            except ServersUnavailable as exc:
                raise Problem(503, str(exc), headers={"Retry-After": "5"}) from None
            except SubmitOutcomeUnknown as exc:  # kept: submitting again could run it twice
                response = problem_response(503, str(exc), request.url.path)
                return idempotency.StoredResponse(503, bytes(response.body).decode(), {
                    "content-type": "application/problem+json"})
            base = request.url.path.rsplit("/", 1)[0]  # .../submissions, wherever mounted
            location = f"{base}/{quote(record_key(submission_id), safe='')}"
            return idempotency.StoredResponse(
                202, _ENCODE(_submitted(handle, submission_id)).decode(),
                {"content-type": JSON, "location": location})

        if idempotency_key is None:
            stored, replayed = await put(), False
        else:
            token = getattr(request.state, "token_name", "-")
            print_ = idempotency.fingerprint(name.encode(), body)
            stored, replayed = await idempotency.run_once(
                lambda: services.store, idempotency_key, f"{token}:{name}", print_,
                services.settings.idempotency_ttl_s, put, services.store_calls.call)
        headers = dict(stored.headers)
        media = headers.pop("content-type", JSON)
        if replayed:
            headers["idempotent-replayed"] = "true"
        return Response(stored.body, status_code=stored.status, media_type=media,
                        headers=headers)

    @router.get("/submissions", tags=["submissions"],
                summary="Submissions by submissionID, filtered, a page at a time")
    def list_submissions(
        state: StateName | None = None, category: str | None = None,
        batch: str | None = None,
        since: Annotated[float | None, Query(description="updated at or after (unix s)")]
        = None,
        until: Annotated[float | None, Query(description="updated before (unix s)")] = None,
        q: Annotated[str | None, Query(max_length=200,
                                       description="text in the submissionID or reason")]
        = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> Response:
        name = None if category is None else _category(services, category)
        records, next_cursor = submission_page(
            services.store, Filters(state=state, category=name, batch=batch, since=since,
                                    until=until, text=q), cursor, limit)
        return json_response(SubmissionPageView(
            items=[submission_view(r) for r in records], next_cursor=next_cursor))

    @router.get("/submissions/{submission_id}", tags=["submissions"],
                summary="A submission, its timeline and progress")
    def get_submission(submission_id: str) -> Response:
        record = _record(services, submission_id)
        timeline = services.store.timeline(submission_id)
        return json_response(SubmissionDetailView(
            submission=submission_view(record),
            timeline=[timeline_view(e) for e in timeline],
            progress=_progress(record, timeline), traceback=_traceback(timeline)))

    @router.post("/submissions/{submission_id}/cancel", tags=["submissions"],
                 summary="Cancel: not started, it never runs; running, its worker stops it")
    def cancel(submission_id: str) -> Response:
        _record(services, submission_id)
        try:
            outcome = cancel_submission(services.store, submission_id)
        except BystroqError as exc:
            raise Problem(409, str(exc)) from None
        return json_response(CancelView(
            submission_id=key_to_submission_id(submission_id),
            result=outcome.result.value, message=outcome.message))

    @router.post("/submissions/{submission_id}/retry", status_code=202, tags=["submissions"],
                 summary="Submit a failed or cancelled submission again")
    def retry(submission_id: str) -> Response:
        _record(services, submission_id)
        try:
            handle = retry_submission(services.config, services.store, submission_id)
        except ServersUnavailable as exc:
            raise Problem(503, str(exc)) from None
        except BystroqError as exc:
            raise Problem(409, str(exc)) from None
        return json_response(_submitted(handle, key_to_submission_id(submission_id)), 202)
