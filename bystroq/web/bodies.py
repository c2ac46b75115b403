"""Reading request bodies with a cap, without holding more than the cap in memory."""

from __future__ import annotations

from fastapi import Request

from bystroq.web.problems import Problem


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"the body is {declared} bytes, over the limit of {limit} bytes; "
                      "pass large data by reference")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"the body is over the limit of {limit} bytes; pass large "
                          "data by reference")
        chunks.append(chunk)
    return b"".join(chunks)
