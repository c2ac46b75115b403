from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bystroq.cli import main
from bystroq.config import LoadedConfig
from bystroq.testing import Beanstalkd, config_text, free_port
from tests.conftest import Tubes


@pytest.fixture
def config_file(tmp_path: Path, server: Beanstalkd, prefix: str) -> Path:
    path = tmp_path / "beanstalk.yml"
    records = f"sqlite:///{tmp_path / 'records.db'}"
    path.write_text(config_text([server.address], prefix=prefix, records=records))
    return path


@pytest.fixture
def run(config_file: Path) -> object:
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, ["--config", str(config_file), *args])
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_submit_json_and_listen_burst(run: object, config: LoadedConfig, tubes: Tubes) -> None:
    assert callable(run)
    code, out, _ = run("submit", "--tube", "echo", "--json", '{"submissionID": 9, "message": "m"}')
    assert code == 0
    handle = json.loads(out)
    assert handle["submissionID"] == 9 and handle["tube"] == config.category("echo").submission
    code, out, err = run("listen", "--tube", "echo", "--burst")
    assert code == 0, err
    events = tubes.events(config.category("echo").events)
    assert [(e["event"], e["queueID"]) for e in events] == [
        ("started", handle["queueID"]), ("completed", handle["queueID"])]


def test_submit_file_reports_the_bad_line_and_submits_nothing(
    run: object, tmp_path: Path, config: LoadedConfig, tubes: Tubes
) -> None:
    assert callable(run)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"submissionID": 1}\n\n{"submissionID": 2, "sleep_s": "x"}\n')
    code, _, err = run("submit", "--tube", "echo", "--file", str(jobs))
    assert code == 2
    assert f"{jobs}:3: field `sleep_s`" in err and "nothing was submitted" in err
    assert tubes.counts(config.category("echo").submission)["ready"] == 0
    jobs.write_text('{"submissionID": 1}\n{"submissionID": 2}\n')
    code, out, _ = run("submit", "--tube", "echo", "--file", str(jobs))
    assert code == 0 and len(out.splitlines()) == 2
    assert tubes.counts(config.category("echo").submission)["ready"] == 2


def test_submit_needs_exactly_one_source(run: object) -> None:
    assert callable(run)
    code, _, err = run("submit", "--tube", "echo")
    assert code == 2 and "exactly one of --json or --file" in err


def test_unknown_tube_is_one_clear_line(run: object) -> None:
    assert callable(run)
    code, _, err = run("submit", "--tube", "nope", "--json", "{}")
    assert code == 2
    assert err.startswith("error: ") and "known categories: annotation, echo" in err
    assert "Traceback" not in err


def test_stats_peek_kick(run: object, config: LoadedConfig, tubes: Tubes) -> None:
    assert callable(run)
    code, _, _ = run("submit", "--tube", "echo", "--json", '{"submissionID": 1, "fail": "x"}')
    assert code == 0
    code, out, _ = run("stats")
    assert code == 0
    row = next(line.split() for line in out.splitlines()
               if line.split()[1:2] == [config.category("echo").submission])
    assert row[2:7] == ["1", "0", "0", "0", "0"]
    code, out, _ = run("peek", "--tube", "echo")
    assert code == 0 and '{"submissionID": 1, "fail": "x"}' in out
    assert run("listen", "--tube", "echo", "--burst")[0] == 0
    code, out, _ = run("peek", "--tube", "echo", "--state", "buried")
    assert code == 0 and "reserves 1" in out
    code, out, _ = run("kick", "--tube", "echo")
    assert code == 0 and out.strip().endswith("kicked 1")
    assert tubes.counts(config.category("echo").submission)["ready"] == 1


def test_events_prints_one_line_each(run: object, config: LoadedConfig) -> None:
    assert callable(run)
    run("submit", "--tube", "echo", "--json", '{"submissionID": "a", "message": "hello"}')
    run("listen", "--tube", "echo", "--burst")
    code, out, _ = run("events", "--tube", "echo", "--from-tube")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert " started " in lines[0] and lines[1].split()[1:3] == ["completed", "a"]
    assert 'message="hello"' in lines[1]
    run("submit", "--tube", "echo", "--json", '{"submissionID": "b"}')
    run("listen", "--tube", "echo", "--burst")
    code, out, _ = run("events", "--tube", "echo", "--json", "--from-tube")
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["started", "completed"]


def test_watching_events_never_takes_them_from_the_consumer(
    run: object, config: LoadedConfig, tubes: Tubes
) -> None:
    """`bystroq events` reads what the consumer stored: the consumer still gets every
    event (records end completed), and the watcher sees them too."""
    assert callable(run)
    run("submit", "--tube", "echo", "--json", '{"submissionID": "w1", "message": "hi"}')
    run("listen", "--tube", "echo", "--burst")
    events_tube = config.category("echo").events
    code, out, _ = run("events", "--tube", "echo")
    assert code == 0 and out == ""  # nothing stored yet, and nothing taken
    assert tubes.counts(events_tube)["ready"] == 2
    assert run("consume", "--burst")[0] == 0
    code, out, _ = run("events", "--tube", "echo", "--json")
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["started", "completed"]
    code, out, _ = run("status", "w1", "--json")
    assert json.loads(out)["submission"]["state"] == "completed"


def test_taking_events_from_a_watched_tube_warns(run: object, config: LoadedConfig,
                                                  tubes: Tubes) -> None:
    assert callable(run)
    with tubes.client(watch=config.category("echo").events):  # a consumer, say
        code, _, err = run("events", "--tube", "echo", "--from-tube")
    assert code == 0 and "already watch" in err and "drop --from-tube" in err


def test_real_listen_subprocess(config_file: Path, config: LoadedConfig, tubes: Tubes) -> None:
    env = {**os.environ, "BYSTROQ_CONFIG": str(config_file)}
    submit = [sys.executable, "-m", "bystroq", "submit", "--tube", "echo", "--json"]
    for i in range(3):
        subprocess.run([*submit, json.dumps({"submissionID": i})], env=env, check=True,
                       capture_output=True)
    done = subprocess.run(
        [sys.executable, "-m", "bystroq", "--json-logs", "--log-level", "debug", "listen",
         "--tube", "echo", "--burst"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    logs = [json.loads(line) for line in done.stderr.splitlines()]
    completed = [entry for entry in logs if entry["event"] == "job completed"]
    assert len(completed) == 3
    assert all({"tube", "queueID", "submissionID", "attempt"} <= set(e) for e in completed)
    events = tubes.events(config.category("echo").events)
    assert sorted(e["submissionID"] for e in events if e["event"] == "completed") == [0, 1, 2]


def test_inspecting_goes_on_past_a_server_that_is_down(
    tmp_path: Path, server: Beanstalkd, prefix: str, config: LoadedConfig, tubes: Tubes
) -> None:
    down = f"127.0.0.1:{free_port()}"
    path = tmp_path / "two.yml"
    path.write_text(config_text([down, server.address], prefix=prefix))
    with tubes.client(use=config.category("echo").submission) as client:
        client.put(b'{"submissionID": 1}')
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["--config", str(path), *args])
        return result.exit_code, result.stdout

    code, out = run("peek", "--tube", "echo")
    assert code == 0 and f"{down}: unreachable" in out and '{"submissionID": 1}' in out
    code, out = run("kick", "--tube", "echo")
    assert code == 0 and f"{down}: unreachable" in out and f"{server.address}: kicked 0" in out
    code, out = run("buried", "--tube", "echo", "--delete")
    assert code == 0 and f"{server.address}: deleted 0" in out
    code, out = run("stats")
    assert code == 0 and f"{down}  DOWN" in out


@pytest.mark.parametrize("command", [
    ("stats", "--tube", "echoo"), ("kick", "--tube", "echoo"), ("peek", "--tube", "echoo"),
    ("buried", "--tube", "echoo"), ("events", "--tube", "echoo"),
])
def test_a_misspelt_tube_is_refused_with_a_suggestion(
    run: object, command: tuple[str, ...]
) -> None:
    assert callable(run)
    code, _, err = run(*command)
    assert code == 2 and "no category or tube named 'echoo'" in err, err
    assert "did you mean 'echo'?" in err


def test_stats_fails_when_every_server_is_down(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "down.yml"
    path.write_text(config_text([f"127.0.0.1:{free_port()}"], prefix=prefix))
    result = CliRunner().invoke(main, ["--config", str(path), "stats", "--json"])
    assert result.exit_code == 1 and '"unreachable":[{' in result.stdout


def test_pause_resume_and_purge(run: object, config: LoadedConfig, tubes: Tubes) -> None:
    assert callable(run)
    tube = config.category("echo").submission
    with tubes.client(use=tube) as client:
        for n in range(3):
            client.put(b'{"submissionID": %d}' % n)
    code, out, _ = run("pause", "--tube", "echo", "--for", "60")
    assert code == 0 and ": paused for 60 s" in out
    with tubes.client() as client:
        assert int(client.stats_tube(tube)["pause"]) == 60
    code, _, _ = run("resume", "--tube", "echo")
    with tubes.client() as client:
        assert code == 0 and int(client.stats_tube(tube)["pause"]) == 0
    code, _, _ = run("purge", "--tube", "echo")  # no --yes, no answer: nothing deleted
    assert code == 1 and tubes.counts(tube)["ready"] == 3
    code, out, _ = run("purge", "--tube", "echo", "--yes", "--json")
    assert code == 0 and '"count":3' in out and tubes.counts(tube)["ready"] == 0
