"""An address that answers, but not as beanstalkd does: one line saying so, and backoff."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bystroq.beanstalk import Connection, Server, framing
from bystroq.cli import main
from bystroq.errors import NotBeanstalkd
from bystroq.testing import config_text, wait_until

HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Impostor:
    """A TCP server on a free port that answers every connection with `answer`, then
    closes it, counting the connections it accepted."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        """Answer once the client has spoken (as an HTTP server does), then hang up."""
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(4096)
                conn.sendall(self.answer)
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def impostor() -> Iterator[Impostor]:
    server = Impostor(HTTP_ANSWER)
    yield server
    server.close()


@pytest.fixture
def impostor_config(tmp_path: Path, impostor: Impostor) -> Path:
    path = tmp_path / "beanstalk.yml"
    path.write_text(config_text([impostor.address], prefix="imp"))
    return path


@pytest.mark.parametrize(("data", "said"), [
    (b"HTTP/1.1 400 Bad Request\r\n", "HTTP/1.1 400"),
    (b"<!DOCTYPE HTML>\n<html>", None),  # too short to tell without a line end
    (b"<!DOCTYPE HTML>\n" + b"x" * 300, "<!DOCTYPE HTML>"),
    (b"\r\n", "nothing readable"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "SSH-2.0-OpenSSH_9.2"),
    (b"\x00\x01 binary\r\n", "?? binary"),
    (b"INSERTED 5\r\n", None),
    (b"RESERVED 1 2\r\nab\r\n", None),
    (b"USING def", None),
])
def test_first_answer_is_judged_by_its_first_word(data: bytes, said: str | None) -> None:
    assert framing.answered(data) == said


def test_a_connection_to_an_http_server_fails_with_what_it_answered(
    impostor: Impostor,
) -> None:
    conn = Connection(Server("127.0.0.1", impostor.port), watch=("jobs",))
    with pytest.raises(NotBeanstalkd) as caught:
        _ = conn.client
    assert str(caught.value).startswith(
        f'{impostor.address} is not a beanstalkd server (it answered "HTTP/1.1 400")')
    assert not conn.connected and not conn.is_up


def test_failed_attempts_back_off_instead_of_starting_anew(impostor: Impostor) -> None:
    conn = Connection(Server("127.0.0.1", impostor.port))
    for attempt in range(1, 5):
        conn.backoff.cap_s = 0.05  # keep the test quick; what counts is the growing count
        wait_until(conn.ready, timeout_s=5)
        with pytest.raises(NotBeanstalkd):
            _ = conn.client
        assert conn.backoff.failures == attempt  # a TCP connect alone does not reset it


def test_cli_commands_say_it_in_one_line(impostor_config: Path, impostor: Impostor) -> None:
    runner = CliRunner()
    expected = f'{impostor.address} is not a beanstalkd server (it answered "HTTP/1.1 400")'
    stats = runner.invoke(main, ["--config", str(impostor_config), "stats"])
    assert stats.exit_code == 1 and expected in stats.stdout
    submit = runner.invoke(main, [
        "--config", str(impostor_config), "submit", "--tube", "echo", "--no-records",
        "--json", '{"submissionID": 1}'])
    assert submit.exit_code != 0
    lines = [line for line in submit.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0] and "start one" not in lines[0]
    assert "Traceback" not in submit.stderr + submit.stdout


def test_a_worker_logs_it_once_and_backs_off(impostor_config: Path, impostor: Impostor) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "bystroq", "--config", str(impostor_config),
         "listen", "--tube", "echo"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: impostor.accepted >= 4, timeout_s=30)
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out
    assert out.count("is not a beanstalkd server") == 1, out
    assert "server reconnected" not in out
    assert "Traceback" not in out
