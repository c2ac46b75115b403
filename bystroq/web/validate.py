"""A job body checked against its category's Struct, with the field that failed named."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from bystroq.errors import DecodeError
from bystroq.messages import JobDecoder, json_value
from bystroq.web.problems import FieldError, Problem

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")


def check_body(decoder: JobDecoder[Any] | None, body: bytes) -> str | int:
    """The body's submissionID once it passed the Struct (or, when the category's
    listener is not importable here, is a JSON object with one); else a 422 Problem
    naming the field and what was expected."""
    if decoder is not None:
        try:
            job = msgspec.json.decode(body, type=decoder.struct)
        except msgspec.ValidationError as exc:
            raise _invalid(str(exc), decoder.struct.__name__) from None
        except msgspec.DecodeError as exc:
            raise Problem(422, f"the body is not valid JSON: {exc}",
                          [FieldError("body", "expected a JSON object")]) from None
        submission_id = job.submissionID
        assert isinstance(submission_id, str | int)
        return submission_id
    try:
        data = json_value(body)
    except DecodeError as exc:
        raise Problem(422, str(exc), [FieldError("body", "expected a JSON object")]) from None
    if not isinstance(data, dict):
        raise Problem(422, "expected a JSON object", [FieldError("body", "a JSON object")])
    submission_id = data.get("submissionID")
    if isinstance(submission_id, bool) or not isinstance(submission_id, str | int):
        raise Problem(422, "field `submissionID`: expected a string or an integer",
                      [FieldError("body.submissionID", "Expected `str | int`")])
    return submission_id


def _invalid(message: str, struct: str) -> Problem:
    match = _AT.match(message)
    assert match is not None
    what, path = match["what"], (match["path"] or "").lstrip(".")
    missing = _MISSING.match(what)
    if missing:
        path = f"{path}.{missing['name']}" if path else missing["name"]
    field = f"body.{path}" if path else "body"
    return Problem(422, f"{field}: {what} (job type {struct})", [FieldError(field, what)])
