"""Fixtures: real beanstalkd servers on free ports, unique tubes per test."""

from __future__ import annotations

import itertools
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import greenstalk
import httpx
import msgspec
import pytest
from click.testing import CliRunner

from bystroq.cli import main
from bystroq.config import LoadedConfig
from bystroq.records import Store, open_store
from bystroq.testing import Beanstalkd, config_for, config_text

_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run last: Playwright's sync API keeps an event loop running in
    the main thread for the rest of the session, where `asyncio.run` then refuses."""
    items.sort(key=lambda item: "test_web_browser.py::" in item.nodeid)


@pytest.fixture(scope="session")
def server() -> Iterator[Beanstalkd]:
    """One beanstalkd for the whole session; tests keep apart by tube names."""
    proc = Beanstalkd().start()
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def second_server() -> Iterator[Beanstalkd]:
    proc = Beanstalkd().start()
    yield proc
    proc.kill()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_counter)}{uuid.uuid4().hex[:6]}-"


@pytest.fixture
def config(server: Beanstalkd, prefix: str) -> LoadedConfig:
    return config_for([server.address], prefix=prefix)


@pytest.fixture
def two_configs(server: Beanstalkd, second_server: Beanstalkd, prefix: str) -> LoadedConfig:
    return config_for([server.address, second_server.address], prefix=prefix)


class Tubes:
    """Direct access to a server's tubes, for assertions."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.address = (host, int(port))

    def client(self, watch: str = "default", use: str = "default") -> greenstalk.Client[bytes]:
        return greenstalk.Client(self.address, encoding=None, watch=watch, use=use)

    def events(self, tube: str) -> list[dict[str, Any]]:
        """Every ready event in `tube`, consumed, in order."""
        out: list[dict[str, Any]] = []
        with self.client(watch=tube) as client:
            while True:
                try:
                    job = client.reserve(0)
                except greenstalk.TimedOutError:
                    return out
                out.append(msgspec.json.decode(job.body))
                client.delete(job)

    def counts(self, tube: str) -> dict[str, int]:
        with self.client() as client:
            try:
                stats = client.stats_tube(tube)
            except greenstalk.NotFoundError:
                return {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
        return {k: int(stats[f"current-jobs-{k}"])  # type: ignore[literal-required]
                for k in ("ready", "reserved", "delayed", "buried")}


@pytest.fixture
def tubes(server: Beanstalkd) -> Tubes:
    return Tubes(server.address)


@pytest.fixture
def web_config(server: Beanstalkd, prefix: str, records_url: str) -> LoadedConfig:
    """This test's tubes and records store, for the web side."""
    return config_for([server.address], prefix=prefix, records=records_url)


@pytest.fixture
def api_url(web_config: LoadedConfig) -> Iterator[str]:
    """`create_app(web_config)` served by a real uvicorn on a free port."""
    from bystroq.web import create_app
    from tests.web_server import serving

    with serving(create_app(web_config)) as url:
        yield url


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    """A client of `api_url`."""
    from tests.web_server import client

    with client(api_url) as c:
        yield c


def total_puts(server: Beanstalkd, tube: str) -> int:
    """Jobs ever put on `tube` of `server` (0 when the tube was never used)."""
    try:
        return int(Tubes(server.address).client().stats_tube(tube)["total-jobs"])
    except greenstalk.NotFoundError:
        return 0


@pytest.fixture
def fresh_servers() -> Iterator[list[Beanstalkd]]:
    """Two servers of this test's own (one may be stopped with SIGSTOP: it is woken
    before it is stopped)."""
    servers = [Beanstalkd().start(), Beanstalkd().start()]
    yield servers
    for server in servers:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.kill()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


POSTGRES_URL = os.environ.get("BYSTROQ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_schema_url(schema: str) -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards; skips if PostgreSQL is
    absent (but fails in CI, where it must run)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not available at {POSTGRES_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A records store URL of each backend, empty for each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
    else:
        yield from _postgres_schema_url(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(records_url: str) -> Iterator[Store]:
    with open_store(records_url) as opened:
        yield opened


Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def records_cli(server: Beanstalkd, prefix: str, tmp_path: Path, records_url: str) -> Invoke:
    """`bystroq ARGS...` through click's runner, on this test's tubes and records store:
    returns (exit code, stdout, stderr)."""
    config_file = tmp_path / "records-cli.yml"
    config_file.write_text(config_text([server.address], prefix=prefix, records=records_url))
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, ["--config", str(config_file), *args])
        return result.exit_code, result.stdout, result.stderr

    return invoke
