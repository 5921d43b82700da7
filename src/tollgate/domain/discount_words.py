"""How the billing page says a discount and a grandfathered plan version in words (pure)."""

from __future__ import annotations

from datetime import datetime

from tollgate.money import format_minor


def discount_terms(
    *,
    percent_off: float | None,
    amount_off: int | None,
    currency: str | None,
    duration: str,
    duration_in_months: int | None,
    end: datetime | None,
) -> str:
    """Return what a discount takes off and for how long: "20 % off, forever"."""
    if percent_off is not None:
        off = f"{percent_off:g} % off"
    elif amount_off is not None and currency:
        off = f"{format_minor(amount_off, currency)} off"
    else:
        off = "A discount"
    if duration == "forever":
        return f"{off}, forever"
    if duration == "repeating":
        months = duration_in_months or 1
        span = f"for {months} month{'s' if months != 1 else ''}"
        until = f", until {end.strftime('%b %-d, %Y')}" if end is not None else ""
        return f"{off} each invoice {span}{until}"
    return f"{off} the next invoice"


def version_words(*, version: int | None, newest: int | None) -> str | None:
    """Return how the page names a customer's plan version ("v1 — price kept until you move"),
    or None while the plan has only ever had one version."""
    if version is None or newest is None or newest <= 1:
        return None
    if version < newest:
        return f"v{version} — price kept until you move"
    return f"v{version}"
