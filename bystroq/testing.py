"""Test helpers: real beanstalkd servers on free loopback ports, and configs that use them.

Used by bystroq's own tests and by the scripts; import them in a conftest.py to test your
listeners against a real server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bystroq.config import LoadedConfig, parse


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: object, timeout_s: float = 10.0, interval_s: float = 0.01) -> None:
    """Poll `predicate()` until it is true; raise TimeoutError after `timeout_s`."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s: {predicate!r}")
        time.sleep(interval_s)
        interval_s = min(interval_s * 1.5, 0.2)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Beanstalkd:
    """A beanstalkd process on a free port (or a given one), optionally with a binlog."""

    def __init__(
        self, port: int | None = None, binlog_dir: Path | None = None, host: str = "127.0.0.1",
        max_job_size: int = 1 << 20,
    ) -> None:
        self.host = host
        self.max_job_size = max_job_size
        self.port = port or free_port(host)
        self.binlog_dir = binlog_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Beanstalkd:
        binary = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        args = [binary, "-l", self.host, "-p", str(self.port), "-z", str(self.max_job_size)]
        if self.binlog_dir is not None:
            self.binlog_dir.mkdir(parents=True, exist_ok=True)
            args += ["-b", str(self.binlog_dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not _accepts(self.host, self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"beanstalkd exited at start: {err.strip()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"beanstalkd did not listen on {self.address}")
            time.sleep(0.01)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server abruptly (SIGKILL by default) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self) -> Beanstalkd:
        self.kill()
        return self.start()


@contextmanager
def beanstalkd(
    count: int = 1, binlog_root: Path | None = None
) -> Iterator[list[Beanstalkd]]:
    """`count` fresh servers, stopped on exit."""
    servers = [
        Beanstalkd(binlog_dir=binlog_root / f"b{i}" if binlog_root else None).start()
        for i in range(count)
    ]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


def config_for(
    addresses: Sequence[str],
    categories: Sequence[str] = ("echo", "annotation"),
    prefix: str = "",
    extra: str = "",
    records: str | None = None,
) -> LoadedConfig:
    """A config for the given servers; `prefix` makes tube names unique to one test."""
    text = config_text(addresses, categories, prefix, extra, records)
    return parse(text, source=f"<test config {prefix or 'default'}>")


def config_text(
    addresses: Sequence[str],
    categories: Sequence[str] = ("echo", "annotation"),
    prefix: str = "",
    extra: str = "",
    records: str | None = None,
) -> str:
    """The YAML of `config_for` (to write to a file for a CLI or subprocess)."""
    lines = ["beanstalkd:", "  addresses:"]
    lines += [f"    - {address}" for address in addresses]
    lines.append("  tubes:")
    for name in categories:
        lines += [
            f"    {name}:",
            f"      submission: {prefix}{name}",
            f"      events: {prefix}{name}_events",
            f"      listener: bystroq.examples.{name}",
        ]
        lines += [f"      {line}" for line in extra.splitlines() if line.strip()]
    if records:
        lines.append(f"records: {records}")
    return "\n".join(lines) + "\n"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
