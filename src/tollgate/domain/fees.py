"""What a payment costs in processing fees, by method, and what moving to ACH would save."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CARD = "card"
# Stripe's ACH Direct Debit method, and its older name.
ACH_METHODS = frozenset({"us_bank_account", "ach_debit"})


@dataclass(frozen=True)
class FeeSchedule:
    """Cards: a percentage plus a fixed amount; ACH: a percentage up to a cap (minor units)."""

    card_percent: Decimal
    card_fixed: int
    ach_percent: Decimal
    ach_cap: int

    def card_fee(self, amount: int) -> int:
        return _percent(amount, self.card_percent) + self.card_fixed

    def ach_fee(self, amount: int) -> int:
        return min(_percent(amount, self.ach_percent), self.ach_cap)

    def fee(self, amount: int, method: str | None) -> int:
        """Return the fee of a charge of `amount` paid by `method` (unknown methods as cards)."""
        return self.ach_fee(amount) if method in ACH_METHODS else self.card_fee(amount)

    def total(self, charges: Iterable[tuple[int, str | None, int]]) -> int:
        """Return the fees of charges given as (amount, method, how many charged that)."""
        return sum(self.fee(amount, method) * count for amount, method, count in charges)


def method_label(method: str | None) -> str:
    """Return `ach` or `card` (what the schedule prices the method as)."""
    return "ach" if method in ACH_METHODS else CARD


def _percent(amount: int, percent: Decimal) -> int:
    return int((Decimal(amount) * percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def monthly_amount(amount_minor: int, interval: str) -> int:
    """Return a recurring amount normalised to a month (a year's price over 12, rounded)."""
    if interval == "year":
        return int((Decimal(amount_minor) / 12).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return amount_minor
