"""Fields a job type does not have: ignored with a warning, or refused under `strict:`."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bystroq import Worker, WorkerOptions
from bystroq.cli import main
from bystroq.testing import Beanstalkd, config_for, config_text
from tests.conftest import Tubes


def _run(path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_submit_warns_about_a_misspelt_field(tmp_path: Path, server: Beanstalkd,
                                             prefix: str) -> None:
    path = tmp_path / "loose.yml"
    path.write_text(config_text([server.address], prefix=prefix))
    code, _, err = _run(path, "submit", "--tube", "echo", "--no-records", "--json",
                        '{"submissionID": 1, "mesage": "hi"}')
    assert code == 0 and "field `mesage` is not a field of the job type" in err


def test_strict_refuses_at_submit_and_at_the_worker(tmp_path: Path, server: Beanstalkd,
                                                    prefix: str, tubes: Tubes) -> None:
    path = tmp_path / "strict.yml"
    path.write_text(config_text([server.address], prefix=prefix, extra="strict: true"))
    code, _, err = _run(path, "submit", "--tube", "echo", "--no-records", "--json",
                        '{"submissionID": 1, "mesage": "hi"}')
    assert code == 2 and "mesage" in err and "nothing was submitted" in err
    config = config_for([server.address], prefix=prefix, extra="strict: true")
    with tubes.client(use=config.category("echo").submission) as client:
        client.put(b'{"submissionID": 2, "mesage": "hi"}')  # put past the CLI's check
    with Worker(config, "echo", options=WorkerOptions(burst=True)) as worker:
        worker.run()
    events = tubes.events(config.category("echo").events)
    assert [e["event"] for e in events] == ["failed"] and "mesage" in str(events[0]["reason"])
    assert tubes.counts(config.category("echo").submission)["buried"] == 1
