"""What the web side is configured with: the config's `web:` section and the environment.

Tokens come from `web: tokens:` and from `BYSTROQ_TOKENS` (comma-separated `access:token`,
access `read` or `write`, e.g. `write:s3cret-for-the-backend,read:s3cret-for-grafana`).
A token is kept only to compare with; its `name` (or a short hash) stands for it in logs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bystroq.config import LoadedConfig, WebConfig, WebhookConfig
from bystroq.errors import ConfigError
from bystroq.records.store import DEFAULT_URL

TOKENS_ENV = "BYSTROQ_TOKENS"
MIN_TOKEN_LENGTH = 16
Access = Literal["read", "write"]


@dataclass(frozen=True)
class Token:
    """A bearer token and what it may do."""

    secret: str = field(repr=False)
    access: Access
    name: str

    def __repr__(self) -> str:  # never the secret
        return f"Token(name={self.name!r}, access={self.access!r})"


@dataclass(frozen=True)
class WebSettings:
    """Everything `create_app` and `create_router` need besides the config."""

    tokens: tuple[Token, ...] = ()
    cors_origins: tuple[str, ...] = ()
    idempotency_ttl_s: float = 86_400.0
    records_url: str = DEFAULT_URL
    # Request bodies above this are refused (413); None: the servers' max-job-size.
    max_body_bytes: int | None = None
    webhooks: tuple[WebhookConfig, ...] = field(default=(), repr=False)

    @classmethod
    def from_config(cls, config: LoadedConfig, environ: Mapping[str, str] | None = None,
                    records_url: str | None = None) -> WebSettings:
        web = config.config.web or WebConfig()
        env = os.environ if environ is None else environ
        tokens = [Token(t.token, t.access, t.name or _label(t.token)) for t in web.tokens]
        tokens += parse_tokens(env.get(TOKENS_ENV, ""))
        return cls(tokens=tuple(tokens), cors_origins=tuple(web.cors_origins),
                   idempotency_ttl_s=web.idempotency_ttl_s, webhooks=tuple(web.webhooks),
                   records_url=records_url or config.config.records or DEFAULT_URL)


def parse_tokens(text: str) -> list[Token]:
    """`read:TOKEN,write:TOKEN` (as in BYSTROQ_TOKENS); a ConfigError names the entry by
    its position, never by its token."""
    tokens = []
    for n, entry in enumerate((e.strip() for e in text.split(",")), 1):
        if not entry:
            continue
        access, _, secret = entry.partition(":")
        if access not in ("read", "write") or len(secret) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{TOKENS_ENV}: entry {n}: expected `read:TOKEN` or `write:TOKEN` with a "
                f"token of at least {MIN_TOKEN_LENGTH} characters")
        tokens.append(Token(secret, "write" if access == "write" else "read", _label(secret)))
    return tokens


def _label(secret: str) -> str:
    return "token-" + hashlib.sha256(secret.encode()).hexdigest()[:8]
