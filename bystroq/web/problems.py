"""RFC 9457 problem details: every error of the API is `application/problem+json`.

Endpoints raise `Problem`; `ProblemRoute` (the router's route class) turns it, and FastAPI's
own request validation errors, into a problem response, so the router answers with problems
in any FastAPI app it is mounted in. `install_handlers` does the same for errors raised
outside a route (404 for an unknown path, 405) in an app of ours.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
          422: "Unprocessable Content", 500: "Internal Server Error",
          503: "Service Unavailable"}


class FieldError(msgspec.Struct, frozen=True):
    """One invalid field of a request: where it is and what was expected."""

    field: str
    message: str


class ProblemDocument(msgspec.Struct, frozen=True, omit_defaults=True):
    """The JSON body of an error (RFC 9457), with `errors` for invalid fields."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """An error response: status, a sentence saying what to do, and the invalid fields."""

    def __init__(self, status: int, detail: str, errors: Sequence[FieldError] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.errors = list(errors)
        self.headers = headers or {}


_ENCODE = msgspec.json.Encoder().encode


def problem_response(status: int, detail: str | None, instance: str | None = None,
                     errors: Sequence[FieldError] = (),
                     headers: dict[str, str] | None = None) -> Response:
    doc = ProblemDocument(type="about:blank", title=TITLES.get(status, "Error"),
                          status=status, detail=detail, instance=instance,
                          errors=list(errors) or None)
    return Response(_ENCODE(doc), status_code=status, media_type=MEDIA_TYPE,
                    headers=headers)


def from_exception(request: Request, exc: Exception) -> Response:
    """The problem response for an exception an endpoint raised."""
    path = request.url.path
    if isinstance(exc, Problem):
        return problem_response(exc.status, exc.detail, path, exc.errors, exc.headers)
    if isinstance(exc, RequestValidationError):
        errors = [FieldError(field=_location(e.get("loc", ())), message=str(e.get("msg")))
                  for e in exc.errors()]
        return problem_response(422, "the request is not valid; see `errors`", path, errors)
    if isinstance(exc, StarletteHTTPException):
        return problem_response(exc.status_code, str(exc.detail), path,
                                headers=dict(exc.headers or {}))
    raise exc


def _location(loc: Sequence[Any]) -> str:
    """FastAPI's ("query", "limit") as `query.limit`."""
    return ".".join(str(part) for part in loc)


class ProblemRoute(APIRoute):
    """A route whose errors are problem responses, wherever the router is mounted."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (Problem, RequestValidationError, StarletteHTTPException) as exc:
                return from_exception(request, exc)

        return handle


def install_handlers(app: FastAPI) -> None:
    """Problem responses for errors outside the routes (unknown path, wrong method)."""

    async def handle(request: Request, exc: Exception) -> Response:
        return from_exception(request, exc)

    app.add_exception_handler(StarletteHTTPException, handle)
    app.add_exception_handler(RequestValidationError, handle)
    app.add_exception_handler(Problem, handle)

    async def crash(request: Request, exc: Exception) -> Response:
        return problem_response(500, "internal error; see the server's log",
                                request.url.path)

    app.add_exception_handler(Exception, crash)
