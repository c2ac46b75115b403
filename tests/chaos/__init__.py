"""Chaos scenarios: real servers, workers, consumers and databases, broken mid-run.

Each topic's scenarios live in their own module; SCENARIOS gathers them for scripts/chaos.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos import batches, core, producer, records, worker
from tests.chaos.core import Report

SCENARIOS: dict[str, Callable[[], Report]] = {
    **core.SCENARIOS,
    **worker.SCENARIOS,
    **records.SCENARIOS,
    **batches.SCENARIOS,
    **producer.SCENARIOS,
}
