"""Trace context across the queue: a W3C `traceparent` from the submitter to the job's
handler, its events and its record (extra `otel`).

- At submit (Producer.submit, submit_many), when OpenTelemetry is installed and a span is
  current, its traceparent is added to the job's JSON object as the top-level key
  `traceparent` (a job that already has one keeps it). Job Structs skip keys they do not
  have, Bystro's too; a strict category's decoder drops this one before it decodes
  (bystroq.messages.JobDecoder). There is no envelope around a job to put it in: the body
  is the job, as Bystro's wire has it.
- The worker reads it back (`traceparent_of`, which needs no OpenTelemetry), puts it on
  every event of the job as the optional field `traceparent`, and, with OpenTelemetry,
  runs the handler inside a child span of it named `bystroq.job <category>`.
- The consumer keeps it on the submission's record (`traceparent`) and, with
  OpenTelemetry, records each transaction that applied traced events as a span
  `bystroq.apply <category>` linked to those jobs' traces.

Without OpenTelemetry, or without a current span, nothing changes: the body and the events
are the bytes they were. OpenTelemetry is imported on first use, never at module load.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import ModuleType, TracebackType
from typing import Any

import msgspec

from bystroq.messages import TRACEPARENT

_NEEDLE = b'"' + TRACEPARENT.encode() + b'"'
# version-traceid-parentid-flags, lower-case hex (W3C Trace Context, level 1)
_FORMAT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
TRACER_NAME = "bystroq"


class _Traced(msgspec.Struct):
    traceparent: Any = None


_DECODE_TRACED = msgspec.json.Decoder(_Traced)


@functools.lru_cache(maxsize=1)
def _trace_api() -> ModuleType | None:
    """opentelemetry.trace, or None when OpenTelemetry is not installed (asked once)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def current_traceparent() -> str | None:
    """The traceparent of the span current in this context (None: none, or no
    OpenTelemetry)."""
    trace = _trace_api()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def with_traceparent(body: bytes) -> bytes:
    """`body` (a job's JSON object) with the current span's traceparent as its last key;
    `body` itself when there is no current span, or it already names one."""
    traceparent = current_traceparent()
    if traceparent is None or _NEEDLE in body:
        return body
    end = body.rstrip()
    if not end.endswith(b"}") or not body.lstrip().startswith(b"{"):
        return body  # not an object: the decoder says what is wrong with it
    inside = end[:-1].rstrip()
    comma = b"" if inside.endswith(b"{") else b","
    return b'%s%s"%s":"%s"}' % (inside, comma, TRACEPARENT.encode(), traceparent.encode())


def traceparent_of(body: bytes) -> str | None:
    """The well-formed traceparent a job body carries, if any (no OpenTelemetry needed)."""
    if _NEEDLE not in body:
        return None
    try:
        value = _DECODE_TRACED.decode(body).traceparent
    except (msgspec.DecodeError, RecursionError):
        return None
    return value if isinstance(value, str) and _FORMAT.fullmatch(value) else None


class JobSpan:
    """The handler's span (a no-op without one): `failed` marks a failure the handler's
    result carries rather than raises."""

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def failed(self, reason: str | None) -> None:
        if self.span is not None and reason is not None:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, reason))


class _NoSpan(AbstractContextManager[JobSpan]):
    """What `job_span` is for a job without a trace: nothing, at the cost of a call."""

    span = JobSpan()

    def __enter__(self) -> JobSpan:
        return self.span

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None


_NO_SPAN = _NoSpan()


def job_span(traceparent: str | None, category: str, queue_id: int, attempt: int,
             worker: str) -> AbstractContextManager[JobSpan]:
    """Run the block in a span `bystroq.job <category>`, child of `traceparent`; current
    in this thread, so the handler's own spans nest in it. Without a traceparent or
    OpenTelemetry, nothing happens. An exception out of the block is recorded on it."""
    if traceparent is None or _trace_api() is None:
        return _NO_SPAN
    return _span(traceparent, category, {
        "messaging.system": "beanstalkd", "messaging.message.id": str(queue_id),
        "bystroq.attempt": attempt, "bystroq.worker": worker})


@contextlib.contextmanager
def _span(traceparent: str, category: str,
          attributes: dict[str, str | int]) -> Iterator[JobSpan]:
    trace = _trace_api()
    assert trace is not None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(f"bystroq.job {category}", context=parent,
                                      kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield JobSpan(span)


def link_applied(category: str, bodies: Iterable[Mapping[str, Any]], started_ns: int) -> None:
    """A span for a transaction (begun at `started_ns`) that applied events, linked to the
    traces of their jobs; nothing when none carried a traceparent, or no OpenTelemetry."""
    trace = _trace_api()
    if trace is None:
        return
    traceparents = {value for body in bodies
                    if isinstance(value := body.get(TRACEPARENT), str) and _FORMAT.fullmatch(value)}
    if not traceparents:
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    extract = TraceContextTextMapPropagator().extract
    links = [trace.Link(trace.get_current_span(extract({TRACEPARENT: value}))
                        .get_span_context()) for value in sorted(traceparents)]
    span = trace.get_tracer(TRACER_NAME).start_span(
        f"bystroq.apply {category}", links=links, start_time=started_ns,
        attributes={"bystroq.category": category, "bystroq.traces": len(links)})
    span.end()
