"""How many jobs a slot reserves in one write (bystroq.worker.batch), without a server."""

from __future__ import annotations

from bystroq.worker.batch import BatchSize


def test_starts_at_one_and_doubles_while_batches_come_back_full() -> None:
    batch = BatchSize(most=16, budget_s=0.01)
    sizes = []
    for _ in range(6):
        sizes.append(batch.size)
        batch.ran(0.0001)
        batch.reserved(batch.size, batch.size)
    assert sizes == [1, 2, 4, 8, 16, 16]


def test_a_long_handler_brings_the_batch_back_to_one() -> None:
    batch = BatchSize(most=64, budget_s=0.01)
    for _ in range(5):
        batch.ran(0.0001)
        batch.reserved(batch.size, batch.size)
    assert batch.size == 32
    batch.ran(0.5)
    assert batch.size == 1
    batch.reserved(1, 1)
    assert batch.size == 1  # the average remembers the long one: no growth yet


def test_handler_time_bounds_the_batch() -> None:
    batch = BatchSize(most=64, budget_s=0.01)
    for _ in range(30):
        batch.ran(0.002)  # 2 ms a job: 5 jobs fill the 10 ms budget
        batch.reserved(batch.size, batch.size)
    assert batch.aim == 5
    assert batch.size == 5


def test_a_short_batch_shrinks_to_what_came() -> None:
    batch = BatchSize()
    batch.reserved(1, 1)
    batch.reserved(2, 2)
    assert batch.size == 4
    batch.reserved(4, 1)  # the queue is not deep: no more held ahead than came
    assert batch.size == 1
