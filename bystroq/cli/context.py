"""What every command shares: the global options (accepted before or after the command
name), the state they fill in, and opening the records store."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from bystroq import config as config_mod
from bystroq import log
from bystroq.cli import render
from bystroq.errors import BystroqError
from bystroq.listener import use_app_dir
from bystroq.records.store import DEFAULT_URL, Store, open_store

LOG_LEVELS = ("debug", "info", "warning", "error")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """The global options, wherever on the command line they were given."""

    config_path: str | None = None
    json_logs: bool = False
    log_level: str = "info"
    app_dir: str = "."
    _config: config_mod.LoadedConfig | None = field(default=None, repr=False)

    def config(self) -> config_mod.LoadedConfig:
        """The configuration, loaded once."""
        if self._config is None:
            self._config = config_mod.load(self.config_path)
        return self._config

    def records_url(self, url: str | None) -> str:
        return url or self.config().config.records or DEFAULT_URL

    def store(self, url: str | None, read_only: bool = False) -> Store:
        """The records store (`--records`, else the config's, else the default); close it
        with `with`."""
        return open_store(self.records_url(url), read_only=read_only)

    @contextlib.contextmanager
    def app(self) -> Iterator[None]:
        """Listener modules import from --app-dir (default: the working directory) while
        the command runs; sys.path and PYTHONPATH are restored afterwards."""
        saved_path, saved_env = list(sys.path), os.environ.get("PYTHONPATH")
        use_app_dir(self.app_dir)
        try:
            yield
        finally:
            sys.path[:] = saved_path
            if saved_env is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved_env


pass_state = click.make_pass_decorator(State, ensure=True)


def _set(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(State), name, value)

    return callback


def global_options() -> list[click.Option]:
    """--config, --json-logs, --log-level and --app-dir, for the group and every command."""
    return [
        click.Option(["--config", "config_path"], type=click.Path(dir_okay=False),
                     expose_value=False, callback=_set("config_path"), is_eager=True,
                     help="Config file (default: $BYSTROQ_CONFIG, else config/beanstalk.yml)."),
        click.Option(["--json-logs"], is_flag=True, default=None, expose_value=False,
                     callback=_set("json_logs"), help="Log JSON lines instead of key=value."),
        click.Option(["--log-level"], type=click.Choice(LOG_LEVELS), expose_value=False,
                     callback=_set("log_level"), help="Log level (default: info)."),
        click.Option(["--app-dir"], type=click.Path(file_okay=False), expose_value=False,
                     callback=_set("app_dir"),
                     help="Import listener modules from this directory first (default: the "
                          "working directory)."),
    ]


class BystroqCommand(click.Command):
    """A command that also takes the global options, and sets up logging before it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_options())

    def invoke(self, ctx: click.Context) -> Any:
        state = ctx.ensure_object(State)
        log.configure(json=state.json_logs, level=state.log_level)
        return super().invoke(ctx)


class BystroqGroup(click.Group):
    """A group whose commands take the global options; a BystroqError becomes one line on
    stderr and exit code 2, not a traceback."""

    command_class = BystroqCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_options())

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BystroqError as exc:
            render.error(str(exc))
            sys.exit(2)


BystroqGroup.group_class = BystroqGroup

records_option = click.option(
    "--records", "records_url", help="Records store URL: sqlite:///path.db or "
    "postgresql://... (default: the config's `records:`, else sqlite:///bystroq.db).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON (the public schema; see README) instead.")
