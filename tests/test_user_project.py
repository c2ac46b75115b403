"""A user's project with its own `listeners/` package, outside this repository, run with
the installed `bystroq` console script (as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bystroq.testing import Beanstalkd
from tests.conftest import Tubes

BYSTROQ = Path(sys.executable).with_name("bystroq")

THUMBNAIL = '''
from bystroq import BaseMessage, CompletedJobMessage, SubmittedJobMessage


class ThumbnailJob(BaseMessage, frozen=True, kw_only=True):
    width: int


class ThumbnailDone(CompletedJobMessage, frozen=True, kw_only=True):
    pixels: int


job_data_type = ThumbnailJob


def handler_fn(publisher, job):
    return job.width * job.width


def submit_msg_fn(job):
    return SubmittedJobMessage(submissionID=job.submissionID)


def completed_msg_fn(job, pixels):
    return ThumbnailDone(submissionID=job.submissionID, pixels=pixels)
'''


@pytest.fixture
def project(tmp_path: Path, server: Beanstalkd, prefix: str) -> Path:
    """`myproject/` with listeners/thumbnail.py and config/beanstalk.yml (no `listener:`
    key: the default module, listeners.thumbnail)."""
    root = tmp_path / "myproject"
    (root / "listeners").mkdir(parents=True)
    (root / "listeners" / "__init__.py").write_text("")
    (root / "listeners" / "thumbnail.py").write_text(THUMBNAIL)
    (root / "config").mkdir()
    (root / "config" / "beanstalk.yml").write_text(
        f"beanstalkd:\n  addresses: [{server.address}]\n  tubes:\n    thumbnail:\n"
        f"      submission: {prefix}thumbnail\n      events: {prefix}thumbnail_events\n"
        f"records: sqlite:///{root / 'records.db'}\n")
    return root


def bystroq(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BYSTROQ_CONFIG", "PYTHONPATH")}
    return subprocess.run([str(BYSTROQ), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_listen_imports_the_users_listeners_from_the_working_directory(
    project: Path, tubes: Tubes, prefix: str
) -> None:
    assert BYSTROQ.exists(), "the console script is installed beside the interpreter"
    done = bystroq(project, "submit", "--tube", "thumbnail", "--json",
                   '{"submissionID": "t1", "width": 3}')
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # checked against ThumbnailJob, not JSON only
    done = bystroq(project, "listen", "--tube", "thumbnail", "--burst")
    assert done.returncode == 0, done.stderr
    events = tubes.events(f"{prefix}thumbnail_events")
    assert [(e["event"], e.get("pixels")) for e in events] == [("started", None),
                                                               ("completed", 9)]


def test_app_dir_names_the_project_from_elsewhere(
    project: Path, tmp_path: Path, tubes: Tubes, prefix: str
) -> None:
    config = str(project / "config" / "beanstalk.yml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert bystroq(elsewhere, "--config", config, "submit", "--tube", "thumbnail",
                   "--json", '{"submissionID": 1, "width": 2}').returncode == 0
    done = bystroq(elsewhere, "listen", "--tube", "thumbnail", "--burst",
                   "--app-dir", str(project), "--config", config, "--isolation", "process")
    assert done.returncode == 0, done.stderr
    completed = [e for e in tubes.events(f"{prefix}thumbnail_events")
                 if e["event"] == "completed"]
    assert [e["pixels"] for e in completed] == [4]


def test_a_missing_listener_module_says_where_it_looked(project: Path) -> None:
    (project / "listeners" / "thumbnail.py").unlink()
    done = bystroq(project, "listen", "--tube", "thumbnail", "--burst")
    assert done.returncode == 2
    assert "no listener module 'listeners.thumbnail'" in done.stderr
    assert f"searched {project}" in done.stderr and "--app-dir" in done.stderr
    submitted = bystroq(project, "submit", "--tube", "thumbnail", "--json",
                        '{"submissionID": 2, "width": 1}')
    assert submitted.returncode == 0
    assert json.loads(submitted.stdout)["submissionID"] == 2
    assert "checked as JSON objects only" in submitted.stderr
