"""Terminal output: colour and the live bar on a terminal, plain text elsewhere."""

from __future__ import annotations

import os
import pty
import sys

import pytest

SCRIPT = """
from bystroq.cli import render
from bystroq.records.views import BatchStatusView, BatchView
batch = BatchView(batch_id="batch-1", category="echo", state="running", reason=None,
                  total=10, concurrency=2, error_policy="continue", priority=1,
                  created_at=0.0, finished_at=None)
with render.batch_progress("batch-1", 10) as show:
    for done in (0, 5, 10):
        show(BatchStatusView(batch=batch, counts={"failed": 0}, done=done,
                             percent=done * 10.0, rate_per_s=1.0, eta_s=3.0, failures=[]))
render.table(("submission", "state"), [("x", "completed"), ("y", "failed")],
             render.STATE_STYLES)
"""


def on_a_terminal(env: dict[str, str]) -> str:
    """What SCRIPT prints on a pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: runs the script with the pty as its terminal
        os.execve(sys.executable, [sys.executable, "-c", SCRIPT], env)
    out = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    return out.decode()


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")} | {
        "TERM": "xterm-256color"}


def test_a_terminal_gets_colours_and_a_bar(env: dict[str, str]) -> None:
    out = on_a_terminal(env)
    assert "\x1b[32m" in out and "\x1b[31m" in out  # completed green, failed red
    assert "━" in out and "10/10 done, 0 failed" in out


def test_no_color_on_a_terminal_is_plain(env: dict[str, str]) -> None:
    out = on_a_terminal(env | {"NO_COLOR": "1"})
    assert "\x1b[32m" not in out and "\x1b[31m" not in out
    assert "10/10 done, 0 failed" in out


def test_a_pipe_gets_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(SCRIPT, "<script>", "exec"), {})
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert out.splitlines()[:3] == [
        "batch-1: 0/10 done, 0 failed, 1.0/s, ETA 3s",
        "batch-1: 5/10 done, 0 failed, 1.0/s, ETA 3s",
        "batch-1: 10/10 done, 0 failed, 1.0/s, ETA 3s",
    ]
    assert [line.split() for line in out.splitlines()[3:]] == [
        ["submission", "state"], ["x", "completed"], ["y", "failed"]]
