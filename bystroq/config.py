"""Loading the YAML configuration (Bystro's beanstalk.yml shape) into strict Structs."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect
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


# The two generations of Bystro's wire, named by how they spell the submission's id: the
# design document's `submissionID`/`queueID` and, since Feb 2024, camelCase
# `submissionId`/`queueId` (msgspec rename="camel"). bystroq reads both; the top-level
# `wire:` setting says which its workers write.
Wire = Literal["submissionID", "submissionId"]
DEFAULT_WIRE: Wire = "submissionID"

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
    # Refuse jobs with fields the job Struct does not have (a misspelt `widht`): invalid,
    # failed and buried by the worker, refused by `bystroq submit`. Off: such fields are
    # ignored (and `submit` warns).
    strict: bool = False
    # Refuse a submit (DuplicateSubmission) while a submission with the same id is queued
    # or running; needs the records store.
    unique: bool = False


class QueueConf(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The `beanstalkd:` section, as Bystro builds it: `QueueConf(**yaml["beanstalkd"])`."""

    addresses: list[str]
    tubes: dict[str, CategoryConfig]

    def __post_init__(self) -> None:
        _check_addresses(self.addresses)
        # Bystro passes plain dicts; accept them as it does, into a dict of our own (the
        # caller's, often the loaded YAML, is left as it was).
        if any(isinstance(conf, dict) for conf in self.tubes.values()):
            tubes = {name: msgspec.convert(conf, CategoryConfig) if isinstance(conf, dict)
                     else conf for name, conf in self.tubes.items()}
            msgspec.structs.force_setattr(self, "tubes", tubes)
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
    # Which generation of Bystro's wire workers write: `submissionID`/`queueID`, or
    # camelCase `submissionId`/`queueId` (Bystro since Feb 2024). Both are always read.
    wire: Wire = DEFAULT_WIRE
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
            f"beanstalkd.tubes{did_you_mean(name, self.tube_names())}; known categories: "
            f"{known}"
        )

    def tube_names(self) -> list[str]:
        """Every configured name: categories, their submission and events tubes."""
        names: list[str] = []
        for key, conf in self.config.beanstalkd.tubes.items():
            names += [key, conf.submission, conf.events]
        return list(dict.fromkeys(names))

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


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `known`, or "" when none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    problem = _check(raw, Config, "")
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    return LoadedConfig(config=msgspec.convert(raw, Config), source=source)


def _check(raw: dict[Any, Any], struct: type[msgspec.Struct], path: str) -> str | None:
    """What is wrong with `raw` as a `struct` at `path`, key by key, or None.

    Each key is checked on its own (so the error names it without reading msgspec's
    message for a path); then the whole, for the checks across keys (`__post_init__`)."""
    fields = msgspec.structs.fields(struct)
    names = [f.encode_name for f in fields]
    for key in raw:
        if key not in names:
            return f"unknown key `{_join(path, key)}`; expected one of: {', '.join(names)}"
    for f in fields:
        if f.required and f.encode_name not in raw:
            required = ", ".join(g.encode_name for g in fields if g.required)
            return f"missing key `{_join(path, f.encode_name)}`; required there: {required}"
    for f in fields:
        if f.encode_name in raw:
            key = _join(path, f.encode_name)
            problem = _check_value(raw[f.encode_name], f.type, key)
            extra = _FIELD_CHECKS.get((struct, f.encode_name))
            if problem is None and extra is not None:
                try:
                    extra(raw[f.encode_name])
                except ValueError as exc:
                    problem = _at(key, None, str(exc))
            if problem is not None:
                return problem
    try:
        msgspec.convert(raw, struct)
    except msgspec.ValidationError as exc:
        return str(exc)  # a check across keys (`__post_init__`), which names its keys
    return None


def _check_addresses(addresses: list[str]) -> None:
    if not addresses:
        raise ValueError("expected at least one address `host:port`")
    for address in addresses:
        parse_address(address)


_FIELD_CHECKS: dict[tuple[type[msgspec.Struct], str], Callable[[Any], None]] = {
    (QueueConf, "addresses"): _check_addresses,
}


def _check_value(value: Any, kind: Any, path: str) -> str | None:
    """A value of a field: a Struct, a mapping of Structs (the categories), or a plain type."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct) and isinstance(value, dict):
        return _check(value, kind, path)
    struct = _struct_of(kind)
    if struct is not None and isinstance(value, dict):
        return _check(value, struct, path)
    args = typing.get_args(kind)
    if (typing.get_origin(kind) is dict and isinstance(value, dict) and len(args) == 2
            and isinstance(args[1], type) and issubclass(args[1], msgspec.Struct)):
        for name, item in value.items():
            if not isinstance(item, dict):
                return _at(_join(path, name), None, f"expected a mapping, got {item!r}")
            problem = _check(item, args[1], _join(path, name))
            if problem is not None:
                return problem
        return None
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        if typing.get_origin(kind) is typing.Literal:  # name the values allowed
            allowed = ", ".join(map(str, typing.get_args(kind)))
            return _at(path, None, f"{value!r} is not one of: {allowed}")
        return _at(path, exc)
    return None


def _struct_of(kind: Any) -> type[msgspec.Struct] | None:
    """The Struct in `Struct | None`, if that is what `kind` is."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return None
    structs = [arg for arg in typing.get_args(kind)
               if isinstance(arg, type) and issubclass(arg, msgspec.Struct)]
    return structs[0] if len(structs) == 1 else None


def _at(path: str, exc: msgspec.ValidationError | None, text: str = "") -> str:
    what = text or str(exc)
    what = what[0].lower() + what[1:] if what else "invalid"
    return f"key `{path}`: {what}" if path else what


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
