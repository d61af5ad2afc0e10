"""The settings' declarations (core/settings.py) against the structs that hold them and the
configuration reference generated from them."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from consumer.settings import ConsumerSettings
from core import settings as declared
from core.config import ConfigError
from core.settings import DECLARED, Process, markdown, read_settings, unit
from ingest.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
STRUCTS: dict[Process, type[msgspec.Struct]] = {"api": Settings, "consumer": ConsumerSettings}


def test_the_configuration_reference_is_generated_from_the_declarations() -> None:
    assert REFERENCE.read_text() == markdown(), (
        "docs/configuration.md differs from core/settings.py's declarations; regenerate it "
        "with `python -m core.settings --markdown > docs/configuration.md`"
    )


@pytest.mark.parametrize("process", sorted(STRUCTS))
def test_each_struct_holds_exactly_its_declared_settings(process: Process) -> None:
    struct = STRUCTS[process]
    wanted = {s.attribute for s in DECLARED if s.read_by in (process, "both") and not s.read_alone}
    assert {field.name for field in msgspec.structs.fields(struct)} == wanted
    # The struct's defaults are the declarations' (what an empty environment reads).
    assert struct() == struct.from_env({})  # type: ignore[attr-defined]


def test_names_are_unique_and_times_and_rates_carry_their_unit() -> None:
    names = [s.env for s in DECLARED]
    assert len(names) == len(set(names))
    for process in STRUCTS:
        fields = [s.attribute for s in DECLARED if s.read_by in (process, "both")]
        assert len(fields) == len(set(fields))
    for setting in DECLARED:
        assert setting.doc and "\n" not in setting.doc and "|" not in setting.doc, setting.env
        if isinstance(setting.default, float):
            assert unit(setting), f"{setting.env}: a number of what? say it in the name"


def test_values_are_parsed_and_checked_with_the_variable_named() -> None:
    env = {"TOPIC_PARTITIONS": " 3 ", "PRODUCE_COALESCE": "false", "MAX_FUTURE_S": "1.5"}
    settings = Settings.from_env(env)
    assert (settings.topic_partitions, settings.produce_coalesce) == (3, False)
    assert settings.max_future_s == 1.5
    assert Settings.from_env({"PRODUCE_COALESCE": "yes"}).produce_coalesce
    with pytest.raises(ConfigError, match="TOPIC_PARTITIONS must be a whole number, got 'x'"):
        Settings.from_env({"TOPIC_PARTITIONS": "x"})
    with pytest.raises(ConfigError, match="TOPIC_PARTITIONS must be at least 1, got 0"):
        ConsumerSettings.from_env({"TOPIC_PARTITIONS": "0"})
    with pytest.raises(ConfigError, match="MAX_BATCH_AGE_S must be a number"):
        ConsumerSettings.from_env({"MAX_BATCH_AGE_S": "soon"})
    consumer = ConsumerSettings.from_env({"CONSUMER_GROUP": "g", "CONSUMER_METRICS_PORT": "9"})
    assert (consumer.group_id, consumer.metrics_port) == ("g", 9)


@pytest.mark.parametrize(
    ("name", "too_large"),
    [
        ("STATS_COSTLY_CONCURRENCY", "1025"),
        ("STATS_COSTLY_WAIT_MS", "60001"),
        ("STATS_ANSWER_CACHE_MB", "65537"),
        ("EXPORT_CONCURRENCY", "65"),
        ("EXPORT_MAX_SENDING", "1025"),
        ("EXPORT_MAX_BYTES", str(64 * 1024**3 + 1)),
        ("EXPORT_SEND_DEADLINE_S", "3600.5"),
        ("EXPORT_MIN_SEND_BYTES_PER_S", str(1024**3 + 1)),
    ],
)
def test_limits_of_the_api_have_a_largest_value(name: str, too_large: str) -> None:
    # A wait, a deadline or a number of slots past these is a typo, not a choice: each would
    # hold a request, a connection or memory for hours.
    with pytest.raises(ConfigError, match=f"{name} must be at most"):
        Settings.from_env({name: too_large})


def test_a_setting_its_process_parses_must_be_given() -> None:
    with pytest.raises(TypeError, match="WRITE_KEYS"):
        declared.WRITE_KEYS.read({})
    with pytest.raises(TypeError, match="not settings of the consumer"):
        read_settings(ConsumerSettings, {}, "consumer", write_keys={})
    # A fresh default each time: a struct's list is its own.
    assert Settings().cors_allow_origins is not Settings().cors_allow_origins
