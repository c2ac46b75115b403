"""A listener is checked when a worker starts: function signatures, retry names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bystroq.cli import main
from bystroq.errors import ListenerError
from bystroq.listener import load_listener, unknown_exception_names
from bystroq.testing import Beanstalkd, config_text

LISTENER = '''
from bystroq import BaseMessage, CompletedJobMessage, SubmittedJobMessage


class Job(BaseMessage, frozen=True, kw_only=True):
    pass


class Flaky(Exception):
    pass


job_data_type = Job


def handler_fn({params}):
    return 1


def submit_msg_fn(job):
    return SubmittedJobMessage(submissionID=job.submissionID)


def completed_msg_fn(job, result):
    return CompletedJobMessage(submissionID=job.submissionID)
'''


def _module(tmp_path: Path, name: str, params: str) -> str:
    (tmp_path / f"{name}.py").write_text(LISTENER.format(params=params))
    sys.path.insert(0, str(tmp_path))
    return name


@pytest.fixture(autouse=True)
def _restore_path() -> object:
    saved = list(sys.path)
    yield None
    sys.path[:] = saved


def test_a_handler_with_the_wrong_signature_is_refused_at_load(tmp_path: Path) -> None:
    name = _module(tmp_path, "one_param_listener", "job")
    with pytest.raises(ListenerError, match=r"one_param_listener.handler_fn\(job\) cannot be "
                       r"called as handler_fn\(publisher, job\)"):
        load_listener(name)


@pytest.mark.parametrize("params", ["publisher, job", "*args", "publisher, job, extra=1"])
def test_handlers_that_take_publisher_and_job_load(tmp_path: Path, params: str) -> None:
    name = _module(tmp_path, f"ok_listener_{abs(hash(params))}", params)
    assert load_listener(name).handler_fn(None, None) == 1  # type: ignore[arg-type]


def test_misspelt_retry_names_are_found(tmp_path: Path) -> None:
    name = _module(tmp_path, "flaky_listener", "publisher, job")
    names = ["ConnectionEror", "ConnectionError", "Flaky", "flaky_listener.Flaky",
             "json.JSONDecodeError", "nosuch.module.Error"]
    assert unknown_exception_names(names, name) == ["ConnectionEror", "nosuch.module.Error"]


def test_listen_warns_about_a_retry_name_that_matches_nothing(
    tmp_path: Path, server: Beanstalkd, prefix: str
) -> None:
    config = tmp_path / "retry.yml"
    config.write_text(config_text([server.address], categories=("echo",), prefix=prefix,
                                  extra="retry:\n  on: [ConnectionEror]"))
    result = CliRunner().invoke(main, ["--config", str(config), "listen", "--tube", "echo",
                                       "--burst"])
    assert result.exit_code == 0, result.stderr
    assert "retry `on` names ConnectionEror" in result.stderr
