"""A runner that forks a child for each job, as Bystro ran every handler in a process of
its own: closures and lambdas reach the child without pickling (the fork copies them), and
the result comes back as msgpack over a pipe."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, NoReturn

import msgspec

from bystroq.errors import HandlerDied, Retry
from bystroq.progress import ProgressPublisher, own_sender
from bystroq.worker import Listener
from bystroq.worker.execute import Execution, execute


class ForkRunner:
    """Runs each job's handler in a child process forked for it, as Bystro ran each in a
    process of its own: closures and lambdas need no pickling, since the child already
    has them. The child builds the completed message itself and sends the Execution back
    as msgpack over a pipe; `stop` kills the child's process group."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._pid: int | None = None
        self._reason: BaseException | None = None
        self._lock = threading.Lock()

    def run(self, job: Any, body: bytes, publisher: ProgressPublisher,
            fields: dict[str, Any]) -> tuple[Execution, BaseException | None]:
        read_fd, write_fd = os.pipe()
        with self._lock:
            self._reason = None
            try:
                pid = os.fork()
            except OSError as exc:  # e.g. out of processes or memory: fails this attempt
                os.close(read_fd)
                os.close(write_fd)
                raise HandlerDied(f"cannot fork a process for the handler: {exc}") from None
            if pid == 0:
                os.close(read_fd)
                self._child(write_fd, job, publisher, fields)
            self._pid = pid
        os.close(write_fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # the child does the same; whichever runs first wins
        reply = _read_all(read_fd)
        _, status = os.waitpid(pid, 0)
        with self._lock:
            self._pid = None
            reason = self._reason
        try:
            execution = msgspec.msgpack.decode(reply, type=Execution)
        except msgspec.DecodeError:
            if reason is not None:
                raise reason from None  # stopped: timeout, lease lost, cancel, shutdown
            raise HandlerDied(
                f"handler process exited with {_describe_status(status)}") from None
        publisher.last_seq = execution.last_seq
        return execution, None

    def _child(self, write_fd: int, job: Any, publisher: ProgressPublisher,
               fields: dict[str, Any]) -> NoReturn:
        code = 70
        try:
            os.setpgid(0, 0)  # its own group: a stop kills what the handler started too
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            publisher.sender = own_sender(publisher.host, publisher.port)
            execution, exc = execute(self.listener, job, publisher, fields)
            if exc is not None and not isinstance(exc, Retry):
                execution.error = bystro_reason(exc)
            with os.fdopen(write_fd, "wb") as out:
                out.write(msgspec.msgpack.encode(execution))
            code = 0
        except BaseException:
            code = 70
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def stop(self, reason: BaseException) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
            if self._pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._pid, signal.SIGKILL)

    def shield(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the child's progress goes over its own connection

    def close(self) -> None:
        with self._lock:
            if self._pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._pid, signal.SIGKILL)


def _read_all(fd: int) -> bytes:
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def bystro_reason(err: BaseException) -> str:
    """Bystro's failure reason, `str(err)`; the exception's name when that is empty."""
    return str(err) or type(err).__name__
