"""Fixtures: real beanstalkd servers on free ports, unique tubes per test."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import greenstalk
import msgspec
import pytest

from bystroq.config import LoadedConfig
from bystroq.testing import Beanstalkd, config_for

_counter = itertools.count()


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

    def events(self, tube: str) -> list[dict[str, object]]:
        """Every ready event in `tube`, consumed, in order."""
        out = []
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
def workdir(tmp_path: Path) -> Path:
    return tmp_path
