"""The dashboard's options: flags, environment, token file, language and refresh."""

from __future__ import annotations

import argparse

import pytest

from dashboard.options import (
    Options,
    add_arguments,
    options_from_args,
    parse_options,
    resolve_options,
)


def test_options_from_environment_and_token_file(monkeypatch, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("TICSLAB_TOKEN", raising=False)
    monkeypatch.setenv("TICSLAB_URL", "http://10.0.0.5:8080/")
    monkeypatch.setenv("LANG", "es_CL.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.delenv("TICSLAB_LANG", raising=False)
    options = parse_options([])
    assert options == Options(url="http://10.0.0.5:8080", token="from-file", lang="es")
    assert parse_options(["--read-only", "--lang", "en"]).read_only


def test_ticslab_lang_picks_the_language_over_the_locale_and_the_flag_over_both(
    monkeypatch, tmp_path
) -> None:
    """A container has no Spanish locale (LANG=C.UTF-8 in the image): TICSLAB_LANG says."""
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("TICSLAB_LANG", "es")
    assert parse_options([]).lang == "es"
    assert parse_options(["--lang", "en"]).lang == "en"
    assert resolve_options("http://b").lang == "es"  # open_dashboard's path, without argparse
    monkeypatch.setenv("TICSLAB_LANG", "EN")
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    assert parse_options([]).lang == "en"
    assert parse_options(["--lang", "es"]).lang == "es"


def test_a_bad_ticslab_lang_is_a_usage_error_like_a_bad_flag(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TICSLAB_LANG", "fr")
    with pytest.raises(SystemExit) as exit_info:
        parse_options([])
    assert exit_info.value.code == 2
    assert "--lang: 'fr': use es or en" in capsys.readouterr().err
    assert parse_options(["--lang", "es"]).lang == "es"  # a flag replaces the variable


def test_no_token_means_read_only(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(tmp_path / "missing"))
    monkeypatch.delenv("TICSLAB_TOKEN", raising=False)
    assert parse_options(["--url", "http://127.0.0.1:9"]).read_only


def test_bad_refresh_is_refused_in_words(capsys) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        options_from_args(parser.parse_args(["--refresh", "0"]))
    assert "refresh must be between" in capsys.readouterr().err


# A read-only dashboard never reads the token file (issue 23, item 21).


def test_a_read_only_dashboard_does_not_read_the_token_file(monkeypatch, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("TICSLAB_TOKEN", raising=False)
    assert resolve_options("http://b", read_only=True).token is None
    assert parse_options(["--read-only"]).token is None
    assert resolve_options("http://b").token == "from-file"  # control still finds it
