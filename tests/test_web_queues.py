"""`/v1/queues`: stats, pause/resume, kick, purge with confirmation, buried jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import greenstalk
import httpx
import pytest

from bystroq.config import LoadedConfig
from bystroq.testing import config_for
from bystroq.web import create_app
from tests.conftest import Tubes
from tests.web_server import client, serving


@pytest.fixture
def web_config(server: object, prefix: str, tmp_path: Path) -> LoadedConfig:
    return config_for([server.address], prefix=prefix,  # type: ignore[attr-defined]
                      records=f"sqlite:///{tmp_path / 'r.db'}")


@pytest.fixture
def http(web_config: LoadedConfig) -> Iterator[httpx.Client]:
    with serving(create_app(web_config)) as url, client(url) as c:
        yield c


def _bury(tubes: Tubes, tube: str, bodies: list[bytes]) -> list[int]:
    ids = []
    with tubes.client(watch=tube, use=tube) as c:
        for body in bodies:
            c.put(body)
            job = c.reserve(1)
            c.bury(job)
            ids.append(job.id)
    return ids


def test_stats_lists_every_configured_tube(http: httpx.Client, web_config: LoadedConfig,
                                           tubes: Tubes, server: object) -> None:
    tube = web_config.category("echo").submission
    with tubes.client(use=tube) as c:
        c.put(b"{}")
    stats = http.get("/v1/queues").json()
    rows = {row["tube"]: row for row in stats["tubes"]}
    assert rows[tube]["ready"] == 1 and rows[tube]["server"] == server.address  # type: ignore[attr-defined]
    assert web_config.category("annotation").events in rows
    assert stats["unreachable"] == []


def test_pause_and_resume(http: httpx.Client, web_config: LoadedConfig, tubes: Tubes) -> None:
    tube = web_config.category("echo").submission
    with tubes.client(use=tube) as c:
        c.put(b"{}")
    paused = http.post("/v1/queues/echo/pause", json={"seconds": 60})
    assert paused.status_code == 200 and paused.json()[0]["count"] == 1
    with tubes.client(watch=tube) as c:
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(0)
        assert http.post("/v1/queues/echo/resume").status_code == 200
        c.release(c.reserve(1))
    assert http.post("/v1/queues/echo/pause", json={"seconds": 0}).status_code == 422
    assert http.post("/v1/queues/elsewhere/pause", json={"seconds": 5}).status_code == 404


def test_buried_list_kick_and_delete(http: httpx.Client, web_config: LoadedConfig,
                                     tubes: Tubes, server: object) -> None:
    tube = web_config.category("echo").submission
    address = server.address  # type: ignore[attr-defined]
    ids = _bury(tubes, tube, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    listed = http.get("/v1/queues/echo/buried").json()
    assert listed[0]["queueID"] == ids[0] and listed[0]["body"] == '{"n": 1}'
    assert listed[0]["buried"] == 3
    assert http.post(f"/v1/queues/echo/buried/{address}/{ids[0]}/kick").json()[0]["count"] == 1
    assert tubes.counts(tube) == {"ready": 1, "reserved": 0, "delayed": 0, "buried": 2}
    assert http.post(f"/v1/queues/echo/buried/{address}/{ids[0]}/kick").status_code == 404
    assert http.delete(f"/v1/queues/echo/buried/{address}/{ids[1]}").json()[0]["count"] == 1
    assert http.delete(f"/v1/queues/echo/buried/nowhere:1/{ids[2]}").status_code == 404
    assert tubes.counts(tube)["buried"] == 1
    _bury(tubes, tube, [b"4"])
    assert http.post("/v1/queues/echo/buried/kick").json()[0]["count"] == 2
    _bury(tubes, tube, [b"5", b"6"])
    assert http.delete("/v1/queues/echo/buried").json()[0]["count"] == 2
    assert tubes.counts(tube)["buried"] == 0


def test_kick_and_purge_needs_the_tube_name(http: httpx.Client, web_config: LoadedConfig,
                                            tubes: Tubes) -> None:
    tube = web_config.category("echo").submission
    _bury(tubes, tube, [b"1"])
    assert http.post("/v1/queues/echo/kick", json={"bound": 5}).json()[0]["count"] == 1
    with tubes.client(use=tube) as c:
        c.put(b"2", delay=100)
        c.put(b"3")
    refused = http.post("/v1/queues/echo/purge", json={"confirm": "yes"})
    assert refused.status_code == 422 and tube in refused.json()["detail"]
    assert http.post("/v1/queues/echo/purge", json={}).status_code == 422
    purged = http.post("/v1/queues/echo/purge", json={"confirm": tube})
    assert purged.json()[0]["count"] == 3
    assert tubes.counts(tube) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
