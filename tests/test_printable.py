"""Text from the network is shown, never obeyed: ``printable`` itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import ACTED_ON

from services.common import printable

ACTED_ON_CHARS = [chr(c) for c in range(0x2070) if ACTED_ON.match(chr(c))]


def acted_on(text: str) -> list[str]:
    return ACTED_ON.findall(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("a\r\nb\tc\x00", "a\\r\\nb\\tc\\x00"),
        ("\x7f\x9b\x85", "\\x7f\\x9b\\x85"),
        ("\u202eevil\u2066\u061c\u200e\u200f", "\\u202eevil\\u2066\\u061c\\u200e\\u200f"),
        ("tarea ñandú 日本 🎉 C:\\tmp [b]x[/b]", "tarea ñandú 日本 🎉 C:\\tmp [b]x[/b]"),
    ],
)
def test_printable_writes_each_control_as_its_python_escape(text: str, shown: str) -> None:
    assert printable(text) == shown


@given(st.text(st.sampled_from(ACTED_ON_CHARS) | st.characters()))
def test_printable_output_holds_nothing_a_terminal_acts_on_and_is_idempotent(text: str) -> None:
    shown = printable(text)
    assert not acted_on(shown)
    assert printable(shown) == shown
    plain = ACTED_ON.sub("", text)
    assert printable(plain) == plain  # everything else is left as it is
