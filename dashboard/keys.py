"""The key table: one place lists every key, its action, its text, its button and whether it
writes.

The app builds its bindings, its buttons, its help screen and its read-only guard from this
table, so a new control key or button cannot forget to be disabled in read-only mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.i18n import Translator


@dataclass(frozen=True)
class Key:
    keys: str
    action: str
    text: str  # i18n key of the full description (help screen)
    write: bool = False  # sends a control request: refused in read-only mode
    show: bool = True  # shown in the Footer (all keys are in the help screen)
    display: str | None = None
    short: str | None = None  # i18n key of the Footer's word; the full text when None
    button: str | None = None  # i18n key of its button's label; no button when None
    narrow: bool = False  # only under 100 columns (the ``-narrow`` layout): elsewhere refused
    # and not in the Footer, which has no cell to spare at 100 columns

    @property
    def action_name(self) -> str:
        """The action without its arguments, as ``check_action`` receives it."""
        return self.action.partition("(")[0]


# The Footer shows short words so that, at 100 columns, every key shown fits; the help
# screen (``?``) gives the full descriptions.
KEYS: tuple[Key, ...] = (
    Key("question_mark", "help", "key_help", display="?"),
    # Right after ``?``, so that at 80 columns the Footer shows them before it runs out.
    Key("v", "next_panel", "key_next_panel", short="short_next_panel", narrow=True),
    Key("w", "switch_columns", "key_columns", short="short_columns", narrow=True),
    *(
        Key(
            str(n),
            f"toggle_server({n})",
            "key_toggle_n",
            write=True,
            show=n == 1,
            display="1-9" if n == 1 else None,
            short="short_toggle_n",
        )
        for n in range(1, 10)
    ),
    Key("t", "toggle_selected", "key_toggle", write=True, show=False, button="btn_toggle"),
    Key(
        "k", "server_action('kill')", "key_kill", write=True, short="short_kill", button="btn_kill"
    ),
    Key(
        "p",
        "server_action('pause')",
        "key_pause",
        write=True,
        short="short_pause",
        button="btn_pause",
    ),
    Key(
        "u", "server_action('unpause')", "key_unpause", write=True, show=False, button="btn_unpause"
    ),
    Key("d", "drain_toggle", "key_drain", write=True, short="short_drain", button="btn_drain"),
    Key("m", "server_action('maint')", "key_maint", write=True, show=False, button="btn_maint"),
    # Not in the Footer: its button opens the same picker, and the Spanish words for the keys
    # before ``q`` ("Iniciar/detener", "espacio") need its cells at 100 columns.
    Key("f", "fault_menu", "key_fault", write=True, show=False, button="btn_fault"),
    # No buttons (the nine there are fill 100 columns); ``.`` and ``,`` need no Shift.
    Key(
        "greater_than_sign,full_stop",
        "weight(1)",
        "key_weight",
        write=True,
        display="</>",
        short="short_weight",
    ),
    Key(
        "less_than_sign,comma",
        "weight(-1)",
        "key_weight",
        write=True,
        show=False,
        display="<",
        short="short_weight",
    ),
    Key(
        "a",
        "cycle_algorithm",
        "key_algorithm",
        write=True,
        short="short_algorithm",
        button="btn_algorithm",
    ),
    Key("r", "reset_stats", "key_reset", write=True, show=False, button="btn_reset"),
    # Scaling out and in (POST/DELETE /control/servers): in ``?`` only, the Footer is full.
    Key("n", "add_server", "key_add_server", write=True, show=False),
    Key("x", "remove_server", "key_remove_server", write=True, show=False),
    Key("R", "rolling_restart", "key_rollout", write=True, show=False),
    Key("c", "toggle_charts", "key_charts", short="short_charts"),
    # Not in the Footer since the charts took its room at 100 columns in Spanish; in ``?``.
    Key("space", "toggle_refresh", "key_refresh_pause", show=False, short="short_refresh_pause"),
    Key("plus,equals_sign", "refresh_rate(-1)", "key_faster", show=False, display="+"),
    Key("minus", "refresh_rate(1)", "key_slower", show=False, display="-"),
    Key("q", "quit", "key_quit"),
)


def key_label(key: Key, t: Translator) -> str:
    """The key as the footer and the help show it: its ``display`` (``?``, ``1-9``), else its
    first key's name in the chosen language (``espacio``), else that name as Textual has it."""
    return key.display or t.term("keyname", key.keys.split(",")[0])


WRITE_ACTIONS: frozenset[str] = frozenset(key.action_name for key in KEYS if key.write)
NARROW_ACTIONS: frozenset[str] = frozenset(key.action_name for key in KEYS if key.narrow)
# The actions that act on the selected row of the server table: refused while the chart view
# hides the table, so no key acts on a server the screen does not show selected.
ON_SELECTED: frozenset[str] = frozenset(
    {"toggle_selected", "server_action", "drain_toggle", "fault_menu", "weight", "remove_server"}
)
# Each key of those actions (``k``, ``full_stop``...) -> its entry: the chart view names the
# key and what it does when it refuses one.
ON_SELECTED_KEYS: dict[str, Key] = {
    name: key for key in KEYS if key.action_name in ON_SELECTED for name in key.keys.split(",")
}
