"""JSON responses of public views, encoded by msgspec."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import Response

from bystroq.records.views import View

JSON = "application/json"
_ENCODE = msgspec.json.Encoder().encode


def encode(view: View | list[Any]) -> bytes:
    return _ENCODE(view)


def json_response(view: View | list[Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODE(view), status_code=status, media_type=JSON, headers=headers)
