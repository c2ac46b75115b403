"""Who may call the API: bearer tokens (read or write) and a same-origin check.

Without tokens the API is open, which `bystroq serve` allows on a loopback address only.
With tokens, every `/v1` request needs `Authorization: Bearer TOKEN`; a `read` token may
only use GET and HEAD. A state-changing request sent by a browser from another site is
refused whatever its token (the browser says so in `Sec-Fetch-Site`, or in an `Origin`
that is not this host), unless its origin is one of `cors_origins`. The dashboard's
session cookie (bystroq.web.session) stands in for the header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import Request

from bystroq.web.problems import Problem
from bystroq.web.session import COOKIE, match_bearer, session_token
from bystroq.web.settings import Token, WebSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authorizer(settings: WebSettings) -> Callable[[Request], Awaitable[Token | None]]:
    """The dependency that checks a request: the token it used (None when open). A
    coroutine, though it never waits: FastAPI would run a plain function in a thread."""
    tokens = settings.tokens
    allowed_origins = frozenset(o.rstrip("/") for o in settings.cors_origins)

    async def authorize(request: Request) -> Token | None:
        unsafe = request.method not in SAFE_METHODS
        if unsafe:
            check_same_origin(request, allowed_origins)
        if not tokens:
            return None
        token = presented_token(request, tokens)
        if token is None:
            raise Problem(401, "a bearer token is required: `Authorization: Bearer TOKEN`",
                          headers={"WWW-Authenticate": 'Bearer realm="bystroq"'})
        if unsafe and token.access != "write":
            raise Problem(403, f"token {token.name} is read-only; this request changes "
                          "state and needs a write token")
        request.state.token_name = token.name
        return token

    return authorize


def presented_token(request: Request, tokens: tuple[Token, ...]) -> Token | None:
    """The token of the request's bearer header, else of its dashboard session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        return match_bearer(header, tokens)
    cookie = request.cookies.get(COOKIE)
    return None if cookie is None else session_token(cookie, tokens)


def check_same_origin(request: Request, allowed: frozenset[str]) -> None:
    """Refuse a state-changing request a browser sent from another site."""
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") in allowed:
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Problem(403, f"cross-site request refused (Sec-Fetch-Site: {site}); "
                      "add the origin to `web: cors_origins` to allow it")
    if origin is not None and origin != "null" and _host(origin) != request.headers.get(
            "host", "").lower():
        raise Problem(403, f"cross-origin request refused (Origin: {origin}); add it to "
                      "`web: cors_origins` to allow it")
    if origin == "null":
        raise Problem(403, "request from an opaque origin (Origin: null) refused")


def _host(origin: str) -> str:
    return urlsplit(origin).netloc.lower()
