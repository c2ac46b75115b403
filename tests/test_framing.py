"""The sans-IO protocol: commands as bytes, replies parsed from arbitrary chunks; and the
pipelined connection against a real server."""

from __future__ import annotations

import greenstalk
import pytest

from bystroq.beanstalk import framing
from bystroq.beanstalk.connection import Connection
from bystroq.beanstalk.framing import Reply, ReplyParser
from bystroq.beanstalk.health import Server
from bystroq.beanstalk.pool import exchange
from bystroq.testing import Beanstalkd

STREAM = (b"INSERTED 7\r\nRESERVED 7 5\r\nhello\r\nTIMED_OUT\r\n"
          b"OK 16\r\n---\nreserves: 3\n\r\nDELETED\r\n")


def parse_all(chunks: list[bytes]) -> list[Reply]:
    parser, replies = ReplyParser(), []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next()) is not None:
            replies.append(reply)
    assert parser.pending == 0
    return replies


def test_commands_are_the_protocol_s_bytes() -> None:
    assert framing.put(b"ab", 1, 2, 3) == b"put 1 2 3 2\r\nab\r\n"
    assert framing.reserve(0) == b"reserve-with-timeout 0\r\n"
    assert framing.delete(5) == b"delete 5\r\n"
    assert framing.touch(5) == b"touch 5\r\n"
    assert framing.bury(5, 9) == b"bury 5 9\r\n"
    assert framing.release(5, 9, 2) == b"release 5 9 2\r\n"
    assert framing.kick_job(5) == b"kick-job 5\r\n"
    assert framing.stats_job(5) == b"stats-job 5\r\n"
    assert framing.use("t") == b"use t\r\n"


def test_replies_are_read_in_order_whatever_the_chunks() -> None:
    whole = parse_all([STREAM])
    assert [r.status for r in whole] == [b"INSERTED", b"RESERVED", b"TIMED_OUT", b"OK",
                                         b"DELETED"]
    assert whole[1] == Reply(b"RESERVED", [b"7", b"5"], b"hello")
    assert framing.stat(whole[3].body or b"", b"reserves") == 3
    # Byte by byte, and split inside a body's CRLF: the same replies.
    assert parse_all([STREAM[i:i + 1] for i in range(len(STREAM))]) == whole
    assert parse_all([STREAM[:28], STREAM[28:]]) == whole


def test_a_body_that_does_not_end_where_its_size_says_is_a_broken_connection() -> None:
    parser = ReplyParser()
    parser.feed(b"RESERVED 1 3\r\nhello\r\n")
    with pytest.raises(ConnectionError):
        parser.next()


def test_what_a_stream_cut_short_cut() -> None:
    parser = ReplyParser()
    assert parser.cut_short() == "the server closed the connection"
    parser.feed(b"RESER")
    assert parser.next() is None and parser.cut_short().endswith("mid-reply")
    parser.feed(b"VED 1 5\r\nhe")
    assert parser.next() is None and parser.cut_short().endswith("mid-body")


def test_answers_map_to_greenstalk_s_errors() -> None:
    assert framing.expect(Reply(b"DELETED", [], None), b"DELETED")
    assert not framing.expect(Reply(b"NOT_FOUND", [], None), b"DELETED")
    with pytest.raises(greenstalk.JobTooBigError):
        framing.inserted_id(Reply(b"JOB_TOO_BIG", [], None))
    with pytest.raises(greenstalk.BuriedError):
        framing.inserted_id(Reply(b"BURIED", [b"4"], None))
    with pytest.raises(greenstalk.UnknownResponseError):
        framing.expect(Reply(b"WHAT", [], None), b"DELETED")
    assert framing.inserted_id(Reply(b"INSERTED", [b"12"], None)) == 12
    job = framing.reserved_job(Reply(b"RESERVED", [b"3", b"1"], b"x"))
    assert job is not None and (job.id, job.body) == (3, b"x")
    assert framing.reserved_job(Reply(b"TIMED_OUT", [], None)) is None


def test_the_outbox_writes_at_once_and_hands_each_reply_to_its_command(
        server: Beanstalkd, prefix: str) -> None:
    conn = Connection(Server(server.host, server.port), use=prefix + "t",
                      watch=[prefix + "t"])
    try:
        seen: list[Reply] = []
        for i in range(50):
            conn.queue(framing.put(b"%d" % i), seen.append)
        conn.settle()
        ids = [framing.inserted_id(reply) for reply in seen]
        assert len(ids) == 50 and ids == sorted(ids)
        # Replies owed are read before greenstalk or a plain exchange speak on the socket.
        conn.queue(framing.reserve(0), seen.append)
        conn.flush()
        assert conn.client.stats_tube(prefix + "t")["current-jobs-reserved"] == 1
        assert seen[-1].status == b"RESERVED" and seen[-1].body == b"0"
        (deleted,) = exchange(conn, [framing.delete(ids[0])])
        assert deleted.status == b"DELETED"
    finally:
        conn.close()
