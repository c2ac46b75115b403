"""Loading the YAML configuration (Bystro's beanstalk.yml shape) into strict Structs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from bystroq.errors import ConfigError, UnknownCategory

DEFAULT_PATH = Path("config/beanstalk.yml")
# beanstalkd's priority of a job put without one (0 is the most urgent).
DEFAULT_PRIORITY = 2**16
ENV_VAR = "BYSTROQ_CONFIG"
TEMPLATE_PATH = Path("config/beanstalk.clean.yml")
# A category's listener module when its `listener:` key is absent: the user's own
# `listeners/` package, imported from the working directory (or --app-dir).
DEFAULT_LISTENER_PACKAGE = "listeners"


AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Backoff between attempts: base_s * 2**(attempt-1), capped at max_s, with jitter."""

    base_s: NonNegative = 1.0
    max_s: NonNegative = 300.0
    jitter: bool = True
    # Names of exception classes (e.g. "TimeoutError", "mypkg.errors.Flaky") that retry;
    # empty means every exception retries once a policy is set.
    on: list[str] = msgspec.field(default_factory=list)


class CategoryConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One job category: its two tubes and how its workers run."""

    submission: str
    events: str
    listener: str | None = None
    ttr: AtLeastOne = 60
    max_attempts: AtLeastOne | None = None
    retry: RetryConfig | None = None
    timeout: Positive | None = None
    concurrency: AtLeastOne = 1
    isolation: Literal["inline", "process"] = "inline"


class QueueConf(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The `beanstalkd:` section, as Bystro builds it: `QueueConf(**yaml["beanstalkd"])`."""

    addresses: list[str]
    tubes: dict[str, CategoryConfig]

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("expected at least one address `host:port`")
        for address in self.addresses:
            parse_address(address)
        # Bystro passes plain dicts; accept them as it does.
        for name, conf in list(self.tubes.items()):
            if isinstance(conf, dict):
                self.tubes[name] = msgspec.convert(conf, CategoryConfig)
        _check_tubes_distinct(self.tubes)

    def split_host_port(self) -> list[tuple[str, int]]:
        """The addresses as (host, port) pairs."""
        return [parse_address(a) for a in self.addresses]


def _check_tubes_distinct(tubes: dict[str, CategoryConfig]) -> None:
    """Every submission and events tube belongs to one category and one role: a worker
    that puts its events on the tube it reserves from would take them as jobs forever."""
    seen: dict[str, str] = {}
    for name, conf in tubes.items():
        for role, tube in (("submission", conf.submission), ("events", conf.events)):
            key = f"beanstalkd.tubes.{name}.{role}"
            if tube in seen:
                raise ValueError(
                    f"`{seen[tube]}` and `{key}` both name tube {tube!r}; give each "
                    f"submission and events tube a name of its own"
                )
            seen[tube] = key


class TokenConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A bearer token of the HTTP API: `read` may only look, `write` may also change."""

    token: Annotated[str, msgspec.Meta(min_length=16)]
    access: Literal["read", "write"] = "read"
    name: str | None = None  # shown in logs instead of the token


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A URL every applied event is POSTed to, signed with `secret` (bystroq.ops.hooks)."""

    url: str
    secret: Annotated[str, msgspec.Meta(min_length=16)]
    categories: list[str] = msgspec.field(default_factory=list)  # empty: all


class WebConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The optional `web:` section (bystroq.web): tokens, CORS, idempotency keys,
    webhooks."""

    tokens: list[TokenConfig] = msgspec.field(default_factory=list)
    webhooks: list[WebhookConfig] = msgspec.field(default_factory=list)
    cors_origins: list[str] = msgspec.field(default_factory=list)
    idempotency_ttl_s: Annotated[float, msgspec.Meta(ge=86_400)] = 86_400.0


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The whole file."""

    beanstalkd: QueueConf
    records: str | None = None
    web: WebConfig | None = None


@dataclass(frozen=True)
class Category:
    """A category resolved once: its name, its two tubes, its settings, its listener."""

    name: str
    settings: CategoryConfig
    listener: str  # the module that implements it

    @property
    def submission(self) -> str:
        return self.settings.submission

    @property
    def events(self) -> str:
        return self.settings.events


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and the file it came from."""

    config: Config
    source: str

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.config.beanstalkd.split_host_port()

    def category(self, name: str) -> CategoryConfig:
        """The category called `name`; also found by its submission tube's name."""
        tubes = self.config.beanstalkd.tubes
        if name in tubes:
            return tubes[name]
        for conf in tubes.values():
            if conf.submission == name:
                return conf
        known = ", ".join(sorted(tubes)) or "(none)"
        raise UnknownCategory(
            f"{self.source}: no category or submission tube named {name!r} under "
            f"beanstalkd.tubes; known categories: {known}"
        )

    def category_name(self, name: str) -> str:
        """The category key for a category or submission tube name."""
        conf = self.category(name)
        for key, value in self.config.beanstalkd.tubes.items():
            if value is conf:
                return key
        raise AssertionError("unreachable")

    def listener_module(self, name: str) -> str:
        return self.resolve(name).listener

    def resolve(self, name: str) -> Category:
        """The category called `name` (or whose submission tube it is), resolved."""
        settings = self.category(name)
        key = self.category_name(name)
        listener = settings.listener or f"{DEFAULT_LISTENER_PACKAGE}.{key}"
        return Category(name=key, settings=settings, listener=listener)

    def categories(self) -> list[Category]:
        """Every configured category, in the file's order."""
        return [self.resolve(name) for name in self.config.beanstalkd.tubes]


_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:\s]+):(?P<port>\d+)$")


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` to (host, port); raises ValueError saying what was expected."""
    match = _ADDRESS.match(str(address).strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"address {address!r} is not `host:port` (e.g. 127.0.0.1:11300)")
    return match["host"].strip("[]"), int(match["port"])


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """--config, else $BYSTROQ_CONFIG, else config/beanstalk.yml."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_PATH


def load(path: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """Load and validate the configuration (see `resolve_path` for which file)."""
    resolved = resolve_path(path)
    try:
        text = resolved.read_text()
    except FileNotFoundError:
        how = ("--config" if path is not None else f"${ENV_VAR}" if os.environ.get(ENV_VAR)
               else f"the default (no --config, no ${ENV_VAR})")
        raise ConfigError(
            f"{resolved}: config file not found; copy {TEMPLATE_PATH} (in bystroq's "
            f"repository) there and fill in your servers, or pass --config FILE or set "
            f"{ENV_VAR} (looked there by {how})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{resolved}: cannot read config file: {exc.strerror}") from None
    return parse(text, source=str(resolved))


def parse(text: str, source: str = "<string>") -> LoadedConfig:
    """Validate YAML text; every error names the source, the key and what was expected."""
    try:
        raw = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a `beanstalkd:` key at the top")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(_name_category(raw, str(exc)))}") from None
    return LoadedConfig(config=config, source=source)


def _name_category(raw: dict[str, Any], message: str) -> str:
    """msgspec writes a dict key as `[...]`: put the failing category's name there."""
    if "tubes[...]" not in message:
        return message.replace("`$.beanstalkd`", "`$.beanstalkd.addresses`", 1) if (
            "address" in message
        ) else message
    for name, conf in raw["beanstalkd"]["tubes"].items():
        try:
            msgspec.convert(conf, CategoryConfig)
        except msgspec.ValidationError:
            return message.replace("tubes[...]", f"tubes.{name}")
    return message


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _explain(message: str) -> str:
    """Turn msgspec's `... - at `$.a.b`` into `key a.b: ...` with the fix spelled out."""
    match = _AT.match(message)
    assert match is not None
    what, path = match["what"], (match["path"] or "").lstrip(".")
    unknown = re.match(r"Object contains unknown field `(.+)`", what)
    if unknown:
        key = f"{path}.{unknown[1]}" if path else unknown[1]
        return f"unknown key `{key}`; expected one of: {_expected_keys(path)}"
    missing = re.match(r"Object missing required field `(.+)`", what)
    if missing:
        key = f"{path}.{missing[1]}" if path else missing[1]
        return f"missing key `{key}`; required there: {_required_keys(path)}"
    where = f"key `{path}`: " if path and not what.startswith("`") else ""  # keys named
    return f"{where}{what[0].lower()}{what[1:]}" if what else f"{where}invalid"


def _required_keys(path: str) -> str:
    struct = _struct_at(path)
    fields = msgspec.structs.fields(struct)
    return ", ".join(f.name for f in fields if f.required)


def _expected_keys(path: str) -> str:
    return ", ".join(_struct_at(path).__struct_fields__)


def _struct_at(path: str) -> Any:
    parts = path.split(".") if path else []
    struct: Any = Config
    if parts[:1] == ["beanstalkd"]:
        struct = QueueConf
        if len(parts) >= 3 and parts[1] == "tubes":
            struct = CategoryConfig
            if len(parts) >= 4 and parts[3] == "retry":
                struct = RetryConfig
    return struct
