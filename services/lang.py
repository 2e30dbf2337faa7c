"""The class's language: which one (``--lang``, ``TICSLAB_LANG``, the locale, a request's
``Accept-Language``) and a text in it.

Every part of the lab that a class reads (the dashboard, the balancer's logs, API errors, the
CLI's banners and errors, the experiments' reports) speaks Spanish or English. Each keeps its
own catalogue of sentences beside its code; this module only chooses the language and looks
a key up, so the choice is made the same way everywhere.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

LANGUAGES = ("es", "en")
LANG_ENV = "TICSLAB_LANG"
# Catalogue: language -> key -> sentence (``str.format`` fields). English is complete; a key
# missing in Spanish falls back to it, and the tests walk every catalogue for gaps.
Catalogue = Mapping[str, Mapping[str, str]]


def language(text: str) -> str:
    """An argparse type: ``es`` or ``en`` (any case), from ``--lang`` or ``TICSLAB_LANG``."""
    value = text.strip().lower()
    if value not in LANGUAGES:
        raise argparse.ArgumentTypeError(f"{text!r}: use {' or '.join(LANGUAGES)}")
    return value


def default_language() -> str:
    """``TICSLAB_LANG`` when it names a language, else the locale's: containers (the images
    have no Spanish locale) and terminals whose locale is not the class's language."""
    try:
        return language(os.environ.get(LANG_ENV, ""))
    except argparse.ArgumentTypeError:
        return locale_language()


def locale_language() -> str:
    """``es`` when the user's locale is Spanish, else ``en``."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(name, "")
        if value:
            return "es" if value.lower().startswith("es") else "en"
    return "en"


def add_lang_argument(parser: argparse.ArgumentParser, what: str = "interface language") -> None:
    """``--lang es|en``; unset means ``default_language()`` (resolve with ``chosen``)."""
    parser.add_argument(
        "--lang",
        type=language,
        choices=LANGUAGES,
        # A string default goes through ``language``: a bad TICSLAB_LANG is a usage error.
        default=os.environ.get(LANG_ENV) or None,
        help=f"{what} (env {LANG_ENV}, else the locale: LC_ALL, LC_MESSAGES, LANG)",
    )


def chosen(lang: str | None) -> str:
    """The language a ``--lang`` value asks for, else the environment's."""
    return lang or default_language()


def accepted_language(header: str | None, default: str) -> str:
    """The first of ``LANGUAGES`` that an ``Accept-Language`` value prefers (by q-value, then
    order), else ``default``. Bounded: a hostile header is read only up to 512 bytes and 16
    ranges, and any malformed part is skipped."""
    if not header:
        return default
    best: tuple[float, int, str] | None = None
    for index, part in enumerate(header[:512].split(",")[:16]):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if primary not in LANGUAGES:
            continue
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                continue
        if not 0 < weight <= 1:
            continue
        if best is None or (-weight, index) < (-best[0], best[1]):
            best = (weight, index, primary)
    return best[2] if best else default


class Translator:
    """``t("key", name=value)``: the text for ``key`` in the chosen language, formatted."""

    def __init__(self, catalogue: Catalogue, lang: str) -> None:
        self.lang = lang if lang in catalogue else "en"
        self._english = catalogue["en"]
        self._catalogue = catalogue[self.lang]

    def knows(self, key: str) -> bool:
        return key in self._english

    def __call__(self, key: str, **values: Any) -> str:
        text = self._catalogue.get(key) or self._english[key]
        if values:
            return text.format(**values)
        # Written for format() (a JSON example's braces doubled), said with nothing to fill in.
        return text.replace("{{", "{").replace("}}", "}")

    def word(self, key: str, otherwise: str) -> str:
        """The text for ``key``, or ``otherwise`` where the catalogue has none (a name from
        the network or a student's code, a kind newer than this catalogue)."""
        return self(key) if self.knows(key) else otherwise


def missing_keys(catalogue: Catalogue) -> dict[str, set[str]]:
    """Per language, the keys English has and it lacks, or has and English lacks (tests)."""
    english = set(catalogue["en"])
    return {lang: english ^ set(texts) for lang, texts in catalogue.items() if english ^ set(texts)}
