"""The one choice of language every part of the lab makes (services/lang.py)."""

from __future__ import annotations

import argparse

import pytest

from services.lang import (
    Translator,
    accepted_language,
    add_lang_argument,
    default_language,
    missing_keys,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("es", "es"),
        ("es-CL,es;q=0.9,en;q=0.8", "es"),
        ("en-US,en;q=0.9,es;q=0.8", "en"),
        ("fr, es;q=0.5", "es"),
        ("en;q=0.2, es;q=0.7", "es"),
        ("es;q=0, en", "en"),  # q=0 means "not this one"
        ("es;q=abc", "en"),
        ("\x1b[31m, es", "es"),
        ("fr, de", "en"),
        ("fr," * 10_000 + "es", "en"),  # read only up to a bound
    ],
)
def test_accept_language_picks_the_preferred_known_language(
    header: str | None, expected: str
) -> None:
    assert accepted_language(header, "en") == expected


def test_the_environment_chooses_before_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "es_CL.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.delenv("TICSLAB_LANG", raising=False)
    assert default_language() == "es"
    monkeypatch.setenv("TICSLAB_LANG", "EN")
    assert default_language() == "en"


def test_a_bad_ticslab_lang_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICSLAB_LANG", "klingon")
    parser = argparse.ArgumentParser()
    add_lang_argument(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_a_key_missing_in_spanish_falls_back_to_english_and_is_reported() -> None:
    catalogue = {"en": {"a": "hello {name}", "b": "bye"}, "es": {"a": "hola {name}"}}
    assert Translator(catalogue, "es")("a", name="Ana") == "hola Ana"
    assert Translator(catalogue, "es")("b") == "bye"
    assert Translator(catalogue, "xx")("a", name="Ana") == "hello Ana"
    assert missing_keys(catalogue) == {"es": {"b"}}


def test_a_sentence_with_nothing_to_fill_in_says_its_doubled_braces_once() -> None:
    """A JSON example is written for format() ({{ }}); said without values it must still read
    as JSON, not with the braces doubled."""
    catalogue = {"en": {"example": 'send JSON like {{"weight": 3}}'}, "es": {}}
    assert Translator(catalogue, "en")("example") == 'send JSON like {"weight": 3}'
    assert Translator(catalogue, "es")("example") == 'send JSON like {"weight": 3}'
