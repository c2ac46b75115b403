"""A connection to one beanstalkd server: its socket, its pipelined commands, its backoff.

A reserved job belongs to the connection that reserved it: delete, touch, release and
bury must go over that connection, so a `Reserved` job carries its `Connection`.

A connection counts as up once the server has answered like beanstalkd: until then, an
answer no beanstalkd gives (an HTTP server's, say) fails it with `NotBeanstalkd`, which
names the address and what it answered, and backs off like any other failure.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import greenstalk

from bystroq.beanstalk import framing
from bystroq.beanstalk.framing import Reply, ReplyParser
from bystroq.beanstalk.health import Backoff, Server, ServerDown, ServerHealth, peer_of
from bystroq.errors import NotBeanstalkd

CONNECT_TIMEOUT_S = 5.0
# Socket timeout beyond a command's own wait: a server that stops answering is a dead one.
IO_TIMEOUT_S = 30.0

# What a broken or refused connection raises; greenstalk signals EOF as ConnectionError.
CONNECTION_ERRORS = (OSError, greenstalk.UnknownResponseError)


OnReply = Callable[[Reply], None]


@dataclass
class Connection:
    """One client connection to one server, with the tube it uses and the tubes it watches.

    Connects lazily; after a failure, refuses to reconnect until its backoff delay has
    passed (raising ServerDown), and logs the change of state once, not once per retry.
    `address` is the server as configured (what is connected to); `server`, the server's
    identity (see the module docstring), is known from the first connection on.

    Commands go two ways over the one socket: single commands through greenstalk's public
    API (`client`), and pipelined ones through an outbox (`queue`, `flush`) whose replies
    are parsed here, each handed to its command's callback. Before greenstalk is used, every
    reply still owed is read, so each command meets its own reply. The socket blocks, with
    kernel time-outs as deadlines (no poll before every call).
    """

    address: Server
    use: str = "default"
    watch: Sequence[str] = ()
    io_timeout_s: float = IO_TIMEOUT_S
    backoff: Backoff = field(default_factory=Backoff)
    health: ServerHealth = field(default_factory=ServerHealth)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _sock: socket.socket | None = None
    _greenstalk: greenstalk.Client[bytes] | None = None
    _parser: ReplyParser = field(default_factory=ReplyParser)
    _outbox: list[bytes] = field(default_factory=list)
    _owed: deque[OnReply | None] = field(default_factory=deque)
    _using: str = "default"
    _retry_at: float = 0.0
    _down_since: float | None = None
    last_error: str | None = None  # why the last connect or command failed, for messages
    last_failure: BaseException | None = None
    _max_job_size: int | None = None
    _limit_s: float | None = None
    # Counts connections made: a job reserved under an older generation is no longer held
    # (the server released it when that connection closed).
    generation: int = 0
    _identity: Server | None = None
    _verified: bool = False  # the server has answered as beanstalkd does

    @property
    def server(self) -> Server:
        """The server's name-giving identity: the address the last connection reached (the
        configured address until one did)."""
        return self._identity or self.address

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def client(self) -> greenstalk.Client[bytes]:
        """greenstalk over this connection, connecting first if needed; commands queued are
        sent and the replies still owed read first, so every command meets its own (what
        their callbacks queue waits for the next write)."""
        if self._sock is None:
            self._connect()
        if not self._verified:
            self.queue(b"list-tube-used\r\n")  # its answer shows the server is beanstalkd
        self.settle()
        assert self._greenstalk is not None
        return self._greenstalk

    # -- the outbox --------------------------------------------------------------------

    def queue(self, command: bytes, on_reply: OnReply | None = None) -> None:
        """Add a command to the next write; `on_reply` gets its reply when it is read."""
        self._outbox.append(command)
        self._owed.append(on_reply)

    def flush(self) -> None:
        """Write every queued command in one `sendall` (connecting first if needed)."""
        if not self._outbox:
            return
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._sock.sendall(data)

    def settle(self) -> None:
        """Send what is queued and read every reply owed, handing each to its callback.

        Commands a callback queues are not sent here: they go with the next write (so the
        delete of a job whose event a reply just confirmed rides along with what follows)."""
        self.flush()
        owed, parser = self._owed, self._parser
        left = len(owed)
        while left:
            if not self._verified:
                self._verify()
            replies = parser.take(left)
            if not replies:
                self._receive()
                continue
            left -= len(replies)
            for reply in replies:
                on_reply = owed.popleft()
                if on_reply is not None:
                    on_reply(reply)

    @property
    def owes(self) -> bool:
        """Whether commands are queued or replies still to be read."""
        return bool(self._owed or self._outbox)

    def answered(self) -> bool:
        """Whether a reply owed can be read without waiting (it arrived, at least in part)."""
        sock = self._sock
        if sock is None or not self._owed:
            return False
        if self._parser.pending:
            return True
        return bool(select.select([sock], [], [], 0)[0])

    def fileno(self) -> int:
        """The socket's descriptor, for waiting on several connections at once (-1: none)."""
        return self._sock.fileno() if self._sock is not None else -1

    def owe(self, on_reply: Callable[[bytes, list[bytes]], None]) -> None:
        """A command was sent without reading its reply: `on_reply(status, values)` gets it
        before the next command on this connection."""
        self._owed.append(lambda reply: on_reply(reply.status, reply.values))

    def send(self, commands: Sequence[bytes]) -> None:
        """Write commands in one go, after what is queued; their replies are read with
        `read_reply`, in order, once the replies owed before them are read."""
        if self._sock is None:
            self._connect()
        self._outbox.extend(commands)
        self.flush()
        if self._owed:
            self.settle()

    def read_reply(self) -> Reply:
        """The next reply on the connection; a cut-short reply raises ConnectionError."""
        if self._sock is None:
            raise ConnectionError("the connection was closed")
        return self._read()

    def read_lines(self, count: int, into: list[bytes] | None = None) -> list[bytes]:
        """The next `count` replies, for commands whose replies never have a body (puts),
        as their lines, appended to `into` as they come (so that after a cut it holds
        those that were read)."""
        if self._sock is None:
            raise ConnectionError("the connection was closed")
        out: list[bytes] = [] if into is None else into
        count += len(out)
        while True:
            if not self._verified:
                self._verify()
            out += self._parser.lines(count - len(out))
            if len(out) == count:
                return out
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError(self._parser.cut_short())
            self._parser.feed(data)

    def _receive(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError(self._parser.cut_short())
        self._parser.feed(data)

    def _read(self) -> Reply:
        assert self._sock is not None
        while True:
            if not self._verified:
                self._verify()
            reply = self._parser.next()
            if reply is not None:
                return reply
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError(self._parser.cut_short())
            self._parser.feed(data)

    def _verify(self) -> None:
        """Fail with NotBeanstalkd if the server's first answer is not beanstalkd's; once
        it is, the server counts as up (logged once) and the backoff starts anew."""
        head = self._parser.head(framing.LONGEST_FIRST_LINE)
        said = framing.answered(head)
        if said is not None:
            exc = NotBeanstalkd(self.address.name, said)
            self.failed(exc)
            raise exc
        if b"\r\n" in head:
            self._verified = True
            self.health.up(self.address)
            self._down_since = None
            self.backoff.reset()

    # -- state -------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._down_since is None

    def ready(self) -> bool:
        """False while this connection waits out a backoff delay after a failure."""
        return self._sock is not None or time.monotonic() >= self._retry_at

    @property
    def retry_at(self) -> float:
        """When a connection that failed may be tried again (monotonic clock)."""
        return self._retry_at

    def _connect(self) -> None:
        if time.monotonic() < self._retry_at:
            raise ServerDown(f"{self.address} is down; retrying in backoff")
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port),
                timeout=min(CONNECT_TIMEOUT_S, self._limit_s or CONNECT_TIMEOUT_S),
            )
        except OSError as exc:
            self.failed(exc)
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            _deadlines(sock, min(self.io_timeout_s, self._limit_s or self.io_timeout_s))
            identity = peer_of(sock)
            self._greenstalk = greenstalk.Client(sock, encoding=None)  # sends nothing
        except CONNECTION_ERRORS as exc:
            sock.close()
            self.failed(exc)
            raise
        self._sock = sock
        self._parser.clear()
        self._using = "default"
        self._verified = False
        self._identity = identity
        self.generation += 1
        try:
            self._choose_tubes()
        except CONNECTION_ERRORS as exc:
            self.failed(exc)
            raise

    def _choose_tubes(self) -> None:
        """Use and watch this connection's tubes, in one write (nothing to send when they
        are beanstalkd's defaults), before the commands already queued."""
        queued, owed = self._outbox, self._owed
        self._outbox, self._owed = [], deque()
        watch = list(self.watch) or ["default"]
        if self.use != "default":
            self.queue(framing.use(self.use), _answer(b"USING"))
        for tube in watch:
            if tube != "default":
                self.queue(b"watch %b\r\n" % tube.encode("ascii"), _answer(b"WATCHING"))
        if "default" not in watch:
            self.queue(b"ignore default\r\n", _answer(b"WATCHING"))
        self.settle()
        self._using = self.use
        self._outbox, self._owed = queued, owed

    def limit(self, seconds: float | None) -> None:
        """Bound how long the next connect or command may wait (None: the defaults), so a
        caller's deadline holds even against a server that stopped answering."""
        self._limit_s = None if seconds is None else max(0.05, seconds)
        if self._sock is not None:
            _deadlines(self._sock, min(self.io_timeout_s, self._limit_s or self.io_timeout_s))

    def failed(self, exc: BaseException) -> None:
        """Drop the connection after an I/O error and start (or extend) the backoff."""
        self.close()
        self.last_error = str(exc) or type(exc).__name__
        self.last_failure = exc
        self._retry_at = time.monotonic() + self.backoff.next_delay()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.health.down(self.address, exc)

    def use_tube(self, tube: str) -> greenstalk.Client[bytes]:
        """The client, using `tube` for puts (one `use` command only when it changes)."""
        if self._sock is None:
            self._connect()
        if self._using != tube:
            self.queue(framing.use(tube), _answer(b"USING"))
            self.settle()
            self._using = tube
        return self.client

    @property
    def known_max_job_size(self) -> int | None:
        """The server's max-job-size if this connection asked already (no I/O)."""
        return self._max_job_size

    def max_job_size(self) -> int:
        """The server's max-job-size, asked once per connection."""
        if self._max_job_size is None:
            self._max_job_size = int(self.client.stats()["max-job-size"])
        return self._max_job_size

    def closed_by_server(self) -> bool:
        """Whether the server closed this connection since its last command (it restarted
        or went away): readable while no reply is owed means end of stream or a reset."""
        sock = self._sock
        if sock is None or self._owed:
            return False
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return True  # end of stream (b"") or bytes nobody asked for: either way, start anew

    def interrupt(self) -> None:
        """Wake a command blocked on this connection from another thread (it then fails)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        client, self._greenstalk = self._greenstalk, None
        sock, self._sock = self._sock, None
        self._max_job_size = None
        self._owed = deque()
        self._outbox = []
        self._parser.clear()
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()  # closes the socket too
        elif sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _answer(status: bytes) -> OnReply:
    """A reply callback that raises greenstalk's error for any answer but `status`."""
    def check(reply: Reply) -> None:
        if reply.status != status:
            raise framing.error_for(reply.status, reply.values)
    return check


def _deadlines(sock: socket.socket, seconds: float) -> None:
    """A blocking socket whose reads and writes give up after `seconds` (the kernel's
    SO_RCVTIMEO/SO_SNDTIMEO: no poll before each call, as a Python socket time-out makes)."""
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
