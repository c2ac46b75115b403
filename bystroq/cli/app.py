"""The `bystroq` command group: parses arguments, sets up logging, calls bystroq.ops.

Commands live by topic (jobs, records, servers, batches); everything printed goes through
bystroq.cli.render. Global options (--config, --json-logs, --log-level, --app-dir) are
accepted before or after the command name.
"""

from __future__ import annotations

import click

from bystroq.cli import batches, jobs, records, servers, web, workers
from bystroq.cli.context import BystroqGroup


@click.group(cls=BystroqGroup)
@click.version_option(package_name="bystroq")
def main() -> None:
    """bystroq: jobs on Beanstalkd tubes, with events and submission records."""


for command in (jobs.listen, jobs.submit, jobs.consume, records.status, records.list_records,
                records.cancel, records.retry, servers.stats, servers.peek, servers.kick,
                servers.buried, servers.pause, servers.resume, servers.purge,
                servers.events, batches.batch):
    main.add_command(command)
main.add_command(web.serve)
main.add_command(workers.workers)
