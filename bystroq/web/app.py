"""`create_app(config)`: the complete ASGI app `bystroq serve` runs.

Also a factory for uvicorn (`uvicorn --factory bystroq.web.app:create_app`, config from
$BYSTROQ_CONFIG). Nothing is opened until the app serves its first request.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from bystroq import config as config_mod
from bystroq.config import LoadedConfig
from bystroq.web.api import create_router
from bystroq.web.metrics import install_request_metrics
from bystroq.web.problems import install_handlers
from bystroq.web.settings import WebSettings


def create_app(config: LoadedConfig | None = None,
               settings: WebSettings | None = None) -> FastAPI:
    """The HTTP API (`/v1`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`)
    as an app."""
    config = config or config_mod.load()
    settings = settings or WebSettings.from_config(config)
    app = FastAPI(title="bystroq", version="1", openapi_url="/openapi.json",
                  summary="Jobs on Beanstalkd tubes: submissions, batches, queues, events")
    install_handlers(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Last-Event-ID"])
    registry = CollectorRegistry()
    install_request_metrics(app, registry)
    app.include_router(create_router(config, settings, metrics=registry))
    if settings.tokens:
        _declare_bearer(app)
    return app


def _declare_bearer(app: FastAPI) -> None:
    """Say in the OpenAPI document that /v1 takes a bearer token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in doc.get("paths", {}).items():
                if path.startswith("/v1/") or path == "/metrics":
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
