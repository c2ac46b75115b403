"""Structured logs: key=value on a terminal, JSON lines with --json-logs."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


def configure(json: bool = False, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for a process (called by the CLI, never at import)."""
    out = stream or sys.stderr
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
