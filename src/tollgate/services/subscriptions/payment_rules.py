"""Which payment methods may pay a plan's invoices, and whether the customer's own may.

The card limits in force for a plan (`TOLLGATE_CARD_LIMITS`) decide the methods its invoices are
offered, or that it is paid by bank transfer unasked; a write charged at once checks the customer's
default payment method against them before Stripe is asked.
"""

from __future__ import annotations

from typing import Any

from tollgate.config import Settings
from tollgate.domain.events import BANK_TRANSFER, SubscriptionSnapshot
from tollgate.domain.payment_limits import PaymentPolicy, policy_for
from tollgate.domain.subscriptions import Terms
from tollgate.services.subscriptions.lookups import OnlineCustomer
from tollgate.stripe.gateway import StripeGateway


def period_amount(terms: Terms) -> int:
    """Return what one period of `terms` invoices (before usage, discounts and tax)."""
    return terms.price.amount_minor * terms.quantity


def _payment_policy(settings: Settings, terms: Terms) -> PaymentPolicy:
    return policy_for(terms.plan, settings.card_limits)


def paid_by(settings: Settings, terms: Terms, asked: str | None) -> str | None:
    """Return how a subscription to `terms` pays: by bank transfer when asked (and the plan
    accepts it) or when the plan accepts nothing else for its amount; None for the customer's
    own payment method. A method the plan does not accept is refused (PaymentMethodNotAllowed)."""
    policy = _payment_policy(settings, terms)
    amount = period_amount(terms)
    if asked is not None:
        policy.check(asked, amount, terms.currency, terms.plan.id)
        return asked
    return BANK_TRANSFER if policy.methods_for(amount, terms.currency) == (BANK_TRANSFER,) else None


def payment_method_types(settings: Settings, terms: Terms, usage: int = 0) -> list[str] | None:
    """Return the methods an invoice of a period of `terms` may be paid with, `usage` (the
    overage so far, minor units) added, or None when any may; raise PaymentMethodNotAllowed
    when none may.

    Stripe offers these on every invoice of the subscription (`payment_settings`), so a
    renewal above the card limit is never charged to a card.
    """
    policy = _payment_policy(settings, terms)
    amount, currency = period_amount(terms) + usage, terms.currency
    if policy.is_open(amount, currency):
        return None
    return list(policy.payable_by(amount, currency, terms.plan.id))


def payment_settings_update(
    settings: Settings, terms: Terms, current: SubscriptionSnapshot
) -> dict[str, Any]:
    """Return the `payment_settings` update that offers a changed subscription's invoices the
    methods its new terms allow (none when they stay as they were)."""
    methods = payment_method_types(settings, terms)
    if methods is None and not current.payment_method_types:
        return {}
    return {"payment_settings": {"payment_method_types": methods or ""}}


def check_card_limit(
    gateway: StripeGateway,
    settings: Settings,
    customer: OnlineCustomer,
    terms: Terms,
    payment_method: str | None = None,
) -> None:
    """Refuse an invoice of `terms` that the customer's default payment method may not pay."""
    policy = _payment_policy(settings, terms)
    amount = period_amount(terms)
    if policy.is_open(amount, terms.currency):
        return  # no limit, or within it: no need to ask Stripe how the customer pays
    policy.payable_by(amount, terms.currency, terms.plan.id)
    method = gateway.default_payment_method_type(customer.stripe_id, payment_method)
    policy.check(method, amount, terms.currency, terms.plan.id)
