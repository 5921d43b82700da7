"""The theme: CSS variables from the brand settings, served as a stylesheet (not inline, so the
pages' CSP needs no 'unsafe-inline')."""

from __future__ import annotations

from tollgate.config import Settings


def _channels(color: str) -> tuple[int, int, int]:
    hex_digits = color.lstrip("#")
    if len(hex_digits) == 3:
        hex_digits = "".join(digit * 2 for digit in hex_digits)
    return int(hex_digits[0:2], 16), int(hex_digits[2:4], 16), int(hex_digits[4:6], 16)


def _luminance(color: str) -> float:
    """Return the WCAG relative luminance of a #rrggbb colour."""

    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(channel) for channel in _channels(color))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def text_on(color: str) -> str:
    """Return white or near-black, whichever reads better on `color` (WCAG contrast)."""
    background = _luminance(color)
    on_white = (1.05) / (background + 0.05)
    on_dark = (background + 0.05) / (_luminance("#111827") + 0.05)
    return "#ffffff" if on_white >= on_dark else "#111827"


def theme_css(settings: Settings) -> str:
    """Return the stylesheet that sets the brand's variables."""
    # Every value was checked against a strict pattern in config.py: no `;`, `{` or `}`.
    return (
        ":root {\n"
        f"  --brand: {settings.brand_color};\n"
        f"  --on-brand: {text_on(settings.brand_color)};\n"
        f"  --font: {settings.brand_font};\n"
        "}\n"
    )
