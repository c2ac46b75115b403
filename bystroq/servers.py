"""Connections to beanstalkd servers: one per address, reconnecting with capped backoff.

A reserved job belongs to the connection that reserved it: delete, touch, release and
bury must go over that connection, so a `Reserved` job carries its `Connection`.

A server is named by the address its connection actually reached (`127.0.0.1:11300`,
`[::1]:11300`), not by how a config spells it: `localhost:11300` and `127.0.0.1:11300` are
one server, so records written by a producer match events read by a consumer. The name
stays the same across a server restart on the same address (beanstalkd's own `id` does
not, while a binlog keeps its jobs and their ids). Every process must therefore reach a
server at the same IP: on the server's own machine, configure its network address rather
than 127.0.0.1 if processes elsewhere use that.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import greenstalk
import structlog

from bystroq.errors import ServersUnavailable

CONNECT_TIMEOUT_S = 5.0
# Socket timeout beyond a command's own wait: a server that stops answering is a dead one.
IO_TIMEOUT_S = 30.0

# What a broken or refused connection raises; greenstalk signals EOF as ConnectionError.
CONNECTION_ERRORS = (OSError, greenstalk.UnknownResponseError)


@dataclass(frozen=True, order=True)
class Server:
    """One beanstalkd server's address."""

    host: str
    port: int

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.name


def peer_of(sock: socket.socket) -> Server:
    """The server a connected socket reached, by its IP address in canonical form (an
    IPv4-mapped IPv6 address as IPv4), so that every spelling of one server has one name."""
    host, port = sock.getpeername()[:2]
    try:
        ip = ipaddress.ip_address(host)  # a link-local address keeps its %scope
    except ValueError:  # not an IP socket (e.g. a test's socket pair): keep what it says
        return Server(str(host), int(port))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return Server(str(ip), int(port))


def servers_of(addresses: Iterable[tuple[str, int]]) -> list[Server]:
    """Server objects for (host, port) pairs."""
    return [Server(host, port) for host, port in addresses]


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    base_s: float = 0.1
    cap_s: float = 5.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class ServerHealth:
    """Which servers are down, shared by a process's connections: a change of state is
    logged once per server, not once per connection or per retry."""

    def __init__(self) -> None:
        self._down: dict[Server, float] = {}
        self._lock = threading.Lock()
        self.log = structlog.get_logger("bystroq.servers")

    def down(self, server: Server, exc: BaseException) -> None:
        with self._lock:
            if server in self._down:
                return
            self._down[server] = time.monotonic()
        self.log.warning("server unreachable", server=server.name,
                         error=str(exc) or type(exc).__name__)

    def up(self, server: Server) -> None:
        with self._lock:
            since = self._down.pop(server, None)
        if since is not None:
            self.log.info("server reconnected", server=server.name,
                          down_s=round(time.monotonic() - since, 3))


class ServerDown(ConnectionError):
    """The server is in its backoff window after a failure; try again later."""


@dataclass
class Connection:
    """One client connection to one server, with the tube it uses and the tubes it watches.

    Connects lazily; after a failure, refuses to reconnect until its backoff delay has
    passed (raising ServerDown), and logs the change of state once, not once per retry.
    `address` is the server as configured (what is connected to); `server`, the server's
    identity (see the module docstring), is known from the first connection on.
    """

    address: Server
    use: str = "default"
    watch: Sequence[str] = ()
    io_timeout_s: float = IO_TIMEOUT_S
    backoff: Backoff = field(default_factory=Backoff)
    health: ServerHealth = field(default_factory=ServerHealth)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _client: greenstalk.Client[bytes] | None = None
    _using: str = "default"
    _retry_at: float = 0.0
    _down_since: float | None = None
    _max_job_size: int | None = None
    _limit_s: float | None = None
    _owed: list[Callable[[bytes, list[bytes]], None]] = field(default_factory=list)
    # Counts connections made: a job reserved under an older generation is no longer held
    # (the server released it when that connection closed).
    generation: int = 0
    _identity: Server | None = None

    @property
    def server(self) -> Server:
        """The server's name-giving identity: the address the last connection reached (the
        configured address until one did)."""
        return self._identity or self.address

    @property
    def client(self) -> greenstalk.Client[bytes]:
        """The connected client, connecting first if needed; replies still owed for
        commands sent without waiting are read first, so every command meets its own."""
        if self._client is None:
            self._connect()
        assert self._client is not None
        if self._owed:
            self._read_owed(self._client)
        return self._client

    def owe(self, on_reply: Callable[[bytes, list[bytes]], None]) -> None:
        """A command was sent without reading its reply: `on_reply(status, values)` gets it
        before the next command on this connection."""
        self._owed.append(on_reply)

    def _read_owed(self, client: greenstalk.Client[bytes]) -> None:
        owed, self._owed = self._owed, []
        for on_reply in owed:
            on_reply(*_split(client._reader.readline()))

    @property
    def is_up(self) -> bool:
        return self._down_since is None

    def ready(self) -> bool:
        """False while this connection waits out a backoff delay after a failure."""
        return self._client is not None or time.monotonic() >= self._retry_at

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
        sock.settimeout(min(self.io_timeout_s, self._limit_s or self.io_timeout_s))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            identity = peer_of(sock)
            watch = list(self.watch) or "default"
            self._client = greenstalk.Client(sock, encoding=None, use=self.use, watch=watch)
        except CONNECTION_ERRORS as exc:
            sock.close()
            self.failed(exc)
            raise
        self._using = self.use
        self._identity = identity
        self.generation += 1
        self.health.up(self.address)
        self._down_since = None
        self.backoff.reset()

    def limit(self, seconds: float | None) -> None:
        """Bound how long the next connect or command may wait (None: the defaults), so a
        caller's deadline holds even against a server that stopped answering."""
        self._limit_s = None if seconds is None else max(0.05, seconds)
        if self._client is not None:
            self._client._sock.settimeout(min(self.io_timeout_s,
                                              self._limit_s or self.io_timeout_s))

    def failed(self, exc: BaseException) -> None:
        """Drop the connection after an I/O error and start (or extend) the backoff."""
        self.close()
        self._retry_at = time.monotonic() + self.backoff.next_delay()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.health.down(self.address, exc)

    def use_tube(self, tube: str) -> greenstalk.Client[bytes]:
        """The client, using `tube` for puts (one `use` command only when it changes)."""
        client = self.client
        if self._using != tube:
            client.use(tube)
            self._using = tube
        return client

    def max_job_size(self) -> int:
        """The server's max-job-size, asked once per connection."""
        if self._max_job_size is None:
            self._max_job_size = int(self.client.stats()["max-job-size"])
        return self._max_job_size

    def interrupt(self) -> None:
        """Wake a command blocked on this connection from another thread (it then fails)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError):
                client._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        client, self._client = self._client, None
        self._max_job_size = None
        self._owed = []
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()


@dataclass
class Reserved:
    """A job reserved over `conn`: every later command for it must use `conn`, and only
    while `conn` is still the connection (`generation`) that reserved it."""

    id: int
    body: bytes
    conn: Connection
    generation: int = 0
    priority: int = 2**16

    @property
    def held(self) -> bool:
        """False once the reserving connection was closed (the server released the job)."""
        return self.conn.generation == self.generation and self.conn._client is not None

    @property
    def server(self) -> Server:
        return self.conn.server


def connections(
    servers: Sequence[Server], *, use: str = "default", watch: Sequence[str] = (),
    health: ServerHealth | None = None,
) -> list[Connection]:
    """One (not yet connected) connection per server."""
    health = health or ServerHealth()
    return [Connection(server, use=use, watch=tuple(watch), health=health)
            for server in servers]


def wait_for_any(conns: Sequence[Connection], deadline: float) -> None:
    """Sleep until one connection's backoff ends, or until `deadline`; raise if past it."""
    now = time.monotonic()
    if now >= deadline:
        names = ", ".join(c.address.name for c in conns)
        raise ServersUnavailable(
            f"no beanstalkd server answered ({names}); start one (e.g. `beanstalkd -l 127.0.0.1"
            f" -p 11300`) or fix beanstalkd.addresses in the config"
        )
    soonest = min(c._retry_at for c in conns)
    time.sleep(max(0.01, min(deadline, soonest) - now))


def delete_then_reserve(
    conn: Connection, job_id: int, timeout: int
) -> tuple[bool, greenstalk.Job[bytes] | None]:
    """`delete job_id` and `reserve-with-timeout` in one write: one round trip, not two.

    Returns whether the delete found the job, and the reserved job (None on time-out).
    """
    deleted, reserved = exchange(
        conn, [b"delete %d\r\n" % job_id, b"reserve-with-timeout %d\r\n" % timeout])
    return expect(deleted, b"DELETED"), reserved_job(reserved)


Reply = tuple[bytes, list[bytes], bytes | None]  # status, values, body (if any)
_WITH_BODY = frozenset({b"RESERVED", b"OK", b"FOUND"})


def exchange(conn: Connection, commands: Sequence[bytes]) -> list[Reply]:
    """Send commands in one write and read their replies in order: one round trip.

    greenstalk has no pipelining, so this speaks the protocol over its socket directly.
    """
    send(conn, commands)
    return [read_reply(conn) for _ in commands]


def send(conn: Connection, commands: Sequence[bytes]) -> None:
    """Write commands in one go; read each reply with `read_reply`, in order."""
    conn.client._sock.sendall(b"".join(commands))


def read_reply(conn: Connection) -> Reply:
    """The next reply on the connection; a cut-short reply raises ConnectionError."""
    client = conn._client
    if client is None:
        raise ConnectionError("the connection was closed")
    status, values = _split(client._reader.readline())
    body = _read_body(client, int(values[-1])) if status in _WITH_BODY else None
    return status, values, body


# Answers that mean "not there" or "nothing ready", not a failure.
_ABSENT = frozenset({b"NOT_FOUND", b"TIMED_OUT", b"DEADLINE_SOON"})


def expect(reply: Reply, status: bytes) -> bool:
    """True for `status`, False for an absent job or an empty queue; any other answer
    raises greenstalk's error for it."""
    if reply[0] == status:
        return True
    if reply[0] in _ABSENT:
        return False
    error = greenstalk.ERROR_RESPONSES.get(reply[0])
    if error is None:
        raise greenstalk.UnknownResponseError(reply[0], reply[1])
    raise error(reply[1])


def reserved_job(reply: Reply) -> greenstalk.Job[bytes] | None:
    """The job of a RESERVED (or FOUND) answer; None for a time-out or an absent job."""
    status, values, body = reply
    if not expect(reply, b"FOUND" if status == b"FOUND" else b"RESERVED") or body is None:
        return None
    return greenstalk.Job(int(values[0]), body)


def _split(line: bytes) -> tuple[bytes, list[bytes]]:
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the server closed the connection mid-reply")
    status, *values = line.split()
    return status, values


def _read_body(client: greenstalk.Client[bytes], size: int) -> bytes:
    """A job body and its CRLF; greenstalk's own reader asserts, which is no way to say
    that the connection broke."""
    data = client._reader.read(size + 2)
    if len(data) != size + 2 or not data.endswith(b"\r\n"):
        raise ConnectionError("the server closed the connection mid-body")
    return data[:-2]


def put_command(body: bytes, priority: int = 2**16, delay: int = 0, ttr: int = 60) -> bytes:
    return b"put %d %d %d %d\r\n%s\r\n" % (priority, delay, ttr, len(body), body)


def job_reserves_ttr_pri(
    conn: Connection, job_id: int, delete_first: int | None = None
) -> tuple[int, int, int, bool]:
    """`stats-job`, reading only `reserves`, `ttr` and `pri` (the full YAML parse costs more
    than the round trip on the hot path); `delete_first` (a job whose completed event is
    stored) is deleted in the same round trip. The last value: whether it was deleted."""
    commands = [b"stats-job %d\r\n" % job_id]
    if delete_first is not None:
        commands.insert(0, b"delete %d\r\n" % delete_first)
    replies = exchange(conn, commands)
    deleted = delete_first is not None and replies[0][0] == b"DELETED"
    status, _, stats = replies[-1]
    if status == b"NOT_FOUND":
        raise greenstalk.NotFoundError([])
    if status != b"OK" or stats is None:
        raise greenstalk.UnknownResponseError(status, replies[-1][1])
    return (_stat(stats, b"\nreserves: "), _stat(stats, b"\nttr: "), _stat(stats, b"\npri: "),
            deleted)


def _stat(stats: bytes, key: bytes) -> int:
    start = stats.index(key) + len(key)
    return int(stats[start:stats.index(b"\n", start)])


def reserve_many(conn: Connection, count: int) -> list[greenstalk.Job[bytes]]:
    """Up to `count` ready jobs in one round trip (`reserve-with-timeout 0`, pipelined)."""
    replies = exchange(conn, [b"reserve-with-timeout 0\r\n"] * count)
    return [job for job in map(reserved_job, replies) if job is not None]


def delete_many(conn: Connection, job_ids: Sequence[int]) -> list[int]:
    """Delete jobs in one round trip; returns the ids the server no longer had."""
    replies = exchange(conn, [b"delete %d\r\n" % job_id for job_id in job_ids])
    return [job_id for job_id, reply in zip(job_ids, replies, strict=True)
            if not expect(reply, b"DELETED")]


def peek_many(conn: Connection, job_ids: Sequence[int]) -> dict[int, bytes]:
    """The bodies of the jobs (in any state) that exist among `job_ids`, in one round trip."""
    replies = exchange(conn, [b"peek %d\r\n" % job_id for job_id in job_ids])
    return {job.id: job.body for job in map(reserved_job, replies) if job is not None}


def next_job_id(conn: Connection) -> int:
    """The id the server gives its next job (a marker job is put and deleted to learn it)."""
    client = conn.use_tube("bystroq.marker")
    job_id = client.put(b"", delay=3600)
    client.delete(job_id)
    return int(job_id) + 1
