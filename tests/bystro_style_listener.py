"""A listener written the way Bystro's ancestry and annotation listeners are.

Only the two import lines marked below differ from Bystro's (`bystro.beanstalkd.worker`
and `bystro.beanstalkd.messages` became `bystroq.bystro`): messages built positionally and
by keyword, the handler a lambda around a module function, `completed_msg_fn` a closure
inside `main()`, the reporter called like a Ray actor, `QueueConf(**yaml["beanstalkd"])`.

Run: python tests/bystro_style_listener.py --queue_conf FILE --out_name NAME
"""

import argparse  # noqa: I001 (two import lines, as in a Bystro listener)
import logging
import os
import time
from pathlib import Path

from ruamel.yaml import YAML

# from bystro.beanstalkd.messages import (...)  in Bystro
from bystroq.bystro import (
    BaseMessage,
    CompletedJobMessage,
    ProgressPublisher,
    QueueConf,
    Struct,
    SubmittedJobMessage,
    get_progress_reporter,
)

# from bystro.beanstalkd.worker import listen  in Bystro
from bystroq.bystro import listen

logger = logging.getLogger(__name__)

TUBE = "count"


class CountJobData(BaseMessage, frozen=True, rename="camel"):
    """Count the lines of a file."""

    input_path: str
    out_dir: str
    fail: bool = False
    wait_for: str | None = None  # a path: the handler waits until it exists
    exit_code: int | None = None  # the handler's process exits with it


class CountResults(Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    line_count: int
    result_path: str
    handler_pid: int


class CountJobCompleteMessage(CompletedJobMessage, frozen=True, kw_only=True, rename="camel"):
    results: CountResults


def handler_fn(publisher: ProgressPublisher, job_data: CountJobData, out_name: str) -> CountResults:
    reporter = get_progress_reporter(publisher, update_interval=2)
    reporter.message.remote("Counting lines")
    if job_data.wait_for is not None:
        while not os.path.exists(job_data.wait_for):
            time.sleep(0.05)
    if job_data.exit_code is not None:
        os._exit(job_data.exit_code)
    lines = 0
    with open(job_data.input_path) as f:
        for _ in f:
            lines += 1
            reporter.increment.remote(1)
    reporter.increment_and_write_progress_message.remote(0, "Counted", "lines", True)
    if job_data.fail:
        raise ValueError(f"asked to fail after {lines} lines")
    out_path = Path(job_data.out_dir) / out_name
    out_path.write_text(str(lines))
    return CountResults(line_count=lines, result_path=str(out_path), handler_pid=os.getpid())


def submit_msg_fn(job_data: CountJobData) -> SubmittedJobMessage:
    return SubmittedJobMessage(job_data.submission_id)


def main() -> None:
    parser = argparse.ArgumentParser(description="Count lines")
    parser.add_argument("--queue_conf", type=str, required=True)
    parser.add_argument("--out_name", type=str, required=True)
    args = parser.parse_args()

    with open(args.queue_conf, encoding="utf-8") as queue_config_file:
        queue_conf = YAML(typ="safe").load(queue_config_file)

    def completed_msg_fn(
        job_data: CountJobData, results: CountResults
    ) -> CountJobCompleteMessage:
        logger.info("completed %s", job_data.submission_id)
        return CountJobCompleteMessage(submission_id=job_data.submission_id, results=results)

    listen(
        job_data_type=CountJobData,
        handler_fn=lambda publisher, job_data: handler_fn(publisher, job_data, args.out_name),
        submit_msg_fn=submit_msg_fn,
        completed_msg_fn=completed_msg_fn,
        queue_conf=QueueConf(**queue_conf["beanstalkd"]),
        tube=TUBE,
    )


if __name__ == "__main__":
    main()
