"""Trace context from a web request to the job's handler, events and record, with
OpenTelemetry's SDK and its in-memory exporter; and no change at all without a span or
without OpenTelemetry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bystroq import Outcome, Producer, Worker
from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.errors import DecodeError
from bystroq.examples.echo import EchoJob
from bystroq.messages import JobDecoder, encode
from bystroq.records import Store
from bystroq.testing import Beanstalkd, config_text
from bystroq.tracing import traceparent_of, with_traceparent
from bystroq.web import WebSettings, create_app
from tests.conftest import Tubes
from tests.web_server import client, serving

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The SDK behind OpenTelemetry's API for this module's tests (the API's provider is
    process-wide: set once, then only given another processor)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    provider.add_span_processor(processor)
    yield memory
    processor.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _lineage(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """`span` and its ancestors among `spans`."""
    out = [span]
    while out[-1].parent is not None and out[-1].parent.span_id in spans:
        out.append(spans[out[-1].parent.span_id])
    return out


class _RequestSpans:
    """ASGI middleware: each HTTP request runs in a server span (as an instrumented app's
    would)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.tracer = trace.get_tracer("tests.web")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}",
                                               kind=trace.SpanKind.SERVER):
            await self.app(scope, receive, send)


def test_a_request_that_submits_and_the_job_it_runs_are_one_trace(
    config: LoadedConfig, store: Store, records_url: str, tubes: Tubes,
    spans: InMemorySpanExporter,
) -> None:
    app = create_app(config, WebSettings(records_url=records_url))
    app.add_middleware(_RequestSpans)
    with serving(app) as url, client(url) as http:
        answer = http.post("/v1/submissions/echo",
                           json={"submissionID": "traced", "message": "hi"})
        assert answer.status_code == 202, answer.text
    (request,) = [s for s in spans.get_finished_spans()
                  if s.name == "POST /v1/submissions/echo"]
    with Worker(config, "echo") as worker:
        assert worker.step(wait_s=5) is Outcome.COMPLETED
    finished = {s.context.span_id: s for s in spans.get_finished_spans() if s.context}
    (job,) = [s for s in finished.values() if s.name == "bystroq.job echo"]
    assert job.context is not None and request.context is not None
    assert job.context.trace_id == request.context.trace_id
    # Its parent is the span current at submit: the request's, or one inside it (FastAPI
    # makes its own spans when OpenTelemetry is installed).
    assert job.parent is not None
    submit = finished[job.parent.span_id]
    assert request in _lineage(submit, finished)
    assert job.kind is trace.SpanKind.CONSUMER
    assert job.status.status_code is trace.StatusCode.UNSET
    assert job.attributes is not None and job.attributes["bystroq.attempt"] == 1
    events = tubes.events(config.category("echo").events)
    assert [(e["event"], e["traceparent"]) for e in events] == [
        ("started", _traceparent(submit)), ("completed", _traceparent(submit))]
    assert "traceparent" not in [k for e in events for k in e.get("result", {})]
    for event in events:  # back on the tube for the consumer
        with tubes.client(use=config.category("echo").events) as beanstalk:
            beanstalk.put(json.dumps(event).encode())
    with Consumer(config, store) as consumer:
        consumer.drain()
    record = store.get("traced")
    assert record is not None and record.traceparent == _traceparent(submit)
    # The transaction that applied its events is a span linked to the job's trace.
    (applied,) = [s for s in spans.get_finished_spans() if s.name == "bystroq.apply echo"]
    assert submit.context is not None
    assert [link.context.span_id for link in applied.links] == [submit.context.span_id]
    assert applied.context is not None and applied.context.trace_id != job.context.trace_id
    assert record.result == {"message": "hi"}


def test_a_failed_handler_marks_its_span(config: LoadedConfig, spans: InMemorySpanExporter,
                                         tubes: Tubes) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("submit"), Producer(config, recorder=None) as producer:
        producer.submit("echo", EchoJob(submissionID=1, fail="boom"))
    with Worker(config, "echo") as worker:
        assert worker.step(wait_s=5) is Outcome.FAILED
    (job,) = [s for s in spans.get_finished_spans() if s.name == "bystroq.job echo"]
    assert job.status.status_code is trace.StatusCode.ERROR
    assert "boom" in (job.status.description or "")
    (failed,) = [e for e in tubes.events(config.category("echo").events)
                 if e["event"] == "failed"]
    assert job.context is not None
    assert failed["traceparent"].split("-")[1] == f"{job.context.trace_id:032x}"


def test_without_a_current_span_the_wire_is_unchanged(
    config: LoadedConfig, tubes: Tubes, spans: InMemorySpanExporter,
) -> None:
    job = EchoJob(submissionID="plain", message="m")
    with Producer(config, recorder=None) as producer:
        producer.submit("echo", job)
        producer.submit_many("echo", [EchoJob(submissionID="many")])
    with tubes.client(use=config.category("echo").submission) as beanstalk:
        assert beanstalk.peek_ready().body == encode(job)
    with Worker(config, "echo") as worker:
        assert worker.step(wait_s=5) is Outcome.COMPLETED
        assert worker.step(wait_s=5) is Outcome.COMPLETED
    events = tubes.events(config.category("echo").events)
    assert len(events) == 4 and not any("traceparent" in e for e in events)
    assert spans.get_finished_spans() == ()


def test_without_opentelemetry_nothing_is_imported_or_added(
    server: Beanstalkd, prefix: str, tmp_path: Path, tubes: Tubes, config: LoadedConfig,
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(config_text([server.address], prefix=prefix))
    script = f"""
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed: importing it fails
from bystroq import Producer, Worker, config
from bystroq.examples.echo import EchoJob
loaded = config.load({str(path)!r})
with Producer(loaded, recorder=None) as producer:
    producer.submit("echo", EchoJob(submissionID="x"))
    producer.submit("echo", b'{{"submissionID": "y", "traceparent": "{TRACEPARENT}"}}')
with Worker(loaded, "echo") as worker:
    print(worker.step(wait_s=5).value, worker.step(wait_s=5).value)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "completed completed", done.stdout
    events = tubes.events(config.category("echo").events)
    # A job sent without a span stays as it was; one sent with a trace context (from a
    # process that has OpenTelemetry) keeps it on its events, with no span made here.
    assert [(e["submissionID"], e["event"], e.get("traceparent")) for e in events] == [
        ("x", "started", None), ("x", "completed", None),
        ("y", "started", TRACEPARENT), ("y", "completed", TRACEPARENT)]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, bystroq.producer, bystroq.worker, "
         "bystroq.consumer, bystroq.tracing; print(sorted(m for m in sys.modules "
         "if m.startswith('opentelemetry')))"], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr


def test_the_trace_context_goes_in_the_job_object(spans: InMemorySpanExporter) -> None:
    assert with_traceparent(b'{"a": 1}') == b'{"a": 1}'  # no current span
    with trace.get_tracer("tests").start_as_current_span("s") as span:
        mine = _traceparent(span)  # type: ignore[arg-type]
        assert with_traceparent(b'{"a": 1} ') == b'{"a": 1,"traceparent":"%s"}' % mine.encode()
        assert with_traceparent(b"{}") == b'{"traceparent":"%s"}' % mine.encode()
        kept = b'{"traceparent": "%s"}' % TRACEPARENT.encode()
        assert with_traceparent(kept) == kept
        assert with_traceparent(b"[1]") == b"[1]"
    assert traceparent_of(b'{"submissionID": 1, "traceparent": "%s"}'
                          % TRACEPARENT.encode()) == TRACEPARENT
    assert traceparent_of(b'{"traceparent": "not-one"}') is None
    assert traceparent_of(b'{"traceparent": 5}') is None
    assert traceparent_of(b'{"message": "x"}') is None


def test_a_strict_category_takes_a_traced_job() -> None:
    decoder = JobDecoder(EchoJob, strict=True)
    job = decoder.decode(b'{"submissionID": 3, "message": "m", "traceparent": "%s"}'
                         % TRACEPARENT.encode())
    assert msgspec.to_builtins(job) == msgspec.to_builtins(EchoJob(submissionID=3,
                                                                    message="m"))
    with pytest.raises(DecodeError, match="other"):
        decoder.decode(b'{"submissionID": 3, "other": 1, "traceparent": "x"}')
