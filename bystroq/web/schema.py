"""Views the HTTP API adds to the public schema (bystroq.records.views): pages, a
submission's details with its progress, health. Same conventions: camelCase, null for
absent values."""

from __future__ import annotations

from bystroq.records.views import (
    SubmissionView,
    TimelineEventView,
    View,
)


class SubmissionPageView(View, frozen=True):
    """A page of submissions; pass `nextCursor` as `cursor` for the next (null: the end)."""

    items: list[SubmissionView]
    next_cursor: str | None


class ProgressView(View, frozen=True):
    """How far a submission got; `percent` when its handler reported a total."""

    count: int
    skipped: int
    total: int | None
    percent: float | None


class SubmissionDetailView(View, frozen=True):
    """`GET /v1/submissions/{id}`: the record, its timeline, its progress, and the failure
    reason (with the traceback, when the worker sent one)."""

    submission: SubmissionView
    timeline: list[TimelineEventView]
    progress: ProgressView
    traceback: str | None


class ServerHealthView(View, frozen=True):
    server: str
    ok: bool
    error: str | None


class ReadyView(View, frozen=True):
    """`/readyz`: every beanstalkd server and the records store, reachable or not."""

    ready: bool
    servers: list[ServerHealthView]
    store: bool
    store_error: str | None


class HealthView(View, frozen=True):
    ok: bool
