"""The child process of process isolation: runs one job at a time for its parent worker.

Started as `python -m bystroq.worker.child FD LISTENER_MODULE`; talks msgpack frames
over the inherited socket FD; exits when the parent closes it.
"""

from __future__ import annotations

import socket
import sys

import msgspec

from bystroq.listener import load_listener
from bystroq.messages import JobDecoder
from bystroq.progress import Sender, own_sender
from bystroq.worker.execute import execute
from bystroq.worker.runners import Request, _recv_frame, _send_frame, child_publisher


def main(argv: list[str]) -> int:
    fd, module = int(argv[0]), argv[1]
    listener = load_listener(module)
    decoder = JobDecoder(listener.job_data_type)
    senders: dict[tuple[str, int], Sender] = {}
    with socket.socket(fileno=fd) as sock:
        while True:
            frame = _recv_frame(sock)
            if frame is None:
                return 0
            request = msgspec.msgpack.decode(frame, type=Request)
            job = decoder.decode(request.body)
            publisher = child_publisher(request, job.submissionID)
            key = (request.host, request.port)
            if key not in senders:
                senders[key] = own_sender(*key)
            publisher.sender = senders[key]
            execution, _ = execute(listener, job, publisher, request.fields)
            _send_frame(sock, msgspec.msgpack.encode(execution))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
