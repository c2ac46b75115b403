"""The router inside a user's own FastAPI app (README "Inside your FastAPI app"), with
AsyncProducer in one of the user's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from bystroq.async_producer import AsyncProducer
from bystroq.config import LoadedConfig
from bystroq.web import WebSettings, create_router
from tests.conftest import Tubes
from tests.web_server import client, serving


def test_router_and_async_producer_in_a_users_app(config: LoadedConfig, tubes: Tubes,
                                                  tmp_path: Path) -> None:
    settings = WebSettings(records_url=f"sqlite:///{tmp_path / 'r.db'}")
    producers: list[AsyncProducer] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncProducer(config) as producer:
            producers.append(producer)
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(create_router(config, settings, health_routes=False),
                       prefix="/jobs")

    @app.post("/annotate/{name}")
    async def annotate(name: str) -> dict[str, object]:
        handle = await producers[0].submit("echo", {"submissionID": name, "message": name})
        return {"queued": handle.job_id}

    with serving(app) as url, client(url) as http:
        assert http.post("/annotate/x1").json()["queued"] > 0
        put = http.post("/jobs/v1/submissions/echo", json={"submissionID": "x2"})
        assert put.status_code == 202
        assert http.get(put.headers["location"]).json()["submission"]["state"] == "queued"
        listed = http.get("/jobs/v1/submissions").json()["items"]
        assert [item["submissionID"] for item in listed] == ["x2"]  # x1 had no recorder
        problem = http.get("/jobs/v1/submissions/nobody")
        assert problem.status_code == 404
        assert problem.headers["content-type"] == "application/problem+json"
        assert http.get("/healthz").status_code == 404  # left out: the app has its own
        assert "/jobs/v1/submissions" in http.get("/openapi.json").json()["paths"]
        # The dashboard comes along, under the same prefix, with links that keep it.
        page = http.get("/jobs/submissions")
        assert page.status_code == 200 and 'href="/jobs/submission?id=x2"' in page.text
        assert 'data-api="/jobs/v1/"' in page.text
        assert 'src="/jobs/static/dashboard.js"' in page.text
        assert http.get("/jobs/static/dashboard.css").status_code == 200
        assert "/jobs/" not in http.get("/openapi.json").json()["paths"]
    assert tubes.counts(config.category("echo").submission)["ready"] == 2
