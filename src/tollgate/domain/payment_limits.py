"""Which payment methods may pay an invoice of a given amount (issue 21).

A product that wants bank debits or transfers for large invoices (cards cost 2.9 % + 30¢, ACH
0.8 % capped at $5) sets a card limit per currency, in minor units per invoice: up to it any
method pays; above it only `us_bank_account` or `customer_balance`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tollgate.domain.errors import TollgateError

CARD = "card"
METHODS = (CARD, "us_bank_account", "customer_balance")
ABOVE_CARD_LIMIT = ("us_bank_account", "customer_balance")


class PaymentMethodNotAllowed(TollgateError):
    """The customer's payment method may not pay this much (a card above the card limit)."""

    type = "payment_method_not_allowed"
    status = 400


def parse_card_limits(text: str) -> dict[str, int]:
    """Parse `currency:minor_units,…` (e.g. "usd:100000,eur:90000"); empty means no limit."""
    limits: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        currency, _, amount = entry.partition(":")
        currency = currency.strip().lower()
        if len(currency) != 3 or not currency.isalpha() or not amount.strip().isdigit():
            raise ValueError(f"card limit {entry!r}: write currency:minor_units, e.g. usd:100000")
        if currency in limits:
            raise ValueError(f"card limit for {currency} given twice")
        limits[currency] = int(amount)
    return limits


def allowed_methods(amount_minor: int, currency: str, limits: Mapping[str, int]) -> tuple[str, ...]:
    """Return the payment methods that may pay an invoice of `amount_minor` `currency`."""
    limit = limits.get(currency.lower())
    if limit is None or amount_minor <= limit:
        return METHODS
    return ABOVE_CARD_LIMIT


def check_payment_method(
    method_type: str | None, amount_minor: int, currency: str, limits: Mapping[str, int]
) -> None:
    """Raise PaymentMethodNotAllowed when `method_type` may not pay this invoice."""
    allowed = allowed_methods(amount_minor, currency, limits)
    if method_type is None or method_type in allowed:
        return
    limit = limits[currency.lower()]
    raise PaymentMethodNotAllowed(
        f"a {method_type} may pay at most {limit} minor units of {currency.lower()} per invoice; "
        f"this one is {amount_minor}: pay by {' or '.join(allowed)}",
        param="payment_method",
    )
