"""Talking to beanstalkd: greenstalk (public API) for single and admin commands; `framing`
(sans-IO pipelined commands and replies), `connection` (socket, outbox, deadlines, backoff,
health), `reserved` (a job bound to the connection that reserved it) and `pool` (one
connection per server, pipelined helpers) for the hot paths."""

from bystroq.beanstalk import framing
from bystroq.beanstalk.connection import (
    CONNECT_TIMEOUT_S,
    CONNECTION_ERRORS,
    IO_TIMEOUT_S,
    Connection,
)
from bystroq.beanstalk.framing import Reply, expect, reserved_job
from bystroq.beanstalk.health import (
    Backoff,
    Server,
    ServerDown,
    ServerHealth,
    peer_of,
    servers_of,
)
from bystroq.beanstalk.pool import (
    connections,
    delete_and_reserve_many,
    delete_many,
    delete_then_reserve,
    exchange,
    job_reserves_ttr_pri,
    next_job_id,
    peek_many,
    queue_deletes,
    queue_releases,
    queue_reserves,
    read_reply,
    reserve_many,
    send,
    wait_for_any,
)
from bystroq.beanstalk.reserved import Reserved

put_command = framing.put

__all__ = [
    "CONNECTION_ERRORS",
    "CONNECT_TIMEOUT_S",
    "IO_TIMEOUT_S",
    "Backoff",
    "Connection",
    "Reply",
    "Reserved",
    "Server",
    "ServerDown",
    "ServerHealth",
    "connections",
    "delete_and_reserve_many",
    "delete_many",
    "delete_then_reserve",
    "exchange",
    "expect",
    "job_reserves_ttr_pri",
    "next_job_id",
    "peek_many",
    "peer_of",
    "put_command",
    "queue_deletes",
    "queue_releases",
    "queue_reserves",
    "read_reply",
    "reserve_many",
    "reserved_job",
    "send",
    "servers_of",
    "wait_for_any",
]
