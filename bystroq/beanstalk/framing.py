"""The beanstalkd protocol without I/O: commands as bytes out, replies parsed in order from
one buffer in.

greenstalk sends one command and waits for its reply; the hot paths (a worker's batch, a
bulk submit, the consumer) write many commands at once and read the replies afterwards,
which this module makes possible. Errors are greenstalk's own classes, picked from its
public table, so callers catch one family whichever path a command took.
"""

from __future__ import annotations

from typing import NamedTuple

import greenstalk

DEFAULT_PRIORITY = 2**16
DEFAULT_TTR = 60

# Replies followed by a body of the size given by their last value.
WITH_BODY = frozenset({b"RESERVED", b"OK", b"FOUND"})
# Every first word of a reply beanstalkd gives (protocol.txt): anything else is another server.
STATUSES = frozenset({
    b"OUT_OF_MEMORY", b"INTERNAL_ERROR", b"BAD_FORMAT", b"UNKNOWN_COMMAND", b"EXPECTED_CRLF",
    b"JOB_TOO_BIG", b"DRAINING", b"INSERTED", b"BURIED", b"USING", b"DEADLINE_SOON",
    b"TIMED_OUT", b"RESERVED", b"DELETED", b"NOT_FOUND", b"RELEASED", b"TOUCHED",
    b"WATCHING", b"NOT_IGNORED", b"FOUND", b"KICKED", b"OK", b"PAUSED",
})
# Bytes after which a first reply without a line end cannot be beanstalkd's.
LONGEST_FIRST_LINE = 256
# Answers that mean "not there" or "nothing ready", not a failure.
ABSENT = frozenset({b"NOT_FOUND", b"TIMED_OUT", b"DEADLINE_SOON"})


class Reply(NamedTuple):
    """One reply: its status word, the values after it, and its body (if it has one)."""

    status: bytes
    values: list[bytes]
    body: bytes | None


# -- commands --------------------------------------------------------------------------------


def put(body: bytes, priority: int = DEFAULT_PRIORITY, delay: int = 0,
        ttr: int = DEFAULT_TTR) -> bytes:
    return b"put %d %d %d %d\r\n%s\r\n" % (priority, delay, ttr, len(body), body)


def reserve(timeout: int) -> bytes:
    return b"reserve-with-timeout %d\r\n" % timeout


def delete(job_id: int) -> bytes:
    return b"delete %d\r\n" % job_id


def touch(job_id: int) -> bytes:
    return b"touch %d\r\n" % job_id


def bury(job_id: int, priority: int = DEFAULT_PRIORITY) -> bytes:
    return b"bury %d %d\r\n" % (job_id, priority)


def release(job_id: int, priority: int = DEFAULT_PRIORITY, delay: int = 0) -> bytes:
    return b"release %d %d %d\r\n" % (job_id, priority, delay)


def kick_job(job_id: int) -> bytes:
    return b"kick-job %d\r\n" % job_id


def stats_job(job_id: int) -> bytes:
    return b"stats-job %d\r\n" % job_id


def peek(job_id: int) -> bytes:
    return b"peek %d\r\n" % job_id


def peek_ready() -> bytes:
    return b"peek-ready\r\n"


def use(tube: str) -> bytes:
    return b"use %s\r\n" % tube.encode("ascii")


# -- replies ---------------------------------------------------------------------------------


class ReplyParser:
    """Replies from a byte stream, in order: `feed` what the socket gave, then take
    `next()` until it returns None (the rest has not arrived yet)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    def feed(self, data: bytes) -> None:
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received and not yet parsed (none between exchanges: the server speaks
        only when spoken to)."""
        return len(self._buffer) - self._start

    def head(self, size: int) -> bytes:
        """Up to `size` bytes received and not yet parsed."""
        return bytes(self._buffer[self._start:self._start + size])

    def cut_short(self) -> str:
        """What the stream ending now cut short, for the error that says so."""
        if not self.pending:
            return "the server closed the connection"
        if self._buffer.find(b"\r\n", self._start) >= 0:
            return "the server closed the connection mid-body"
        return "the server closed the connection mid-reply"

    def next(self) -> Reply | None:
        buffer, start = self._buffer, self._start
        end = buffer.find(b"\r\n", start)
        if end < 0:
            return None
        words = bytes(buffer[start:end]).split()
        if not words:
            raise ConnectionError("the server sent an empty line")
        status, values = words[0], words[1:]
        start = end + 2
        body = None
        if status in WITH_BODY:
            stop = start + int(values[-1])
            if len(buffer) < stop + 2:
                return None
            if buffer[stop:stop + 2] != b"\r\n":
                raise ConnectionError("a reply's body does not end where its size says")
            body = bytes(buffer[start:stop])
            start = stop + 2
        self._start = start
        if start > 65536 and start * 2 > len(buffer):
            del buffer[:start]
            self._start = 0
        return Reply(status, values, body)

    def take(self, limit: int) -> list[Reply]:
        """Up to `limit` whole replies, in order (fewer if the rest has not arrived)."""
        buffer, start = self._buffer, self._start
        out: list[Reply] = []
        append, find, with_body = out.append, buffer.find, WITH_BODY
        size = len(buffer)
        while len(out) < limit:
            end = find(b"\r\n", start)
            if end < 0:
                break
            words = bytes(buffer[start:end]).split()
            if not words:
                raise ConnectionError("the server sent an empty line")
            status = words[0]
            if status in with_body:
                body_start = end + 2
                stop = body_start + int(words[-1])
                if size < stop + 2:
                    break
                if buffer[stop:stop + 2] != b"\r\n":
                    raise ConnectionError("a reply's body does not end where its size says")
                append(Reply(status, words[1:], bytes(buffer[body_start:stop])))
                start = stop + 2
            else:
                append(Reply(status, words[1:], None))
                start = end + 2
        self._start = start
        if start > 65536 and start * 2 > size:
            del buffer[:start]
            self._start = 0
        return out

    def lines(self, count: int) -> list[bytes]:
        """Up to `count` whole reply lines, for replies that never have a body (a put's
        answers), without building a Reply each."""
        buffer, start = self._buffer, self._start
        stop = start
        found = 0
        while found < count:
            end = buffer.find(b"\r\n", stop)
            if end < 0:
                break
            stop = end + 2
            found += 1
        if not found:
            return []
        out = bytes(buffer[start:stop - 2]).split(b"\r\n")
        self._start = stop
        if stop > 65536 and stop * 2 > len(buffer):
            del buffer[:stop]
            self._start = 0
        return out

    def clear(self) -> None:
        self._buffer.clear()
        self._start = 0


def answered(data: bytes | bytearray) -> str | None:
    """What a server's first bytes say when they are not a beanstalkd reply (for the error:
    its first two words, printable); None when they start like one, or are too few to tell."""
    end = data.find(b"\r\n")
    line = bytes(data if end < 0 else data[:end])
    if end < 0 and len(line) < LONGEST_FIRST_LINE:
        return None
    words = line.split(maxsplit=2)
    if words and words[0] in STATUSES:
        return None
    text = b" ".join(words[:2]).decode("ascii", "replace")[:60]
    return "".join(c if c.isprintable() else "?" for c in text) or "nothing readable"


def expect(reply: Reply | tuple[bytes, list[bytes], bytes | None], status: bytes) -> bool:
    """True for `status`, False for an absent job or an empty queue; any other answer
    raises greenstalk's error for it."""
    if reply[0] == status:
        return True
    if reply[0] in ABSENT:
        return False
    raise error_for(reply[0], reply[1])


def error_for(status: bytes, values: list[bytes]) -> Exception:
    """greenstalk's exception for a reply it would have raised on."""
    error: type[greenstalk.Error] | None = greenstalk.ERROR_RESPONSES.get(status)
    if error is None:
        return greenstalk.UnknownResponseError(status, values)
    return error(values)


def reserved_job(reply: Reply | tuple[bytes, list[bytes], bytes | None]
                 ) -> greenstalk.Job[bytes] | None:
    """The job of a RESERVED (or FOUND) answer; None for a time-out or an absent job."""
    status, values, body = reply
    if not expect(reply, b"FOUND" if status == b"FOUND" else b"RESERVED") or body is None:
        return None
    return greenstalk.Job(int(values[0]), body)


def inserted_id(reply: Reply) -> int:
    """The id of a put's INSERTED answer; any other answer raises greenstalk's error."""
    if reply.status == b"INSERTED":
        return int(reply.values[0])
    raise error_for(reply.status, reply.values)


def stat(stats: bytes, key: bytes) -> int:
    """One integer from a stats YAML document, without parsing the whole of it."""
    marker = b"\n" + key + b": "
    start = stats.index(marker) + len(marker)
    return int(stats[start:stats.index(b"\n", start)])
