"""Batches against a real beanstalkd, on both records backends."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from bystroq.config import LoadedConfig
from bystroq.consumer import Consumer
from bystroq.errors import BatchError
from bystroq.ops.batches import batch_status, cancel_batch, create_batch
from bystroq.ops.consume import ConsumeAndFeed
from bystroq.records import Store, open_store
from bystroq.testing import wait_until
from tests.batching import put_order, run_batch, running_worker, write_jsonl
from tests.conftest import Invoke, Tubes


def test_concurrency_limits_jobs_in_flight(
    config: LoadedConfig, tubes: Tubes, store: Store, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{"sleep_s": 0.01} for _ in range(200)])
    batch = create_batch(config, store, "echo", path, concurrency=5)
    assert batch.batch_id.startswith("batch-") and len(batch.batch_id) == 14
    submission = config.category("echo").submission
    seen: list[int] = []

    def on_server() -> None:
        counts = tubes.counts(submission)
        seen.append(counts["ready"] + counts["reserved"] + counts["delayed"])
        seen.append(store.batch_in_flight(batch.batch_id))

    with running_worker(config):
        run_batch(config, store, batch.batch_id, on_server)
    status = batch_status(store, batch.batch_id)
    assert status.batch.state == "completed"
    assert status.counts == {"completed": 200, "pending": 0}
    assert max(seen) == 5  # reached, never passed
    assert {r.submission_id for r in store.list(batch=batch.batch_id, limit=500)} == {
        f"{batch.batch_id}-{n}" for n in range(200)}


def test_shuffle_and_no_shuffle(config: LoadedConfig, store: Store, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{"submissionID": f"r{i:02d}"}
                                                 for i in range(30)])
    in_order = [f"r{i:02d}" for i in range(30)]
    kept = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    with running_worker(config, concurrency=1):
        run_batch(config, store, kept.batch_id)
        assert put_order(store, kept.batch_id) == in_order
        shuffled = create_batch(config, store, "echo", path, seed=3, concurrency=1)
        run_batch(config, store, shuffled.batch_id)
    order = put_order(store, shuffled.batch_id)
    assert sorted(order) == in_order and order != in_order


def test_max_records_and_params(config: LoadedConfig, store: Store, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl",
                       [{"message": "own"}] + [{} for _ in range(9)])
    batch = create_batch(config, store, "echo", path, shuffle=False, max_records=4,
                         params={"message": "param"})
    assert batch.total == 4
    overridden = create_batch(config, store, "echo", path, shuffle=False, max_records=1,
                              params={"message": "param"}, params_override=True)
    with running_worker(config):
        run_batch(config, store, batch.batch_id)
        run_batch(config, store, overridden.batch_id)
    results = {r.submission_id: r.result for r in store.list(batch=batch.batch_id)}
    assert results == {
        f"{batch.batch_id}-0": {"message": "own"},
        **{f"{batch.batch_id}-{n}": {"message": "param"} for n in range(1, 4)},
    }
    assert store.list(batch=overridden.batch_id)[0].result == {"message": "param"}


def test_error_policy_stop(config: LoadedConfig, tubes: Tubes, store: Store,
                          tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl",
                       [{"submissionID": "bad", "fail": "boom"}]
                       + [{"submissionID": f"ok{i}", "sleep_s": 0.05} for i in range(30)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=3,
                         error_policy="stop")
    with running_worker(config, concurrency=1):
        run_batch(config, store, batch.batch_id)
        status = batch_status(store, batch.batch_id)
        assert status.batch.state == "failed"
        assert status.batch.reason == "stopped after the first failure (bad: RuntimeError: boom)"
        assert status.counts["pending"] == 30 - 2  # only the first three were ever put
        # Running ones finish; the ones not started were cancelled and never run.
        with Consumer(config, store) as consumer:
            wait_until(lambda: consumer.drain() >= 0
                       and store.batch_in_flight(batch.batch_id) == 0)
    counts = store.count_by_state(batch.batch_id)
    assert counts.get("failed") == 1
    assert counts.get("completed", 0) + counts.get("cancelled", 0) == 2
    assert tubes.counts(config.category("echo").submission)["ready"] == 0


def test_cancel_mid_run(config: LoadedConfig, tubes: Tubes, store: Store,
                        tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{"sleep_s": 0.2} for _ in range(40)])
    batch = create_batch(config, store, "echo", path, concurrency=4)
    with running_worker(config, concurrency=2), ConsumeAndFeed(config, store) as consumer:
        def some_done() -> bool:
            consumer.step()
            consumer.feed(force=True)
            return store.count_by_state(batch.batch_id).get("completed", 0) >= 4

        wait_until(some_done, timeout_s=60)
        outcome = cancel_batch(store, batch.batch_id)
        assert outcome.deleted + outcome.requested > 0

        def settled() -> bool:
            consumer.drain()
            return store.batch_in_flight(batch.batch_id) == 0

        wait_until(settled, timeout_s=30)
        assert consumer.feed(force=True) == 0
    status = batch_status(store, batch.batch_id)
    assert status.batch.state == "cancelled"
    # Counts agree with done and percent: items never put count as cancelled, none pending.
    never_put = 40 - status.batch.fed
    assert never_put > 0 and status.counts["pending"] == 0
    assert (status.done, status.percent) == (40, 100.0)
    cancelled, completed = status.counts.get("cancelled", 0), status.counts.get("completed", 0)
    assert cancelled + completed == 40
    # A running job asked to stop may finish first: cancelled records are at most those.
    assert cancelled - never_put <= outcome.deleted + outcome.requested
    assert tubes.counts(config.category("echo").submission) == {
        "ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    with pytest.raises(Exception, match="already cancelled"):
        cancel_batch(store, batch.batch_id)


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("bad.jsonl", '{"message": "a"}\n{"message": \n', "bad.jsonl:2: not valid JSON"),
    ("bad.jsonl", '{"message": "a"}\n{"sleep_s": "slow"}\n',
     "bad.jsonl:2: field `sleep_s`: Expected `float`, got `str` ('slow') (job type EchoJob)"),
    ("bad.jsonl", '{"mesage": "a"}\n',
     "bad.jsonl:1: field `mesage`: not a field of EchoJob (its fields: submissionID, message,"),
    ("bad.csv", "message,sleep_s\na,0\nb\n", "bad.csv: row 3: has 1 columns, the header has 2"),
    ("bad.csv", "message,sleep_s\na,soon\n",
     "bad.csv: row 2, column 2 (`sleep_s`): Expected `float`, got `str` ('soon')"),
    ("bad.csv", "message;sleep_s\na;0\n",
     "bad.csv: row 1: one column `message;sleep_s`: the file looks ';'-separated; save it "
     "comma-separated"),
    ("bad.csv", "submission_id,message\nx,a\n",
     "bad.csv: row 1, column 1 (`submission_id`): not a field of EchoJob"),
    ("bad.csv", "message,sleep_s,message\na,0,b\n",
     "bad.csv: row 1: columns 1 and 3 are both `message`; give each column its own name"),
    ("bad.csv", "message,sleep_s\na,0\nb,nan\n",
     "bad.csv: row 3, column 2 (`sleep_s`): 'nan' is not a finite number"),
    ("bad.csv", "message,sleep_s\na,-inf\n",
     "bad.csv: row 2, column 2 (`sleep_s`): '-inf' is not a finite number"),
    ("bad.csv", "message\nok\ncaf\xe9\n".encode("latin-1"),
     "bad.csv:3: not UTF-8 (byte 0xe9 at column 4); save the file as UTF-8"),
    ("bad.csv", "submissionID\na\nb\na\n",
     "bad.csv: row 4: submissionID 'a' is already used at "),
])
def test_bad_records_file_creates_nothing(config: LoadedConfig, tubes: Tubes, store: Store,
                                          tmp_path: Path, name: str, text: str | bytes,
                                          expected: str) -> None:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(BatchError) as raised:
        create_batch(config, store, "echo", path)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)
    assert store.list_batches() == [] and store.list() == []
    assert tubes.counts(config.category("echo").submission)["ready"] == 0


def test_unknown_param_creates_nothing(config: LoadedConfig, store: Store,
                                       tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{}])
    with pytest.raises(BatchError, match="--param mesage: not a field of EchoJob"):
        create_batch(config, store, "echo", path, params={"mesage": "hi"})
    assert store.list_batches() == []


def test_csv_with_a_byte_order_mark(config: LoadedConfig, store: Store, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("submissionID,message\nb1,hi\nb2,ho\n", encoding="utf-8-sig")
    batch = create_batch(config, store, "echo", path, shuffle=False)
    bodies = sorted((json.loads(r.body or "") for r in store.list(batch=batch.batch_id)),
                    key=lambda b: b["submissionID"])
    assert [(b["submissionID"], b["message"]) for b in bodies] == [("b1", "hi"), ("b2", "ho")]


def test_a_records_file_in_the_other_wire_spelling_keeps_its_ids(
    config: LoadedConfig, store: Store, tmp_path: Path
) -> None:
    """Bystro's camelCase `submissionId` names the id as `submissionID` does."""
    path = tmp_path / "camel.csv"
    path.write_text("submissionId,message\nc1,hi\nc2,ho\n")
    batch = create_batch(config, store, "echo", path, shuffle=False)
    assert sorted(r.submission_id for r in store.list(batch=batch.batch_id)) == ["c1", "c2"]
    both = tmp_path / "both.jsonl"
    both.write_text('{"submissionId": "x", "submissionID": "y"}\n')
    with pytest.raises(BatchError, match="differ"):
        create_batch(config, store, "echo", both)


def test_a_large_csv_is_streamed(config: LoadedConfig, tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    with path.open("w") as out:
        out.write("submissionID,message,sleep_s\n")
        out.writelines(f"row-{n:07d},hello {n},0.{n % 10}\n" for n in range(100_000))
    size = path.stat().st_size
    with open_store(f"sqlite:///{tmp_path / 'records.db'}") as store:
        tracemalloc.start()
        try:
            batch = create_batch(config, store, "echo", path, seed=1, concurrency=2)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert batch.total == 100_000
    print(f"peak traced memory {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file")
    assert peak < size  # 24 times the file's size when the file was held


def test_csv_records(config: LoadedConfig, store: Store, tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("submissionID,message,sleep_s\nc1,hello,0\nc2,,0.01\n")
    batch = create_batch(config, store, "echo", path, params={"message": "default"})
    with running_worker(config):
        run_batch(config, store, batch.batch_id)
    assert {r.submission_id: r.result for r in store.list(batch=batch.batch_id)} == {
        "c1": {"message": "hello"}, "c2": {"message": "default"}}


def test_cli_create_wait_status(records_cli: Invoke, tmp_path: Path,
                                config: LoadedConfig) -> None:
    run = records_cli
    good = write_jsonl(tmp_path / "good.jsonl", [{"sleep_s": 0.01} for _ in range(12)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{}, {"fail": "no"}, {}])
    with running_worker(config):
        code, out, _ = run("batch", "create", "--tube", "echo", "--records-file", str(good),
                           "--concurrency", "3", "--wait")
        assert code == 0, out
        # The worker thread's logs may share stdout: keep the command's own lines.
        lines = [line for line in out.splitlines() if line.startswith("batch-")]
        batch_id = lines[0].split(":")[0]
        assert lines[0] == f"{batch_id}: 12 jobs of echo, concurrency 3, error policy continue"
        assert any(line.startswith(f"{batch_id}: ") and " done, " in line for line in lines)
        assert lines[-1] == f"{batch_id} completed: 12 completed, 0 failed, 0 cancelled of 12"
        code, out, _ = run("batch", "create", "--tube", "echo", "--records-file", str(bad),
                           "--wait")
        assert code == 1
        assert "1 failed" in out.splitlines()[-1]

    code, out, _ = run("batch", "status", batch_id)
    assert code == 0
    assert f"batch:      {batch_id} (echo, concurrency 3, error policy continue)" in out
    assert "done:       12/12 (100.0%)" in out and "completed 12" in out
    code, out, _ = run("batch", "list")
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run("batch", "wait", batch_id, "--no-consume")
    assert code == 0
    code, _, err = run("batch", "status", "batch-nope")
    assert code == 2 and "no batch 'batch-nope'" in err
    code, _, err = run("batch", "create", "--tube", "echo", "--records-file", str(good),
                       "--param", "novalue")
    assert code == 2 and "expected key=value" in err


def test_cli_refuses_a_latin1_file_in_one_line(records_cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("message\ncaf\xe9\n".encode("latin-1"))
    code, out, err = records_cli("batch", "create", "--tube", "echo", "--records-file",
                                 str(path))
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().splitlines() == [
        f"error: {path}:2: not UTF-8 (byte 0xe9 at column 4); save the file as UTF-8"]


def test_cancel_covers_a_claim_never_put(config: LoadedConfig, store: Store,
                                         tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [{} for _ in range(3)])
    batch = create_batch(config, store, "echo", path, shuffle=False, concurrency=1)
    (claimed,) = store.claim_batch_items(batch.batch_id, 1)  # its feeder died here
    assert cancel_batch(store, batch.batch_id).deleted == 2  # put + claimed
    record = store.get(claimed.submission_id)
    assert record is not None and record.state == "cancelled"
    assert store.batch_in_flight(batch.batch_id) == 0


def test_batch_wait_gives_up_after_its_timeout(config: LoadedConfig, store: Store,
                                               tmp_path: Path, records_cli: Invoke) -> None:
    path = write_jsonl(tmp_path / "slow.jsonl", [{"sleep_s": 0.1} for _ in range(3)])
    batch = create_batch(config, store, "echo", path)
    code, _, err = records_cli("batch", "wait", batch.batch_id, "--no-consume", "--timeout",
                               "0.3")
    assert code == 3 and "still running after 0.3 s" in err
    assert batch_status(store, batch.batch_id).batch.state == "running"
