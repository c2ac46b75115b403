"""`bystroq serve`: the HTTP API on uvicorn (extra `web`)."""

from __future__ import annotations

import ipaddress

import click

from bystroq.cli.context import BystroqCommand, State, pass_state, records_option
from bystroq.errors import BystroqError


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command(cls=BystroqCommand)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs tokens.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@records_option
@pass_state
def serve(state: State, host: str, port: int, records_url: str | None) -> None:
    """Serve the HTTP API (/v1, /healthz, /readyz, /metrics, /openapi.json)."""
    try:
        import uvicorn

        from bystroq.web.app import create_app
        from bystroq.web.settings import WebSettings
    except ImportError as exc:
        raise BystroqError(f"bystroq serve needs the web extra: pip install 'bystroq[web]' "
                           f"({exc.name} is missing)") from None
    config = state.config()
    settings = WebSettings.from_config(config, records_url=state.records_url(records_url))
    if not is_loopback(host) and not settings.tokens:
        raise BystroqError(
            f"refusing to serve on {host} without tokens: anyone who reaches it could "
            f"submit and cancel jobs; set `web: tokens:` in {config.source} or "
            f"BYSTROQ_TOKENS (e.g. write:<32 random characters>), or bind 127.0.0.1")
    with state.app():
        app = create_app(config, settings)
        uvicorn.run(app, host=host, port=port, log_level=state.log_level,
                    access_log=False)
