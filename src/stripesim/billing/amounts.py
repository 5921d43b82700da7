"""Amounts in minor units (rounding, proration) and how Stripe words them on invoice lines."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from stripesim.currency import ZERO_DECIMAL

TIMES = "\N{MULTIPLICATION SIGN}"  # Stripe's line descriptions read "3 <times> Seat"
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


def round_minor(value: Decimal) -> int:
    """Round an exact amount half-up to a whole minor unit."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def prorate(amount: int | Decimal, remaining: int, total: int) -> int:
    """Return `amount` for `remaining` of `total` seconds, rounded to the minor unit."""
    if total <= 0:
        return 0
    return round_minor(Decimal(amount) * Decimal(remaining) / Decimal(total))


def fmt_date(ts: int) -> str:
    """Format a date as Stripe's proration wording does: `16 May 2018`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y")


def fmt_money(amount: Decimal, currency: str) -> str:
    """Format a unit price as Stripe's line descriptions do: `$29.00`, `¥1,000`, `$0.005`."""
    currency = currency.lower()
    symbol = _SYMBOLS.get(currency, currency.upper() + " ")
    major = amount if currency in ZERO_DECIMAL else amount / 100
    text = (
        f"{major:,.2f}" if major == major.quantize(Decimal("0.01")) else f"{major.normalize():,f}"
    )
    if currency in ZERO_DECIMAL and major == major.to_integral_value():
        text = f"{int(major):,}"
    return f"{symbol}{text}"


def qty_text(quantity: int | Decimal | None) -> str:
    """Write a quantity without trailing zeros (`3`, `2.5`)."""
    if quantity is None:
        return "0"
    quantity = Decimal(quantity)
    return (
        str(int(quantity))
        if quantity == quantity.to_integral_value()
        else str(quantity.normalize())
    )


def unit_text(price: dict[str, Any]) -> str:
    """Write a price as a line's parenthesis does: `at $29.00 / month`, or `tiered`."""
    if price.get("billing_scheme") == "tiered":
        return "tiered"
    unit = Decimal(price.get("unit_amount_decimal") or 0)
    interval = (price.get("recurring") or {}).get("interval")
    count = (price.get("recurring") or {}).get("interval_count") or 1
    per = (
        ""
        if not interval
        else (f" / {interval}" if count == 1 else f" / every {count} {interval}s")
    )
    return f"at {fmt_money(unit, price['currency'])}{per}"


def line_text(quantity: int | Decimal | None, name: str, price: dict[str, Any]) -> str:
    """Describe a period line: `3 <times> Seat (at $10.00 / month)`."""
    return f"{qty_text(quantity)} {TIMES} {name} ({unit_text(price)})"
