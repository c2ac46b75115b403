"""The dashboard's pages that read: overview, submissions, a submission, batches, a batch,
the audit log. Every handler runs in the thread pool (they touch the store and servers)."""

# Annotations are evaluated at definition (no `from __future__ import annotations`):
# FastAPI reads the handlers' annotations, which name aliases local to `routes`.

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from bystroq.errors import UnknownCategory
from bystroq.ops.batches import batch_status
from bystroq.ops.waiting import why_waiting
from bystroq.ops.workers import list_workers
from bystroq.records import activity
from bystroq.records.views import submission_view, timeline_view
from bystroq.web.cursor import Filters, submission_page
from bystroq.web.dashboard.access import Viewer, viewer_of
from bystroq.web.dashboard.overview import overview
from bystroq.web.dashboard.render import STATES, Pages
from bystroq.web.problems import ProblemRoute
from bystroq.web.services import Services

PAGE = 50
# The submissions page's "updated within" choices, in seconds.
WITHIN = {"5m": 300, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400}


def routes(services: Services, pages: Pages) -> APIRouter:
    router = APIRouter(route_class=ProblemRoute)
    Who = Annotated[Viewer, Depends(viewer_of(services))]

    @router.get("/", name="dashboard_overview", response_class=HTMLResponse)
    def overview_page(request: Request, who: Who) -> HTMLResponse:
        return pages.render(request, "overview.html", who, "Overview",
                            view=overview(services.config, services.store),
                            workers=list_workers(services.store))

    @router.get("/submissions", name="dashboard_submissions", response_class=HTMLResponse)
    def submissions(
        request: Request, who: Who, q: Annotated[str | None, Query(max_length=200)] = None,
        state: str | None = None, category: str | None = None, batch: str | None = None,
        within: str | None = None, cursor: Annotated[str | None, Query(max_length=2000)]
        = None,
    ) -> HTMLResponse:
        state = state if state in STATES else None
        try:
            name = services.config.resolve(category).name if category else None
        except UnknownCategory:
            name = None
        since = time.time() - WITHIN[within] if within in WITHIN else None
        filters = Filters(state=state, category=name, batch=batch or None, since=since,
                          text=q or None)
        records, next_cursor = submission_page(services.store, filters, cursor, PAGE)
        query = {"q": q, "state": state, "category": name, "batch": batch,
                 "within": within if within in WITHIN else None}
        return pages.render(request, "submissions.html", who, "Submissions",
                            items=[submission_view(r) for r in records],
                            next_cursor=next_cursor, query=query, first=cursor is None,
                            categories=sorted(services.config.config.beanstalkd.tubes),
                            within_choices=list(WITHIN))

    @router.get("/submission", name="dashboard_submission", response_class=HTMLResponse)
    def submission(request: Request, who: Who,
                   id: Annotated[str, Query(max_length=2000)]) -> HTMLResponse:
        record = services.store.get(id)
        if record is None:
            return pages.missing(request, who, f"No submission {id!r} in the records.",
                                 "dashboard_submissions")
        timeline = services.store.timeline(id)
        return pages.render(
            request, "submission.html", who, f"Submission {id}", key=id,
            item=submission_view(record), timeline=[timeline_view(e) for e in timeline],
            waiting=why_waiting(services.config, services.store, record))

    @router.get("/batches", name="dashboard_batches", response_class=HTMLResponse)
    def batches(request: Request, who: Who) -> HTMLResponse:
        store = services.store
        return pages.render(request, "batches.html", who, "Batches",
                            items=[batch_status(store, b.batch_id)
                                   for b in store.list_batches(100)])

    @router.get("/batch", name="dashboard_batch", response_class=HTMLResponse)
    def batch(request: Request, who: Who,
              id: Annotated[str, Query(max_length=500)]) -> HTMLResponse:
        if services.store.get_batch(id) is None:
            return pages.missing(request, who, f"No batch {id!r}.", "dashboard_batches")
        return pages.render(request, "batch.html", who, f"Batch {id}",
                            info=batch_status(services.store, id))

    @router.get("/audit", name="dashboard_audit", response_class=HTMLResponse)
    def audit(request: Request, who: Who, before: float | None = None) -> HTMLResponse:
        items = activity.actions(services.store, before, PAGE)
        return pages.render(request, "audit.html", who, "Audit", items=items,
                            older=items[-1].at if len(items) == PAGE else None)

    return router
