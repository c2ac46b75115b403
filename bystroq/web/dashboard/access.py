"""Who is looking at the dashboard, and what they may do.

Without tokens (a loopback server) everyone may do everything and no login is asked.
With tokens, a page needs a login (the session cookie, bystroq.web.session) or a bearer
header; a `read` token sees no action buttons, and every action refuses it anyway (403).
Every action is a POST, checked for the same origin as the API checks it (the cookie is
also SameSite=Strict), and recorded in the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from fastapi import Request
from starlette.exceptions import HTTPException

from bystroq.records import activity
from bystroq.web.auth import check_same_origin, presented_token
from bystroq.web.problems import Problem
from bystroq.web.services import Services

MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True)
class Viewer:
    """The person (token) behind a request."""

    name: str
    can_write: bool
    logged_in: bool  # False without tokens: nothing to log out of


def viewer_of(services: Services) -> Callable[[Request], Awaitable[Viewer]]:
    """The dependency of every page: the viewer, or a redirect to the login form (a
    coroutine, as the API's: it never waits, and a plain function would take a thread)."""
    tokens = services.settings.tokens

    async def viewer(request: Request) -> Viewer:
        if not tokens:
            return Viewer("local", True, False)
        token = presented_token(request, tokens)
        if token is None:
            login = request.url_for("dashboard_login").path
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(303, headers={"Location": f"{login}?next={quote(target)}"})
        return Viewer(token.name, token.access == "write", True)

    return viewer


def writer_of(services: Services) -> Callable[[Request], Awaitable[Viewer]]:
    """The dependency of every action: a same-origin request with a write token."""
    tokens = services.settings.tokens
    allowed = frozenset(o.rstrip("/") for o in services.settings.cors_origins)

    async def writer(request: Request) -> Viewer:
        check_same_origin(request, allowed)
        if not tokens:
            return Viewer("local", True, False)
        token = presented_token(request, tokens)
        if token is None:
            raise Problem(401, "log in first (the dashboard's login form), or send "
                          "`Authorization: Bearer TOKEN`")
        if token.access != "write":
            raise Problem(403, f"token {token.name} is read-only; this action needs a "
                          "write token")
        return Viewer(token.name, True, True)

    return writer


async def read_form(request: Request) -> dict[str, str]:
    """An url-encoded form body (the last value of each field)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Problem(413, f"the form is over {MAX_FORM_BYTES} bytes")
    return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))


def audit(services: Services, who: Viewer, action: str, target: str, detail: str,
          outcome: str) -> None:
    """Keep one line of what was done, by whom, in the records store."""
    activity.record_action(services.store, activity.Action(
        at=time.time(), who=who.name, action=action, target=target, detail=detail,
        outcome=outcome[:500]))
