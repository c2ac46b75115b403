"""The dashboard's actions on submissions and batches (cancel, retry), and logging in.

Each action is a form POST (bystroq.web.dashboard.access checks it), recorded in the audit
log, and answered with a redirect back to the page it came from, with a note saying what
happened (so it works without JavaScript).
"""

# Annotations are evaluated at definition (no `from __future__ import annotations`):
# FastAPI reads the handlers' annotations, which name aliases local to `routes`.

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from bystroq.errors import BystroqError
from bystroq.ops.batches import cancel_batch
from bystroq.ops.cancel import cancel_submission
from bystroq.ops.retry import retry_submission
from bystroq.web.auth import check_same_origin
from bystroq.web.dashboard.access import Viewer, audit, read_form, viewer_of, writer_of
from bystroq.web.dashboard.render import Pages
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.services import Services
from bystroq.web.session import COOKIE, SESSION_S, make_session, match_secret


def back(request: Request, name: str, note: str, **query: str) -> RedirectResponse:
    """303 to page `name` with `note` (and `query`) in its query string."""
    path = request.url_for(name).path
    params = "&".join(f"{k}={quote(v, safe='')}" for k, v in {**query, "note": note}.items())
    return RedirectResponse(f"{path}?{params}", status_code=303)


def routes(services: Services, pages: Pages) -> APIRouter:
    router = APIRouter(route_class=ProblemRoute)
    allowed = frozenset(o.rstrip("/") for o in services.settings.cors_origins)
    Who = Annotated[Viewer, Depends(viewer_of(services))]
    Writer = Annotated[Viewer, Depends(writer_of(services))]

    @router.post("/actions/cancel", name="dashboard_cancel")
    async def cancel(request: Request, who: Writer) -> Response:
        key = (await read_form(request)).get("submission", "")

        def run() -> str:
            try:
                outcome = cancel_submission(services.store, key,
                                            reason=f"cancelled by {who.name} (dashboard)")
                note = outcome.message
            except BystroqError as exc:
                note = str(exc)
            audit(services, who, "cancel", key, "", note)
            return note

        return back(request, "dashboard_submission", await run_in_threadpool(run), id=key)

    @router.post("/actions/retry", name="dashboard_retry")
    async def retry(request: Request, who: Writer) -> Response:
        key = (await read_form(request)).get("submission", "")

        def run() -> str:
            try:
                handle = retry_submission(services.config, services.store, key)
                note = f"{key}: submitted again as job {handle.job_id} on {handle.server.name}"
            except BystroqError as exc:
                note = str(exc)
            audit(services, who, "retry", key, "", note)
            return note

        return back(request, "dashboard_submission", await run_in_threadpool(run), id=key)

    @router.post("/actions/batch-cancel", name="dashboard_batch_cancel")
    async def batch_cancel(request: Request, who: Writer) -> Response:
        batch_id = (await read_form(request)).get("batch", "")

        def run() -> str:
            if services.store.get_batch(batch_id) is None:
                raise Problem(404, f"no batch {batch_id!r}")
            try:
                done = cancel_batch(services.store, batch_id)
                note = (f"{batch_id}: cancelled; {done.deleted} queued jobs deleted, "
                        f"{done.requested} running jobs asked to stop")
            except BystroqError as exc:
                note = str(exc)
            audit(services, who, "batch.cancel", batch_id, "", note)
            return note

        return back(request, "dashboard_batch", await run_in_threadpool(run), id=batch_id)

    @router.get("/login", name="dashboard_login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "") -> HTMLResponse:
        return pages.render(request, "login.html", Viewer("", False, False), "Log in",
                            next=next, error=None)

    @router.post("/login", name="dashboard_login_post")
    async def login(request: Request) -> Response:
        check_same_origin(request, allowed)  # no logging a browser in from another site
        form = await read_form(request)
        token = match_secret(form.get("token", "").strip(), services.settings.tokens)
        target = form.get("next", "")
        if not target.startswith("/") or target.startswith("//"):
            target = request.url_for("dashboard_overview").path
        if token is None:
            return pages.render(request, "login.html", Viewer("", False, False), "Log in",
                                status=401, next=target, error="That token is not one "
                                "this server knows; paste a token from `web: tokens`.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, make_session(token), max_age=SESSION_S, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https",
                            path=request.url_for("dashboard_overview").path)
        return response

    @router.post("/logout", name="dashboard_logout")
    def logout(request: Request, who: Who) -> Response:
        root = request.url_for("dashboard_overview").path
        response = RedirectResponse(request.url_for("dashboard_login").path, status_code=303)
        response.delete_cookie(COOKIE, path=root)
        return response

    return router
