"""Words Tollgate says to people about quantities and prices, in one place.

The entitlement decisions' reasons, the usage emails and the pages all say "1,000 runs" and
"$0.50 per 1,000 runs" the same way.
"""

from __future__ import annotations

from tollgate.domain.catalog import Overage
from tollgate.domain.metering import overage_minor
from tollgate.money import format_minor


class UnitName:
    """A callable giving a feature's unit in the singular (1) or plural (any other count)."""

    def __init__(self, word: str) -> None:
        self.word = word

    def __call__(self, count: int) -> str:
        word = self.word
        if count == 1:
            return word[:-1] if word.endswith("s") and not word.endswith("ss") else word
        if word.endswith("s") or word.isupper() or word[-2:].isupper():
            return word
        return word + "s"


def count_text(count: int, unit_name: UnitName) -> str:
    """Return "1,000 runs" (or "1 run")."""
    return f"{count:,} {unit_name(count)}"


# Rate texts by (overage object, currency, unit): every decision of a metered feature with a
# price says its rate, and money formatting is the costliest part of a decision. The entry
# keeps its overage object, so an id is never reused while it is remembered.
_RATE_TEXTS: dict[tuple[int, str, str], tuple[Overage, str | None]] = {}


def overage_rate_text(overage: Overage, currency: str, unit_name: UnitName) -> str | None:
    """Return "$0.50 per 1,000 runs" (None when the overage has no price in `currency`)."""
    key = (id(overage), currency, unit_name.word)
    found = _RATE_TEXTS.get(key)
    if found is not None and found[0] is overage:
        return found[1]
    if len(_RATE_TEXTS) > 4096:  # catalogs swapped many times: start again
        _RATE_TEXTS.clear()
    text = _rate_text(overage, currency, unit_name)
    _RATE_TEXTS[key] = (overage, text)
    return text


def _rate_text(overage: Overage, currency: str, unit_name: UnitName) -> str | None:
    try:
        price = overage_minor(overage, overage.per, currency)
        exact = overage.amount_in(currency)
    except KeyError:
        return None
    amount = format_minor(exact if exact != price else price, currency)
    per = overage.per
    return f"{amount} per {count_text(per, unit_name) if per > 1 else unit_name(1)}"
