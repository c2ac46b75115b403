"""Unique submits: refused while a submission with the same id is queued or running, and
`list` flags records put more than once."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bystroq import Producer, Worker, WorkerOptions
from bystroq.cli import main
from bystroq.consumer import Consumer
from bystroq.errors import BystroqError, DuplicateSubmission
from bystroq.records import Store, open_store
from bystroq.testing import Beanstalkd, config_for, config_text
from tests.conftest import Tubes


def _run_and_apply(config: object, store: Store) -> None:
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:  # type: ignore[arg-type]
        worker.run()
    with Consumer(config, store) as consumer:  # type: ignore[arg-type]
        consumer.run(burst=True)


def test_a_unique_submit_is_refused_while_its_submission_is_active(
        tmp_path: Path, server: Beanstalkd, prefix: str, records_url: str, store: Store,
        tubes: Tubes) -> None:
    config = config_for([server.address], prefix=prefix, records=records_url)
    submission = config.category("echo").submission
    with Producer(config) as producer:
        producer.submit("echo", {"submissionID": "s1", "message": "a"}, unique=True)
        with pytest.raises(DuplicateSubmission, match=r"'s1' is already queued.*cancel"):
            producer.submit("echo", {"submissionID": "s1", "message": "b"}, unique=True)
        assert tubes.counts(submission)["ready"] == 1
        # Without unique, a duplicate goes in (as before): the record then has two runs.
        producer.submit("echo", {"submissionID": "s2", "message": "a"})
        producer.submit("echo", {"submissionID": "s2", "message": "a"})
        _run_and_apply(config, store)
        # Finished, the id is free again.
        producer.submit("echo", {"submissionID": "s1", "message": "c"}, unique=True)
    runner = CliRunner()
    config_file = tmp_path / "unique.yml"
    config_file.write_text(config_text([server.address], prefix=prefix, records=records_url))
    listed = runner.invoke(main, ["--config", str(config_file), "list", "--json"])
    runs = {view["submissionID"]: view["runs"] for view in json.loads(listed.stdout)}
    assert runs == {"s1": 2, "s2": 2}
    table = runner.invoke(main, ["--config", str(config_file), "list"])
    assert "2 !" in table.stdout and "put more than once" in table.stderr


def test_concurrent_unique_submits_of_one_id_put_it_once(
        server: Beanstalkd, prefix: str, records_url: str, tubes: Tubes) -> None:
    config = config_for([server.address], prefix=prefix, records=records_url)

    def submit(n: int) -> str:
        with open_store(records_url) as store, Producer(config, recorder=store) as producer:
            try:
                producer.submit("echo", {"submissionID": "one", "message": str(n)},
                                unique=True)
            except DuplicateSubmission as exc:
                return str(exc)
            return "put"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(8)))
    assert outcomes.count("put") == 1, outcomes
    assert all("already" in o for o in outcomes if o != "put")
    assert tubes.counts(config.category("echo").submission)["ready"] == 1


def test_unique_from_the_config_and_for_a_whole_file(
        tmp_path: Path, server: Beanstalkd, prefix: str, records_url: str,
        tubes: Tubes) -> None:
    path = tmp_path / "unique.yml"
    path.write_text(config_text([server.address], prefix=prefix, records=records_url,
                                extra="unique: true"))
    submission = config_for([server.address], prefix=prefix).category("echo").submission

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, ["--config", str(path), *args])
        return result.exit_code, result.stdout, result.stderr

    code, _, err = run("submit", "--tube", "echo", "--json", '{"submissionID": 7}')
    assert code == 0, err
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"submissionID": 1}\n{"submissionID": 7}\n{"submissionID": 3}\n')
    code, _, err = run("submit", "--tube", "echo", "--file", str(jobs))
    assert code != 0 and "submission 7 is already queued" in err
    assert "nothing was submitted" in err
    assert tubes.counts(submission)["ready"] == 1  # all or nothing
    jobs.write_text('{"submissionID": 1}\n{"submissionID": 1}\n')
    code, _, err = run("submit", "--tube", "echo", "--file", str(jobs))
    assert code != 0 and f"{jobs}:2: submission 1 is already in this file" in err
    code, _, err = run("submit", "--tube", "echo", "--not-unique", "--json",
                       '{"submissionID": 7}')
    assert code == 0, err
    assert tubes.counts(submission)["ready"] == 2


def test_unique_needs_a_records_store(server: Beanstalkd, prefix: str) -> None:
    config = config_for([server.address], prefix=prefix)
    with Producer(config) as producer, pytest.raises(BystroqError, match="records store"):
        producer.submit("echo", {"submissionID": 1}, unique=True)
