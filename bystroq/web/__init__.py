"""The HTTP side of bystroq (extra `web`: FastAPI, uvicorn).

`create_app(config)` builds a complete ASGI app (`bystroq serve` runs it); `create_router`
builds the `/v1` API router alone, to mount in your own FastAPI app. Everything is built by
those calls: importing this package opens nothing and starts nothing.
"""

from __future__ import annotations

from bystroq.web.api import create_router
from bystroq.web.app import create_app
from bystroq.web.settings import WebSettings

__all__ = ["WebSettings", "create_app", "create_router"]
