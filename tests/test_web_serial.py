"""Blocking calls from coroutines run in order on one thread, many in one trip; each
caller gets its own result or exception (bystroq.web.serial)."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from bystroq.web.serial import SerialCalls


def test_calls_run_in_order_on_one_thread_and_keep_their_own_outcomes() -> None:
    calls = SerialCalls("test-serial")
    ran: list[tuple[int, str]] = []

    def work(n: int) -> int:
        ran.append((n, threading.current_thread().name))
        if n == 7:
            raise ValueError("seven")
        return n * n

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(calls.call(functools.partial(work, n))
                                      for n in range(20)), return_exceptions=True)

    try:
        outcomes = asyncio.run(main())
    finally:
        calls.close()
    assert isinstance(outcomes[7], ValueError) and str(outcomes[7]) == "seven"
    assert [o for i, o in enumerate(outcomes) if i != 7] == [n * n for n in range(20) if n != 7]
    assert [n for n, _ in ran] == list(range(20))
    assert len({name for _, name in ran}) == 1 and ran[0][1].startswith("test-serial")
    assert calls.batches < 20


def test_a_closed_runner_starts_again() -> None:
    calls = SerialCalls("test-serial")
    try:
        assert asyncio.run(calls.call(lambda: 1)) == 1
        calls.close()
        assert asyncio.run(calls.call(lambda: 2)) == 2
    finally:
        calls.close()
    with pytest.raises(ZeroDivisionError):
        asyncio.run(calls.call(lambda: 1 // 0))
    calls.close()
