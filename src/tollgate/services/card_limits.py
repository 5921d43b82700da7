"""Usage that takes a renewal past the card limit moves that invoice off cards.

A plan's card limit (`payment_methods.card_limit`, TOLLGATE_CARD_LIMITS) is checked against one
period's price when a subscription is made or changed (`payment_rules`). Overage is billed on the
renewal invoice beside that price, so usage can take the invoice past the limit, and Stripe
would charge all of it to the card. `follow_usage_in_payment_methods` (the worker, every 10
minutes) works out the coming invoice of each live subscription on a plan where that can happen:
a period's price and the overage so far at the rates Tollgate reports to Stripe's meters. It sets
the subscription's `payment_settings.payment_method_types` to the methods that may pay that
amount, and Stripe offers those on the renewal invoice. A new period starts with no usage, so a
later run offers the period's own methods again.

Left alone: subscriptions collected by sending an invoice, or paid by bank transfer, and a plan
that only cards may pay, whose usage no method may pay once past the limit (reported, for the
operator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tollgate.db.queries import billing as queries
from tollgate.domain.errors import InvalidRequest
from tollgate.domain.events import BANK_TRANSFER
from tollgate.domain.metering import overage_spend
from tollgate.domain.payment_limits import (
    PaymentMethodNotAllowed,
    overage_may_pass_card_limit,
    policy_for,
)
from tollgate.domain.subscriptions import Terms, subscription_terms
from tollgate.services import outbox
from tollgate.services.deps import Deps
from tollgate.services.entitlements import (
    BillingCustomer,
    load_billing_customers,
    period_position,
)
from tollgate.services.subscriptions.payment_rules import payment_method_types, period_amount
from tollgate.services.usage.counters import granted
from tollgate.stripe.errors import StripeFailure

log = logging.getLogger("tollgate.subscriptions")


@dataclass
class UsageMethodsReport:
    """What one run did: subscriptions looked at, moved off cards, given cards back."""

    checked: int = 0
    narrowed: list[str] = field(default_factory=list)  # subscription ids
    widened: list[str] = field(default_factory=list)
    unpayable: list[str] = field(default_factory=list)  # past a card-only plan's limit
    failed: list[str] = field(default_factory=list)  # Stripe refused or was away; next run


def follow_usage_in_payment_methods(deps: Deps) -> UsageMethodsReport:
    """Offer each live subscription's coming invoice the methods that may pay it now."""
    report = UsageMethodsReport()
    gateway = deps.optional_stripe()
    catalog, settings, clock = deps.catalog, deps.settings, deps.clock
    plans = [
        plan_id
        for plan_id, plan in catalog.plans.items()
        if overage_may_pass_card_limit(plan, settings.card_limits)
    ]
    if gateway is None or not plans:
        return report
    now = clock.now()
    with deps.db.engine.connect() as connection:
        rows = queries.charged_subscriptions_on(connection, plans)
        customers = load_billing_customers(
            connection, catalog, [row["customer_id"] for row in rows], now
        )
        usage = {
            customer.id: period_position(connection, customer.id, customer.period)[0]
            for customer in customers.values()
        }
    for row in rows:
        customer = customers.get(row["customer_id"])
        if customer is None or customer.subscription_id != row["id"]:
            continue  # not the subscription that bills the customer's plan
        offered = tuple(row["payment_method_types"] or ())
        if offered == (BANK_TRANSFER,):
            continue  # paid by bank transfer: no card to keep off
        report.checked += 1
        try:
            terms = subscription_terms(
                catalog.with_plan_version(customer.plan, customer.plan_version),
                plan_id=str(customer.plan),
                interval=str(customer.interval),
                currency=customer.currency,
                seats=customer.seats,
            )
        except InvalidRequest:
            continue  # a plan or price the catalog no longer has: its terms are unknown
        grants = granted(catalog, customer, now, deps.grace)
        spent = sum(overage_spend(grants, usage[customer.id], customer.currency).values())
        try:
            wanted = tuple(payment_method_types(settings, terms, spent) or ())
        except PaymentMethodNotAllowed:
            report.unpayable.append(row["id"])
            log.warning(
                "subscription %s: usage took its invoice past the card limit of card-only plan %s",
                row["id"],
                terms.plan.id,
            )
            continue
        if set(wanted) == set(offered):
            continue
        target = (
            gateway.for_account(customer.stripe_account) if customer.stripe_account else gateway
        )
        try:
            target.update_subscription(
                row["id"],
                # One key per state of the subscription (its latest event) and set of methods:
                # a run repeated before the webhook lands sends the same request, which Stripe
                # answers once; after another change (a plan change offers the period's methods
                # again) the key is new, so the methods are set again.
                idempotency_key=(
                    f"tollgate:methods:{row['id']}:{row['watermark_event_id']}:"
                    f"{','.join(wanted) or 'any'}"
                ),
                params={"payment_settings": {"payment_method_types": list(wanted) or ""}},
            )
        except StripeFailure as error:
            report.failed.append(row["id"])
            log.warning("subscription %s: payment methods not set: %s", row["id"], error.message)
            continue
        narrowed = bool(wanted) and (not offered or set(wanted) < set(offered))
        (report.narrowed if narrowed else report.widened).append(row["id"])
        if narrowed:
            _tell_customer(deps, customer, terms, spent, wanted)
        log.info(
            "subscription %s: its invoices are offered %s (a period and %s of overage)",
            row["id"],
            ", ".join(wanted) or "any method",
            spent,
        )
    return report


def _tell_customer(
    deps: Deps, customer: BillingCustomer, terms: Terms, spent: int, methods: tuple[str, ...]
) -> None:
    """Queue the `card_limit_passed` email, once a period: the coming invoice, the limit, the
    methods that will collect it."""
    policy = policy_for(terms.plan, deps.settings.card_limits)
    currency = terms.currency
    with deps.db.write_connection() as connection:
        outbox.queue_email(
            connection,
            customer_id=customer.id,
            template="card_limit_passed",
            cause=f"card-limit:{customer.subscription_id}:{customer.period.start.date()}",
            facts={
                "amount": {
                    "amount": period_amount(terms) + spent,
                    "currency": currency,
                },
                "limit": {"amount": policy.card_limits[currency.lower()], "currency": currency},
                "methods": list(methods),
                "renews_at": customer.period.end.isoformat(),
            },
            now=deps.clock.now(),
        )
