"""A handler's traceback reaches the failed event, the record, `status` and the log; the
reason reads the same inline and in process isolation."""

from __future__ import annotations

import json

import pytest

from bystroq import Worker, WorkerOptions
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.listener import TRACEBACK_MAX, traceback_of
from bystroq.producer import Producer
from bystroq.records import Store
from tests.conftest import Invoke, Tubes


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_the_traceback_of_a_failure_is_kept(
    config: LoadedConfig, store: Store, tubes: Tubes, isolation: str, records_cli: Invoke,
) -> None:
    with Producer(config, recorder=store) as producer:
        producer.submit("echo", {"submissionID": "tb", "fail": "zz"})
    options = WorkerOptions(burst=True, isolation=isolation)
    with Worker(config, "echo", options=options) as worker:
        worker.run()
    with Consumer(config, store) as consumer:
        consumer.run(burst=True)
    record = store.get('tb')
    assert record is not None and record.state == "failed"
    assert record.reason == "RuntimeError: zz"  # the same in a child process
    assert record.traceback is not None
    assert "Traceback (most recent call last)" in record.traceback
    assert 'examples/echo.py", line' in record.traceback and "RuntimeError: zz" in record.traceback
    code, out, _ = records_cli("status", "tb", "--json")
    assert code == 0 and json.loads(out)["submission"]["traceback"] == record.traceback
    code, out, _ = records_cli("status", "tb")
    assert "traceback:" in out


def test_a_traceback_is_bounded_keeping_its_end() -> None:
    try:
        raise ValueError("start " + "z" * 20_000 + " end")
    except ValueError as exc:
        text = traceback_of(exc)
    assert len(text) == TRACEBACK_MAX and text.startswith("…") and text.endswith(" end")
