"""Settings: defaults, the MAX_CONCURRENT alias, explicit arguments win, one-line errors."""

from __future__ import annotations

import pytest

from genfleet.errors import SettingsError
from genfleet.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("LLM_", "WRITER_", "OPENAI_", "MAX_CONCURRENT", "RESULT_", "BROKER_")):
            monkeypatch.delenv(name)


def test_defaults_follow_the_seed() -> None:
    s = load_settings()
    assert s.writer_chapter_version_count == 2
    assert s.writer_parallel_generation is True
    assert s.writer_max_parallel_requests == 3
    assert s.genfleet_home.name == ".genfleet"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRITER_CHAPTER_VERSION_COUNT", "5")
    monkeypatch.setenv("WRITER_PARALLEL_GENERATION", "false")
    monkeypatch.setenv("LLM_MAX_RETRIES", "0")
    s = load_settings()
    assert (s.writer_chapter_version_count, s.writer_parallel_generation, s.llm_max_retries) == (
        5,
        False,
        0,
    )


def test_max_concurrent_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT", "7")
    assert load_settings().llm_max_concurrent == 7


def test_explicit_argument_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRITER_MAX_PARALLEL_REQUESTS", "9")
    monkeypatch.setenv("LLM_MAX_CONCURRENT", "9")
    s = load_settings(writer_max_parallel_requests=2, llm_max_concurrent=4)
    assert (s.writer_max_parallel_requests, s.llm_max_concurrent) == (2, 4)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLM_MAX_RETRIES", "9", "LLM_MAX_RETRIES=9 is invalid: allowed 0-5"),
        (
            "WRITER_CHAPTER_VERSION_COUNT",
            "0",
            "WRITER_CHAPTER_VERSION_COUNT=0 is invalid: allowed 1-10",
        ),
        ("WRITER_MAX_PARALLEL_REQUESTS", "11", "allowed 1-10"),
        ("WRITER_PARALLEL_GENERATION", "maybe", "allowed true or false"),
        ("LLM_MAX_CONCURRENT", "abc", "LLM_MAX_CONCURRENT=abc is invalid"),
        ("RESULT_TTL_S", "1", "RESULT_TTL_S=1 is invalid"),
    ],
)
def test_bad_value_is_one_line_naming_variable_value_and_range(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_secret_is_not_echoed_in_errors() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(openai_api_key=12345)
    assert "12345" not in str(info.value)
