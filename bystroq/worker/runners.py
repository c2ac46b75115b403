"""Where a handler runs: in the worker's own thread (inline) or in a reused child process
that can be killed with its own children (process isolation)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import msgspec

from bystroq.config import Wire
from bystroq.errors import HandlerDied
from bystroq.listener import Listener
from bystroq.messages import ProgressMessage
from bystroq.progress import ProgressPublisher
from bystroq.worker.execute import Execution, execute

_FRAME = struct.Struct("!I")


class Request(msgspec.Struct, kw_only=True):
    """One job for a child process: the raw body and where its events go."""

    body: bytes
    fields: dict[str, Any]
    host: str
    port: int
    events_tube: str
    wire: Wire | None = None


class Runner(Protocol):
    def run(self, job: Any, body: bytes, publisher: ProgressPublisher,
            fields: dict[str, Any]) -> tuple[Execution, BaseException | None]: ...

    def stop(self, reason: BaseException) -> None: ...

    def shield(self) -> contextlib.AbstractContextManager[None]:
        """Hold a stop back while the handler's thread talks to the server."""
        ...

    def close(self) -> None: ...


class _Interrupt(BaseException):
    """Raised inside an inline handler to stop it; not an Exception, so `except Exception`
    in a handler does not swallow it."""


def _async_raise(thread_id: int, exc_type: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


class InlineRunner:
    """Runs the handler in the calling thread; `stop` interrupts it at its next Python
    instruction (a handler blocked in C code stops when that call returns)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self._reason: BaseException | None = None
        self._shielded = 0
        self._held_back = False

    def run(self, job: Any, body: bytes, publisher: ProgressPublisher,
            fields: dict[str, Any]) -> tuple[Execution, BaseException | None]:
        with self._lock:
            self._thread_id = threading.get_ident()
            self._reason = None
        try:
            try:
                return execute(self.listener, job, publisher, fields)
            finally:
                with self._lock:
                    if self._reason is not None:
                        _async_raise(threading.get_ident(), None)  # drop one not yet raised
                    self._thread_id = None
        except _Interrupt:
            assert self._reason is not None
            raise self._reason from None

    def stop(self, reason: BaseException) -> None:
        with self._lock:
            if self._thread_id is not None and self._reason is None:
                self._reason = reason
                if self._shielded:
                    self._held_back = True  # raised when the shield ends
                else:
                    _async_raise(self._thread_id, _Interrupt)

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        """An exception raised into the thread mid-command would leave the connection
        out of step with the server; a stop that comes meanwhile waits for the end."""
        with self._lock:
            if self._reason is not None and not self._held_back:
                # A stop is already on its way into this thread: take it and stop here.
                _async_raise(threading.get_ident(), None)
                raise _Interrupt()
            self._shielded += 1
        try:
            yield
        finally:
            with self._lock:
                self._shielded -= 1
                deliver = self._held_back and not self._shielded
                if deliver:
                    self._held_back = False
            if deliver:
                raise _Interrupt()

    def close(self) -> None:
        pass


class ProcessRunner:
    """Runs handlers in one reused child process (its own process group); `stop` kills the
    group, and the next job gets a fresh child. The child imports the listener by module
    name (the Worker checks that it can: `check_importable`)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reason: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bystroq.worker.child", str(child.fileno()),
             str(self.listener.module)],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True,
        )
        child.close()
        self._sock = parent

    def run(self, job: Any, body: bytes, publisher: ProgressPublisher,
            fields: dict[str, Any]) -> tuple[Execution, BaseException | None]:
        with self._lock:
            self._reason = None
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._spawn()
        assert self._sock is not None
        request = Request(body=body, fields=fields, host=publisher.host, port=publisher.port,
                          events_tube=publisher.queue, wire=publisher.wire)
        try:
            _send_frame(self._sock, msgspec.msgpack.encode(request))
            reply = _recv_frame(self._sock)
        except OSError:
            reply = None
        if reply is None:
            reason = self._reason
            code = self._reap()
            if reason is not None:
                raise reason
            raise HandlerDied(f"handler process exited with {_describe_exit(code)}")
        execution = msgspec.msgpack.decode(reply, type=Execution)
        publisher.last_seq = execution.last_seq
        return execution, None

    def stop(self, reason: BaseException) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
            self._kill()

    def shield(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the child's progress goes over its own connection

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _reap(self) -> int | None:
        """Collect the child's exit status, then kill what is left of its group."""
        with self._lock:
            proc, sock = self._proc, self._sock
            self._proc = self._sock = None
            if sock is not None:
                sock.close()
            if proc is None:
                return None
            try:
                code: int | None = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            self._kill_group(proc)
            if code is None:
                code = proc.wait(timeout=10)
            return code

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        with self._lock:
            self._kill()
        self._reap()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_FRAME.pack(len(payload)) + payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv_frame(sock: socket.socket) -> bytes | None:
    header = _recv_exactly(sock, _FRAME.size)
    if header is None:
        return None
    return _recv_exactly(sock, _FRAME.unpack(header)[0])


def child_publisher(request: Request, submission_id: str | int) -> ProgressPublisher:
    """The publisher a child process gives the handler (its own connection)."""
    message = ProgressMessage(submissionID=submission_id, **request.fields)
    return ProgressPublisher(request.host, request.port, request.events_tube, message,
                             wire=request.wire)
