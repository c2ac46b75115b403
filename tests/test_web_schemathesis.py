"""Schemathesis over the OpenAPI document, against a real uvicorn: bounded examples of
every operation (but the endless event stream), and no answer is a 500."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from bystroq.testing import Beanstalkd, config_for
from bystroq.web import create_app
from tests.web_server import serving


@pytest.fixture(scope="module")
def base_url(server: Beanstalkd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("schemathesis")
    config = config_for([server.address], prefix=f"st{uuid.uuid4().hex[:6]}-",
                        records=f"sqlite:///{folder / 'r.db'}")
    with serving(create_app(config)) as url:
        yield url


def test_no_answer_is_a_500(base_url: str) -> None:
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    checked = []
    statuses: list[tuple[str, int]] = []
    for operation in operations:
        if operation.path == "/v1/events":  # endless by design
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = case.call(base_url=base_url, timeout=20)
            statuses.append((case.path, response.status_code))
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} "
                f"{response.text[:300]}")
            if response.status_code >= 400:
                assert response.headers["content-type"] == ["application/problem+json"], (
                    case.method, case.formatted_path, response.status_code)

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/submissions/{category}" in checked and len(checked) >= 20
    assert len(statuses) > 100 and {200, 404, 422} <= {s for _, s in statuses}
