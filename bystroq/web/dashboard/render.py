"""Rendering the dashboard's pages: one Jinja2 environment (templates shipped in the
package), the filters the templates use, and the context every page gets."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from bystroq.messages import record_key
from bystroq.web.dashboard.access import Viewer

STATES = ("queued", "unknown", "started", "retrying", "completed", "failed", "cancelled")


def utc(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def pct(value: float) -> str:
    """A percentage to one decimal, as the page's script writes it (100, 33.3)."""
    return f"{round(value, 1):g}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def key(submission_id: str | int) -> str:
    """The record key of a submissionID (what the pages' URLs and data attributes use)."""
    return record_key(submission_id)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bystroq.web.dashboard", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.filters.update(utc=utc, duration=duration, pretty=pretty, key=key, pct=pct)
    return env


class Pages:
    """The environment, built once per router, and `render` for a page."""

    def __init__(self) -> None:
        self.env = environment()

    def render(self, request: Request, template: str, viewer: Viewer, title: str,
               status: int = 200, **context: Any) -> HTMLResponse:
        root = request.url_for("dashboard_overview").path

        def url(route: str, query: dict[str, Any] | None = None, /, **params: Any) -> str:
            path = request.url_for(route, **{k: str(v) for k, v in params.items()}).path
            cleaned = {k: v for k, v in (query or {}).items() if v not in (None, "")}
            return path + ("?" + urlencode(cleaned) if cleaned else "")

        html = self.env.get_template(template).render(
            request=request, viewer=viewer, title=title, url=url, root=root,
            api=root.rstrip("/") + "/v1/", note=request.query_params.get("note"),
            states=STATES, now=time.time(), **context)
        return HTMLResponse(html, status_code=status,
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": CSP,
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "same-origin"})


    def missing(self, request: Request, viewer: Viewer, what: str, back: str,
                ) -> HTMLResponse:
        """A 404 page saying what was not found, with a link back to its list."""
        return self.render(request, "missing.html", viewer, "Not found", status=404,
                           what=what, back=request.url_for(back).path)


# Our own script and stylesheet only; no inline script; forms post to this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
