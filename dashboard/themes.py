"""The projector theme: pure black and white with saturated accents (no built-in one exists)."""

from __future__ import annotations

from textual.theme import Theme

from dashboard.options import CONTRAST_THEME

HIGH_CONTRAST = Theme(
    name=CONTRAST_THEME,
    primary="#FFFF00",
    secondary="#00FFFF",
    accent="#FFFF00",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#1A1A1A",
    success="#00FF00",
    warning="#FFFF00",
    error="#FF3030",
    dark=True,
    luminosity_spread=0.0,
    text_alpha=1.0,
    variables={
        "footer-key-foreground": "#FFFF00",
        "footer-description-foreground": "#FFFFFF",
        "block-cursor-background": "#FFFF00",
        "block-cursor-foreground": "#000000",
        "border": "#FFFFFF",
    },
)
