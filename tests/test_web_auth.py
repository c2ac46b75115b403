"""Tokens (read-only, read-write), the same-origin check, and `bystroq serve`'s refusal to
bind beyond loopback without tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from bystroq.cli import main
from bystroq.cli.web import is_loopback
from bystroq.config import LoadedConfig
from bystroq.errors import ConfigError
from bystroq.testing import config_for, config_text, free_port, wait_until
from bystroq.web import WebSettings, create_app
from bystroq.web.settings import parse_tokens
from tests.web_server import client, serving

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"


@pytest.fixture
def web_config(server: object, prefix: str, tmp_path: Path) -> LoadedConfig:
    return config_for([server.address], prefix=prefix,  # type: ignore[attr-defined]
                      records=f"sqlite:///{tmp_path / 'r.db'}",
                      extra="")


@pytest.fixture
def base_url(web_config: LoadedConfig) -> Iterator[str]:
    settings = WebSettings.from_config(web_config, environ={
        "BYSTROQ_TOKENS": f"read:{READ},write:{WRITE}"})
    with serving(create_app(web_config, settings)) as url:
        yield url


def test_no_token_is_401(base_url: str) -> None:
    with client(base_url) as http:
        response = http.get("/v1/submissions")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
    with client(base_url, token="wrong-token-0123456789") as http:
        assert http.get("/v1/submissions").status_code == 401


def test_health_needs_no_token(base_url: str) -> None:
    with client(base_url) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200


def test_read_token_reads_but_cannot_post(base_url: str) -> None:
    with client(base_url, token=READ) as http:
        assert http.get("/v1/submissions").status_code == 200
        refused = http.post("/v1/submissions/echo", json={"submissionID": 1})
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        assert READ not in refused.text
    with client(base_url, token=WRITE) as http:
        assert http.post("/v1/submissions/echo", json={"submissionID": 1}).status_code == 202


def test_cross_site_post_is_refused_even_with_a_token(base_url: str) -> None:
    with client(base_url, token=WRITE) as http:
        for headers in ({"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "https://evil.example"},
                        {"Origin": "null"}):
            response = http.post("/v1/submissions/echo", json={"submissionID": 2},
                                 headers=headers)
            assert response.status_code == 403, headers
        host = base_url.removeprefix("http://")
        same = http.post("/v1/submissions/echo", json={"submissionID": 3},
                         headers={"Origin": base_url, "Sec-Fetch-Site": "same-origin",
                                  "Host": host})
        assert same.status_code == 202
        # Reading cross-site is not a state change (and CORS is off: no header comes back).
        read = http.get("/v1/submissions", headers={"Origin": "https://evil.example"})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers


def test_configured_origin_gets_cors(web_config: LoadedConfig) -> None:
    settings = WebSettings(cors_origins=("https://app.example",),
                           records_url=WebSettings.from_config(web_config).records_url)
    with serving(create_app(web_config, settings)) as url, client(url) as http:
        response = http.post("/v1/submissions/echo", json={"submissionID": 4},
                             headers={"Origin": "https://app.example",
                                      "Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 202
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_bad_token_entries_are_named_by_position_not_token() -> None:
    with pytest.raises(ConfigError, match="entry 2") as info:
        parse_tokens(f"read:{READ},admin:{WRITE}")
    assert WRITE not in str(info.value)
    with pytest.raises(ConfigError):
        parse_tokens("write:short")
    assert WRITE not in repr(parse_tokens(f"write:{WRITE}"))


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("example.com")


def test_serve_refuses_a_public_bind_without_tokens(server: object, prefix: str,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(config_text([server.address], prefix=prefix))  # type: ignore[attr-defined]
    result = CliRunner().invoke(main, ["--config", str(path), "serve", "--host", "0.0.0.0"],
                                env={"BYSTROQ_TOKENS": ""})
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without tokens" in result.stderr


def test_serve_runs_the_api(server: object, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(config_text([server.address], prefix=prefix,  # type: ignore[attr-defined]
                                records=f"sqlite:///{tmp_path / 'r.db'}"))
    port = free_port()
    env = {**os.environ, "BYSTROQ_TOKENS": f"write:{WRITE}"}
    proc = subprocess.Popen([sys.executable, "-m", "bystroq", "--config", str(path), "serve",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout_s=30)
        with client(f"http://127.0.0.1:{port}", token=WRITE) as http:
            assert http.post("/v1/submissions/echo",
                             json={"submissionID": "via-serve"}).status_code == 202
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert WRITE not in output


def test_tokens_from_the_config_file(server: object, prefix: str) -> None:
    from bystroq.config import parse

    text = config_text([server.address], prefix=prefix) + (  # type: ignore[attr-defined]
        f"web:\n  tokens:\n    - {{name: backend, token: {WRITE}, access: write}}\n"
        f"    - {{token: {READ}}}\n")
    settings = WebSettings.from_config(parse(text), environ={})
    assert (settings.tokens[0].name, settings.tokens[0].access) == ("backend", "write")
    assert settings.tokens[1].access == "read" and settings.tokens[1].name.startswith("token-")
    assert WRITE not in repr(settings) and READ not in repr(settings)
    with pytest.raises(ConfigError, match=r"web\.tokens"):
        parse(config_text([server.address]) + "web:\n  tokens:\n    - {token: short}\n")  # type: ignore[attr-defined]


def test_openapi_declares_the_bearer_token(base_url: str) -> None:
    with client(base_url) as http:
        doc = http.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/submissions"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]
