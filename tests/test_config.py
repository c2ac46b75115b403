from __future__ import annotations

from pathlib import Path

import pytest

from bystroq import config
from bystroq.errors import ConfigError, UnknownCategory

BYSTRO_FILE = """\
beanstalkd:
  addresses:
    - 10.0.0.5:11300
    - 10.0.0.6:11301
  tubes:
    annotation:
      submission: annotation
      events: annotation_events
    saveFromQuery:
      submission: saveFromQuery
      events: saveFromQuery_events
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(text, source="conf.yml")
    return str(info.value)


def test_bystro_file_loads_unchanged() -> None:
    loaded = config.parse(BYSTRO_FILE, "conf.yml")
    assert loaded.addresses == [("10.0.0.5", 11300), ("10.0.0.6", 11301)]
    assert loaded.category("annotation").events == "annotation_events"
    assert loaded.category("saveFromQuery").ttr == 60
    assert loaded.listener_module("annotation") == "listeners.annotation"


def test_optional_keys() -> None:
    text = BYSTRO_FILE.replace(
        "      events: annotation_events\n",
        "      events: annotation_events\n      listener: mypkg.annot\n      ttr: 5\n"
        "      max_attempts: 4\n      retry: {base_s: 2, max_s: 60, on: [TimeoutError]}\n"
        "      timeout: 30\n      concurrency: 8\n      isolation: process\n",
    ) + "records: sqlite:///records.db\n"
    loaded = config.parse(text, "conf.yml")
    cat = loaded.category("annotation")
    assert (cat.listener, cat.ttr, cat.max_attempts, cat.timeout) == ("mypkg.annot", 5, 4, 30)
    assert cat.retry is not None and cat.retry.on == ["TimeoutError"]
    assert (cat.concurrency, cat.isolation) == (8, "process")
    assert loaded.config.records == "sqlite:///records.db"


def test_missing_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: config file not found; copy"):
        config.load(tmp_path / "nope.yml")


def test_bad_yaml() -> None:
    assert error_of("beanstalkd: [\n").startswith("conf.yml: not valid YAML")


def test_unknown_key_lists_the_expected_ones() -> None:
    text = BYSTRO_FILE.replace("      events: annotation_events\n",
                               "      events: annotation_events\n      tt: 5\n")
    message = error_of(text)
    assert "conf.yml: unknown key `beanstalkd.tubes.annotation.tt`" in message
    assert "expected one of: submission, events" in message


def test_unknown_top_level_key() -> None:
    assert "unknown key `beanstalk`" in error_of("beanstalk: {}\n")


def test_address_without_port() -> None:
    message = error_of(BYSTRO_FILE.replace("10.0.0.5:11300", "10.0.0.5"))
    assert "key `beanstalkd.addresses`" in message
    assert "'10.0.0.5' is not `host:port`" in message


def test_category_without_events() -> None:
    text = BYSTRO_FILE.replace("      events: saveFromQuery_events\n", "")
    assert error_of(text) == ("conf.yml: missing key `beanstalkd.tubes.saveFromQuery.events`; "
                              "required there: submission, events")


def test_wrong_type() -> None:
    text = BYSTRO_FILE.replace("      events: annotation_events\n",
                               "      events: annotation_events\n      ttr: soon\n")
    assert "key `beanstalkd.tubes.annotation.ttr`: expected `int`, got `str`" in error_of(text)


@pytest.mark.parametrize(("line", "expected"), [
    ("concurrency: 0", "key `beanstalkd.tubes.annotation.concurrency`: expected `int` >= 1"),
    ("ttr: -5", "key `beanstalkd.tubes.annotation.ttr`: expected `int` >= 1"),
    ("max_attempts: 0", "key `beanstalkd.tubes.annotation.max_attempts`: expected `int` >= 1"),
    ("timeout: 0", "key `beanstalkd.tubes.annotation.timeout`: expected `float` > 0.0"),
])
def test_numbers_out_of_range(line: str, expected: str) -> None:
    text = BYSTRO_FILE.replace("      events: annotation_events\n",
                               f"      events: annotation_events\n      {line}\n")
    assert error_of(text) == f"conf.yml: {expected}"


def test_not_a_mapping() -> None:
    assert "expected a mapping" in error_of("- a\n- b\n")


def test_unknown_category_lists_known_ones() -> None:
    loaded = config.parse(BYSTRO_FILE, "conf.yml")
    with pytest.raises(UnknownCategory, match="known categories: annotation, saveFromQuery"):
        loaded.category("nope")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    with pytest.raises(ConfigError, match=r"config/beanstalk\.yml: config file not found"):
        config.load()
    (tmp_path / "config").mkdir()
    (tmp_path / "config/beanstalk.yml").write_text(BYSTRO_FILE)
    assert config.load().source == "config/beanstalk.yml"
    env_file = tmp_path / "env.yml"
    env_file.write_text(BYSTRO_FILE.replace("11300", "11999"))
    monkeypatch.setenv(config.ENV_VAR, str(env_file))
    assert config.load().addresses[0] == ("10.0.0.5", 11999)
    explicit = tmp_path / "explicit.yml"
    explicit.write_text(BYSTRO_FILE.replace("10.0.0.5", "10.9.9.9"))
    assert config.load(explicit).addresses[0] == ("10.9.9.9", 11300)


def test_without_a_config_file_the_error_says_where_it_looked_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    with pytest.raises(ConfigError) as info:
        config.load()
    assert "no --config, no $BYSTROQ_CONFIG" in str(info.value)
    assert "copy config/beanstalk.clean.yml" in str(info.value)


def test_the_template_loads_and_points_at_the_examples() -> None:
    template = Path(__file__).parent.parent / "config" / "beanstalk.clean.yml"
    loaded = config.load(template)
    assert loaded.addresses == [("127.0.0.1", 11300)]
    assert loaded.listener_module("echo") == "bystroq.examples.echo"
    assert loaded.resolve("annotation").listener == "bystroq.examples.annotation"


def test_a_category_is_resolved_once_with_its_name_tubes_and_listener() -> None:
    loaded = config.parse(BYSTRO_FILE, "conf.yml")
    category = loaded.resolve("annotation")  # by its submission tube's name as well
    assert (category.name, category.submission, category.events, category.listener) == (
        "annotation", "annotation", "annotation_events", "listeners.annotation")
    assert category.settings.ttr == 60
    assert [c.name for c in loaded.categories()] == ["annotation", "saveFromQuery"]


@pytest.mark.parametrize(("old", "new", "keys"), [
    ("events: annotation_events", "events: annotation",
     "`beanstalkd.tubes.annotation.submission` and `beanstalkd.tubes.annotation.events`"),
    ("events: saveFromQuery_events", "events: annotation_events",
     "`beanstalkd.tubes.annotation.events` and `beanstalkd.tubes.saveFromQuery.events`"),
    ("submission: saveFromQuery", "submission: annotation_events",
     "`beanstalkd.tubes.annotation.events` and `beanstalkd.tubes.saveFromQuery.submission`"),
])
def test_a_tube_used_twice_is_an_error_naming_both_keys(old: str, new: str, keys: str) -> None:
    """A worker putting events on the tube it reserves from would loop forever."""
    message = error_of(BYSTRO_FILE.replace(old, new))
    assert message.startswith(f"conf.yml: {keys} both name tube ")
    assert "\n" not in message and "a name of its own" in message


def test_bystro_queue_conf_with_a_looping_tube_is_refused() -> None:
    with pytest.raises(ValueError, match="both name tube 'x'"):
        config.QueueConf(addresses=["127.0.0.1:11300"],
                         tubes={"a": {"submission": "x", "events": "x"}})  # type: ignore[dict-item]


@pytest.mark.parametrize(("line", "expected"), [
    ("retry: {base_s: -1}", "key `beanstalkd.tubes.annotation.retry.base_s`: expected "
                            "`float` >= 0.0"),
    ("retry: {bogus: 1}", "unknown key `beanstalkd.tubes.annotation.retry.bogus`; expected "
                          "one of: base_s, max_s, jitter, on"),
    ("isolation: thread", "key `beanstalkd.tubes.annotation.isolation`: 'thread' is not one "
                          "of: inline, process"),
])
def test_nested_keys_are_named_in_full(line: str, expected: str) -> None:
    text = BYSTRO_FILE.replace("      events: annotation_events\n",
                               f"      events: annotation_events\n      {line}\n")
    assert error_of(text) == f"conf.yml: {expected}"


def test_a_category_that_is_not_a_mapping() -> None:
    text = "beanstalkd:\n  addresses: [127.0.0.1:11300]\n  tubes: {annotation: 5}\n"
    assert error_of(text) == "conf.yml: key `beanstalkd.tubes.annotation`: expected a " \
                             "mapping, got 5"
