"""Which payment methods may pay an invoice of a given amount (issue 21).

A product that wants bank debits or transfers for large invoices (cards cost 2.9 % + 30¢, ACH
0.8 % capped at $5) sets a card limit per currency, in minor units per invoice: up to it any
accepted method pays; above it only the plan's other methods (`us_bank_account`,
`customer_balance`). The limits come from TOLLGATE_CARD_LIMITS, and a plan's `payment_methods`
in the catalog narrows the methods and overrides the limit per currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tollgate.domain.catalog import Plan
from tollgate.domain.errors import TollgateError

CARD = "card"
METHODS = (CARD, "us_bank_account", "customer_balance")


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


@dataclass(frozen=True)
class PaymentPolicy:
    """The methods a plan's invoices may be paid with, and a card's limit per currency."""

    accept: tuple[str, ...] = METHODS
    card_limits: Mapping[str, int] = field(default_factory=dict)

    def methods_for(self, amount_minor: int, currency: str) -> tuple[str, ...]:
        """Return the accepted methods that may pay an invoice of `amount_minor` `currency`."""
        limit = self.card_limits.get(currency.lower())
        if limit is None or amount_minor <= limit:
            return self.accept
        return tuple(method for method in self.accept if method != CARD)

    def is_open(self, amount_minor: int, currency: str) -> bool:
        """Return whether every method may pay (no need to ask Stripe how the customer pays)."""
        return self.methods_for(amount_minor, currency) == METHODS

    def payable_by(self, amount_minor: int, currency: str, plan_id: str) -> tuple[str, ...]:
        """Return the methods that may pay; raise PaymentMethodNotAllowed when none may."""
        allowed = self.methods_for(amount_minor, currency)
        if allowed:
            return allowed
        raise PaymentMethodNotAllowed(
            f"plan {plan_id!r} is paid by card only, and a card may pay at most "
            f"{self.card_limits[currency.lower()]} minor units of {currency.lower()} per invoice; "
            f"this one is {amount_minor}",
            param="plan",
        )

    def check(
        self, method_type: str | None, amount_minor: int, currency: str, plan_id: str
    ) -> None:
        """Raise PaymentMethodNotAllowed when `method_type` may not pay this invoice."""
        allowed = self.payable_by(amount_minor, currency, plan_id)
        if method_type is None or method_type in allowed:
            return
        if method_type == CARD and CARD in self.accept:
            limit = self.card_limits[currency.lower()]
            message = (
                f"a card may pay at most {limit} minor units of {currency.lower()} per invoice; "
                f"this one is {amount_minor}"
            )
        else:
            message = f"plan {plan_id!r} is not paid by {method_type}"
        raise PaymentMethodNotAllowed(
            f"{message}: pay by {' or '.join(allowed)}", param="payment_method"
        )


def policy_for(plan: Plan, card_limits: Mapping[str, int]) -> PaymentPolicy:
    """Return the plan's payment policy: its catalog entry over TOLLGATE_CARD_LIMITS."""
    methods = plan.payment_methods
    if methods is None:
        return PaymentPolicy(METHODS, dict(card_limits))
    return PaymentPolicy(methods.accept, {**card_limits, **methods.card_limit})


def overage_may_pass_card_limit(plan: Plan, card_limits: Mapping[str, int]) -> bool:
    """Return whether usage can take one of the plan's invoices past a card limit: a card pays
    it, a limit applies in one of its currencies, and a feature bills overage."""
    policy = policy_for(plan, card_limits)
    if CARD not in policy.accept:
        return False
    currencies = {price.currency.lower() for price in plan.prices}
    if not currencies & set(policy.card_limits):
        return False
    return any(grant.overage is not None and not grant.hard for grant in plan.features.values())
