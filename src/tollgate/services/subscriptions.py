"""Subscriptions: Checkout, direct subscriptions, plan and seat changes, cancel and resume.

Every write reads the customer's subscription from Stripe first (the mirror may be a webhook
behind), decides with the pure rules of `tollgate.domain.subscriptions`, and then makes one
Stripe call whose idempotency key is derived from the customer's id and the request, so a retry
after a timeout or a 5xx makes nothing twice. The mirror itself follows from the webhooks
Stripe sends about the change. A downgrade waits for the period end as a `PlanChange` row that
`apply_due_plan_changes` makes in Stripe shortly before the renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.models import Customer, PlanChange
from tollgate.db.queries.changes import note_customer_changes
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, CollectionMethod
from tollgate.domain.errors import InvalidRequest, NotFound, TollgateError
from tollgate.domain.events import BANK_TRANSFER, SubscriptionSnapshot
from tollgate.domain.payment_limits import PaymentPolicy, policy_for
from tollgate.domain.subscriptions import (
    TRIAL_END_BEHAVIORS,
    ChangeTiming,
    Collection,
    CurrentTerms,
    Terms,
    bank_transfer_settings,
    change_timing,
    check_proration,
    collection_for,
    customer_plan,
    find_plan,
    is_live,
    plan_of,
    request_id,
    seats_after,
    subscription_terms,
    trial_days_for,
)
from tollgate.domain.tax import require_address
from tollgate.services.customers import (
    APP_ID_KEY,
    billing_currency,
    check_url,
    current_subscription,
    load_customer,
    pending_plan_change,
    shown_plan_version,
    stripe_customer,
)
from tollgate.services.deps import Deps
from tollgate.services.discounts import discount_views
from tollgate.stripe.errors import PaymentDeclined, StripeFailure, StripeNotFound
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import subscription_snapshot
from tollgate_client.views import CheckoutSession, PendingChangeView, SubscriptionView

log = logging.getLogger("tollgate.subscriptions")

# Stripe's decline code for a card whose holder must authenticate the payment (3-D Secure), and
# what a direct subscription answers then: the customer must act on the page at `url`.
AUTHENTICATION_REQUIRED = "authentication_required"
# What Stripe answers when the first payment needs the customer: a card's 3-D Secure, or a bank
# account's micro-deposit verification.
ACTION_NEEDED = frozenset({AUTHENTICATION_REQUIRED, "payment_intent_action_required"})
ACTION_REQUIRED = "action_required"

# A change waiting for the period end is made in Stripe this long before the renewal.
PLAN_CHANGE_LEAD = timedelta(minutes=10)


class CatalogNotSynced(TollgateError):
    """Stripe lacks a price the catalog has: `tollgate catalog sync` has not run."""

    type = "catalog_not_synced"
    status = 503


class AlreadySubscribed(TollgateError):
    """The customer has a live subscription; change it instead of starting another."""

    type = "already_subscribed"
    status = 409


# -- what the services return ----------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionRequest:
    """A PUT: the plan, interval and seats wanted, and how to get there."""

    plan: str
    interval: str
    seats: int | None = None
    proration: str | None = None
    collection_method: str | None = None
    days_until_due: int | None = None
    trial_days: int | None = None
    at_period_end: bool | None = None
    # `customer_balance`: the invoices are paid by bank transfer (issue 21).
    payment_method: str | None = None


# -- reading ---------------------------------------------------------------------------------


def get_subscription(deps: Deps, *, customer_id: str) -> SubscriptionView:
    """Return the customer's subscription from the mirror (plan and status as GET shows them)."""
    return _read_subscription(deps.db, deps.catalog, customer_id)


def _read_subscription(db: Database, catalog: Catalog, customer_id: str) -> SubscriptionView:
    with db.transaction() as session:
        customer = load_customer(session, customer_id)
        subscription = current_subscription(session, customer_id)
        pending = _pending_view(pending_plan_change(session, customer_id))
        derived = plan_of(customer, subscription, catalog.default_plan)
        if subscription is None or not is_live(subscription.status):
            currency = billing_currency(session, customer, catalog)
            return _tollgate_side_view(derived.plan, derived.status, currency)
        return SubscriptionView(
            plan=derived.plan,
            interval=subscription.interval,
            status=derived.status,
            seats=subscription.seats,
            currency=subscription.currency,
            trial_end=subscription.trial_end,
            current_period_start=subscription.current_period_start,
            current_period_end=subscription.current_period_end,
            cancel_at_period_end=subscription.cancel_at_period_end,
            collection_method=subscription.collection_method,
            stripe_subscription_id=subscription.id,
            pending_change=pending,
            plan_version=shown_plan_version(catalog, derived.plan, subscription),
            discounts=discount_views(
                session.connection(), subscription.discount_ids or [], subscription.currency
            ),
        )


def _tollgate_side_view(plan: str | None, status: str, currency: str | None) -> SubscriptionView:
    """Return the view of a plan Tollgate keeps without a Stripe subscription."""
    return SubscriptionView(
        plan=plan,
        interval=None,
        status=status,
        seats=None,
        currency=currency,
        trial_end=None,
        current_period_start=None,
        current_period_end=None,
        cancel_at_period_end=False,
        collection_method=None,
        stripe_subscription_id=None,
    )


def _pending_view(change: PlanChange | None) -> PendingChangeView | None:
    if change is None:
        return None
    return PendingChangeView(change.plan, change.interval, change.seats, change.effective_at)


def _stripe_view(
    snapshot: SubscriptionSnapshot, pending: PendingChangeView | None = None
) -> SubscriptionView:
    """Return the view of a subscription as Stripe just answered it."""
    derived = customer_plan(
        subscription_plan=snapshot.plan,
        subscription_status=snapshot.status,
        cancel_at_period_end=snapshot.cancel_at_period_end,
        cancel_at=snapshot.cancel_at,
        assigned_plan=None,
        offline=False,
        default_plan=None,
    )
    return SubscriptionView(
        plan=snapshot.plan,
        interval=snapshot.interval,
        status=derived.status if is_live(snapshot.status) else snapshot.status,
        seats=snapshot.seats,
        currency=snapshot.currency,
        trial_end=snapshot.trial_end,
        current_period_start=snapshot.current_period_start,
        current_period_end=snapshot.current_period_end,
        cancel_at_period_end=snapshot.cancel_at_period_end,
        collection_method=snapshot.collection_method,
        stripe_subscription_id=snapshot.id,
        pending_change=pending,
        plan_version=snapshot.plan_version,
    )


# -- shared steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customer:
    """What a write needs of the customer, read in one short transaction."""

    id: str
    stripe_id: str
    account: str | None
    currency: str
    state_version: int
    debit_processing: bool = False  # a bank debit of theirs is on its way (not an action)
    address: Mapping[str, Any] | None = None  # the billing address automatic tax goes by


def _online_customer(
    db: Database, catalog: Catalog, gateway: StripeGateway | None, customer_id: str
) -> tuple[_Customer, StripeGateway]:
    with db.transaction() as session:
        row = load_customer(session, customer_id)
        stripe_id, target = stripe_customer(row, gateway)
        currency = billing_currency(session, row, catalog)
        found = _Customer(
            row.id,
            stripe_id,
            row.stripe_account,
            currency,
            row.state_version,
            debit_processing=row.processing_access is not None,
            address=row.address,
        )
    return found, target


def _live_subscription(
    gateway: StripeGateway, stripe_customer_id: str
) -> SubscriptionSnapshot | None:
    """Return the customer's newest live subscription that carries a Tollgate plan, from Stripe."""
    candidates = []
    for raw in gateway.list_subscriptions(stripe_customer_id):
        snapshot = subscription_snapshot(raw)
        if is_live(snapshot.status) and snapshot.plan is not None:
            candidates.append((int(raw.get("created") or 0), snapshot.id, snapshot))
    if not candidates:
        return None
    return max(candidates, key=lambda found: (found[0], found[1]))[2]


def _price_ids(gateway: StripeGateway, keys: list[str]) -> dict[str, str]:
    try:
        return gateway.price_ids(keys)
    except StripeNotFound as error:
        raise CatalogNotSynced(error.message) from error


def _fee(settings: Settings, customer: _Customer) -> Decimal | None:
    """Return the platform's fee percent for a connected account's subscription, else None."""
    return settings.application_fee_percent if customer.account else None


def _terms_for(
    catalog: Catalog, customer: _Customer, plan_id: str, interval: str, seats: int | None
) -> Terms:
    return subscription_terms(
        catalog, plan_id=plan_id, interval=interval, currency=customer.currency, seats=seats
    )


# -- Checkout --------------------------------------------------------------------------------


def start_checkout(
    deps: Deps,
    *,
    customer_id: str,
    plan: str,
    interval: str,
    success_url: str,
    cancel_url: str,
    trial_days: int | None = None,
    seats: int | None = None,
    idempotency_key: str | None = None,
) -> CheckoutSession:
    """Open a Checkout Session that subscribes the customer to a plan; its completion arrives
    as webhooks (`checkout.session.completed`), which flip the customer to the plan."""
    db, catalog, gateway, settings = deps.db, deps.catalog, deps.optional_stripe(), deps.settings
    check_url(success_url, "success_url")
    check_url(cancel_url, "cancel_url")
    chosen = find_plan(catalog, plan)
    if chosen.custom:
        raise InvalidRequest(
            f"plan {chosen.id!r} is sales-led (custom): it is not sold through Checkout; "
            "subscribe the customer with PUT /v1/customers/{id}/subscription",
            param="plan",
        )
    customer, target = _online_customer(db, catalog, gateway, customer_id)
    terms = _terms_for(catalog, customer, plan, interval, seats)
    days = trial_days_for(terms.plan, trial_days)
    # Checkout offers only the methods that may pay the plan's invoices (a trial's first paid
    # one included); a plan no method may pay at this amount is refused before Stripe is asked.
    methods = _payment_method_types(settings, terms)
    with db.transaction() as session:
        mirrored = current_subscription(session, customer_id)
        if mirrored is not None and is_live(mirrored.status):
            raise _already_subscribed(customer_id, mirrored.plan, mirrored.status)
    live = _live_subscription(target, customer.stripe_id)
    if live is not None:
        raise _already_subscribed(customer_id, live.plan, live.status)
    prices = _price_ids(target, [terms.lookup_key, *terms.overage_lookup_keys.values()])
    lines: list[tuple[str, int | None]] = [(prices[terms.lookup_key], terms.quantity)]
    lines += [(prices[key], None) for key in terms.overage_lookup_keys.values()]
    asked = {
        "plan": terms.plan.id,
        "interval": terms.interval,
        "currency": terms.currency,
        "seats": terms.quantity,
        "trial_days": days,
        "payment_method_types": methods,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    key = request_id(idempotency_key, asked, customer.state_version)
    session_id, url = target.open_checkout_session(
        idempotency_key=f"checkout-create-{customer_id}-{key}",
        stripe_customer_id=customer.stripe_id,
        line_items=lines,
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=customer_id,
        trial_days=days,
        trial_end_behavior=TRIAL_END_BEHAVIORS[settings.trial_end_behavior],
        automatic_tax=settings.stripe_automatic_tax,
        payment_method_types=methods,
        application_fee_percent=_fee(settings, customer),
        metadata={APP_ID_KEY: customer_id, "tollgate_plan": terms.plan.id},
        # Buyers may type a code when the catalog has promotion codes for this plan (issue 20).
        allow_promotion_codes=any(
            coupon.promotion_codes and coupon.applies_to(terms.plan.id)
            for coupon in catalog.coupons.values()
        ),
    )
    return CheckoutSession(session_id, url)


def _already_subscribed(customer_id: str, plan: str | None, status: str) -> AlreadySubscribed:
    return AlreadySubscribed(
        f"customer {customer_id!r} already has a subscription (plan {plan}, {status}); "
        "change it with PUT /v1/customers/{id}/subscription or the Customer Portal",
        param="plan",
    )


# -- subscribing and changing ----------------------------------------------------------------


def change_subscription(
    deps: Deps,
    *,
    customer_id: str,
    wanted: SubscriptionRequest,
    idempotency_key: str | None = None,
) -> SubscriptionView:
    """Subscribe the customer to a plan directly, or change its plan, interval or seats.

    An upgrade (more per period, a longer interval, more seats) applies now with the immediate
    proration behaviour; a downgrade waits for the period end unless `at_period_end` is false.
    A free plan ends the subscription at period end (or now). An offline customer's plan is
    Tollgate's to change.
    """
    db, catalog, gateway, settings = deps.db, deps.catalog, deps.optional_stripe(), deps.settings
    clock = deps.clock
    chosen = find_plan(catalog, wanted.plan)
    proration = check_proration(wanted.proration, settings.immediate_proration_behavior)
    with db.transaction() as session:
        offline = load_customer(session, customer_id).offline
    if offline:
        return _change_offline_plan(db, catalog, clock, customer_id, wanted)
    if chosen.is_free:
        return _change_to_free(deps, catalog, customer_id, wanted, idempotency_key)
    customer, target = _online_customer(db, catalog, gateway, customer_id)
    live = _live_subscription(target, customer.stripe_id)
    if live is not None and live.currency:
        # The subscription's currency is fixed; a change stays in it.
        customer = replace(customer, currency=live.currency)
    if live is not None and live.plan == wanted.plan:
        # A grandfathered subscriber keeps its version's prices through seat and interval
        # changes; only a migration (or another plan) moves it to the newest version.
        catalog = catalog.with_plan_version(live.plan, live.plan_version)
    terms = _terms_for(catalog, customer, wanted.plan, wanted.interval, wanted.seats)
    wanted = replace(wanted, payment_method=_paid_by(settings, terms, wanted.payment_method))
    explicit = (
        wanted.collection_method is not None
        or wanted.days_until_due is not None
        or wanted.payment_method is not None
    )
    collection = collection_for(
        terms.plan,
        method=wanted.collection_method,
        days_until_due=wanted.days_until_due,
        payment_method=wanted.payment_method,
    )
    if live is None:
        return _subscribe(
            db, settings, target, clock, customer, terms, collection, wanted, idempotency_key
        )
    waiting = live.status == "incomplete" and not customer.debit_processing
    if waiting and live.plan == wanted.plan and live.latest_invoice:
        # Asked again while the first payment waits for the customer: the same answer.
        return _action_required(_stripe_view(live), target.retrieve_invoice(live.latest_invoice))
    if live.change_pending and live.latest_invoice:
        # A change waits for the customer to confirm its payment: the same answer until it is
        # paid or expires (one change at a time, as Stripe's pending updates are).
        pending = target.retrieve_invoice(live.latest_invoice)
        return _action_required(_stripe_view(live), pending, waiting=True)
    change = _Change(
        terms,
        collection if explicit else None,
        proration,
        wanted.at_period_end,
        wanted.payment_method,
    )
    return _change(db, catalog, settings, target, clock, customer, live, change, idempotency_key)


def _subscribe(
    db: Database,
    settings: Settings,
    gateway: StripeGateway,
    clock: Clock,
    customer: _Customer,
    terms: Terms,
    collection: Collection,
    wanted: SubscriptionRequest,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Create the customer's subscription to `terms`."""
    require_address(customer.address, automatic_tax=settings.stripe_automatic_tax)
    days = trial_days_for(terms.plan, wanted.trial_days)
    if not days and collection.method == CollectionMethod.CHARGE_AUTOMATICALLY:
        _check_card_limit(gateway, settings, customer, terms)
    prices = _price_ids(gateway, [terms.lookup_key, *terms.overage_lookup_keys.values()])
    items: list[dict[str, Any]] = [{"price": prices[terms.lookup_key], "quantity": terms.quantity}]
    items += [{"price": prices[key]} for key in terms.overage_lookup_keys.values()]
    params: dict[str, Any] = {
        "customer": customer.stripe_id,
        "items": items,
        "collection_method": collection.method,
        "metadata": {APP_ID_KEY: customer.id, "tollgate_plan": terms.plan.id},
        "trial_settings": {
            "end_behavior": {
                "missing_payment_method": TRIAL_END_BEHAVIORS[settings.trial_end_behavior]
            }
        },
        # Charged now and declined: fail and leave nothing behind, rather than an incomplete one.
        "payment_behavior": (
            "error_if_incomplete"
            if collection.method == CollectionMethod.CHARGE_AUTOMATICALLY and not days
            else "allow_incomplete"
        ),
    }
    if collection.days_until_due is not None:
        params["days_until_due"] = collection.days_until_due
    if days:
        params["trial_period_days"] = days
    methods = _payment_method_types(settings, terms)
    if wanted.payment_method == BANK_TRANSFER:
        params["payment_settings"] = bank_transfer_settings(terms.currency)
    else:
        payment_settings: dict[str, Any] = {}
        if methods is not None:
            payment_settings["payment_method_types"] = methods
        if settings.bank_verification == "microdeposits":
            payment_settings["payment_method_options"] = {
                "us_bank_account": {"verification_method": "microdeposits"}
            }
        if payment_settings:
            params["payment_settings"] = payment_settings
    if settings.stripe_automatic_tax:
        params["automatic_tax"] = {"enabled": True}
    fee = _fee(settings, customer)
    if fee is not None:
        params["application_fee_percent"] = float(fee)
    asked = {
        "plan": terms.plan.id,
        "interval": terms.interval,
        "currency": terms.currency,
        "seats": terms.quantity,
        "collection": [collection.method, collection.days_until_due],
        "trial_days": days,
    }
    if wanted.payment_method is not None:
        asked["payment_method"] = wanted.payment_method
    key = request_id(idempotency_key, asked, customer.state_version)
    try:
        created = gateway.create_subscription(
            idempotency_key=f"sub-create-{customer.id}-{key}", params=params
        )
    except PaymentDeclined as declined:
        if declined.code not in ACTION_NEEDED:
            raise
        return _subscribe_pending_authentication(db, gateway, clock, customer, key, params)
    _after_write(db, customer.id, clock)
    return _stripe_view(subscription_snapshot(created))


def _period_amount(terms: Terms) -> int:
    """Return what one period of `terms` invoices (before usage, discounts and tax)."""
    return terms.price.amount_minor * terms.quantity


def _payment_policy(settings: Settings, terms: Terms) -> PaymentPolicy:
    return policy_for(terms.plan, settings.card_limits)


def _paid_by(settings: Settings, terms: Terms, asked: str | None) -> str | None:
    """Return how a subscription to `terms` pays: by bank transfer when asked (and the plan
    accepts it) or when the plan accepts nothing else for its amount; None for the customer's
    own payment method. A method the plan does not accept is refused (PaymentMethodNotAllowed)."""
    policy = _payment_policy(settings, terms)
    amount = _period_amount(terms)
    if asked is not None:
        policy.check(asked, amount, terms.currency, terms.plan.id)
        return asked
    return BANK_TRANSFER if policy.methods_for(amount, terms.currency) == (BANK_TRANSFER,) else None


def _payment_method_types(settings: Settings, terms: Terms) -> list[str] | None:
    """Return the methods the plan's invoices may be paid with, or None when any may.

    Stripe offers these on every invoice of the subscription (`payment_settings`), so a
    renewal above the card limit is never charged to a card.
    """
    policy = _payment_policy(settings, terms)
    amount, currency = _period_amount(terms), terms.currency
    if policy.is_open(amount, currency):
        return None
    return list(policy.payable_by(amount, currency, terms.plan.id))


def _payment_settings(
    settings: Settings, terms: Terms, current: SubscriptionSnapshot
) -> dict[str, Any]:
    """Return the `payment_settings` update that offers a changed subscription's invoices the
    methods its new terms allow (none when they stay as they were)."""
    methods = _payment_method_types(settings, terms)
    if methods is None and not current.payment_method_types:
        return {}
    return {"payment_settings": {"payment_method_types": methods or ""}}


def _check_card_limit(
    gateway: StripeGateway,
    settings: Settings,
    customer: _Customer,
    terms: Terms,
    payment_method: str | None = None,
) -> None:
    """Refuse an invoice of `terms` that the customer's default payment method may not pay."""
    policy = _payment_policy(settings, terms)
    amount = _period_amount(terms)
    if policy.is_open(amount, terms.currency):
        return  # no limit, or within it: no need to ask Stripe how the customer pays
    policy.payable_by(amount, terms.currency, terms.plan.id)
    method = gateway.default_payment_method_type(customer.stripe_id, payment_method)
    policy.check(method, amount, terms.currency, terms.plan.id)


def _subscribe_pending_authentication(
    db: Database,
    gateway: StripeGateway,
    clock: Clock,
    customer: _Customer,
    key: str,
    params: dict[str, Any],
) -> SubscriptionView:
    """Create the subscription `incomplete` for a card that needs its holder (3-D Secure).

    Stripe refused to charge it with `error_if_incomplete`; allowed incomplete, the first invoice
    stays open with its hosted page, where the customer confirms the payment. Its webhooks email
    the customer the link and grant the plan once the payment succeeds.
    """
    created = gateway.create_subscription(
        idempotency_key=f"sub-create-{customer.id}-{key}-action",
        params={**params, "payment_behavior": "allow_incomplete", "expand": ["latest_invoice"]},
    )
    _after_write(db, customer.id, clock)
    invoice = created.get("latest_invoice")
    return _action_required(
        _stripe_view(subscription_snapshot(created)), invoice if isinstance(invoice, dict) else {}
    )


def _action_required(
    view: SubscriptionView, invoice: dict[str, Any], *, waiting: bool | None = None
) -> SubscriptionView:
    """A subscription waiting on its customer (incomplete, or a change pending its payment) as
    `action_required`, with its open invoice's page."""
    url = invoice.get("hosted_invoice_url")
    if waiting is None:
        waiting = view.status == "incomplete"
    if not waiting or invoice.get("status") != "open" or not url:
        return view  # settled after all (the card was authenticated meanwhile)
    return replace(view, status=ACTION_REQUIRED, url=url)


@dataclass(frozen=True)
class _Change:
    """A change asked of a live subscription."""

    terms: Terms
    collection: Collection | None
    proration: str
    at_period_end: bool | None
    payment_method: str | None = None


def _change(
    db: Database,
    catalog: Catalog,
    settings: Settings,
    gateway: StripeGateway,
    clock: Clock,
    customer: _Customer,
    live: SubscriptionSnapshot,
    change: _Change,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Change a live subscription: now, at period end, or not at all."""
    current = live
    base = current.base_item
    assert base is not None  # a live subscription with a plan has its plan's item
    terms = change.terms
    current_seats = base.quantity or 1
    same_plan = current.plan == terms.plan.id and current.interval == terms.interval
    if same_plan and terms.plan.per_seat:
        seats = seats_after(current_seats, terms.quantity, settings.seat_change_behavior)
        terms = replace(terms, seats=seats)
    collection = change.collection
    if collection is not None and collection.method == current.collection_method:
        collection = None if same_plan else collection
    timing = change_timing(
        CurrentTerms(
            current.plan,
            current.interval,
            current.currency or "",
            current_seats,
            _current_amount(catalog, current),
        ),
        terms,
        at_period_end=change.at_period_end,
    )
    if same_plan and timing is ChangeTiming.PERIOD_END and change.at_period_end is None:
        timing = ChangeTiming.NOW  # seats follow the app's member count as it changes
    if timing is ChangeTiming.NOTHING and collection is None:
        _supersede_plan_changes(db, customer.id, clock)
        return _stripe_view(current)
    if timing is ChangeTiming.PERIOD_END:
        if current.current_period_end is None:
            raise InvalidRequest("the subscription has no current period to end", param="plan")
        pending = _keep_plan_change(
            db, clock, customer.id, current.id, terms, current.current_period_end
        )
        return _stripe_view(current, pending)
    charged = (collection.method if collection else current.collection_method) == (
        CollectionMethod.CHARGE_AUTOMATICALLY
    )
    if charged and current.status != "trialing":
        _check_card_limit(gateway, settings, customer, terms, current.default_payment_method)
    params = _item_changes(gateway, current, terms)
    params["proration_behavior"] = change.proration
    if collection is not None:
        params["collection_method"] = collection.method
        if collection.days_until_due is not None:
            params["days_until_due"] = collection.days_until_due
    params.update(_payment_settings(settings, terms, current))
    if change.payment_method == BANK_TRANSFER:
        params["payment_settings"] = bank_transfer_settings(terms.currency)
    # Billed now: a declined card changes nothing (402); a card that needs its holder waits
    # with the change pending until the customer confirms (Stripe's pending_if_incomplete).
    billed_now = (
        charged and change.proration == "always_invoice" and current.interval == terms.interval
    )
    if billed_now:
        params["payment_behavior"] = "error_if_incomplete"
    # An interval change starts a new period, which stripesim does not hold pending: it applies
    # at once (Stripe's allow_incomplete) and, when its invoice is not paid (the card needs its
    # holder, or was declined), the answer is `action_required` with that invoice's page, where
    # the customer pays; the subscription is past due meanwhile (dunning's grace).
    new_period_billed = charged and current.interval != terms.interval
    if new_period_billed:
        params["expand"] = ["latest_invoice"]
    asked = {
        "subscription": current.id,
        "plan": terms.plan.id,
        "interval": terms.interval,
        "seats": terms.quantity,
        "proration": change.proration,
        "collection": [collection.method, collection.days_until_due] if collection else None,
    }
    if change.payment_method is not None:
        asked["payment_method"] = change.payment_method
    key = request_id(idempotency_key, asked, customer.state_version)
    try:
        updated = gateway.update_subscription(
            current.id, idempotency_key=f"sub-update-{customer.id}-{key}", params=params
        )
    except PaymentDeclined as declined:
        if not billed_now or declined.code != AUTHENTICATION_REQUIRED:
            raise
        return _change_pending_authentication(db, gateway, clock, customer, current, key, params)
    _after_write(db, customer.id, clock)
    view = _stripe_view(subscription_snapshot(updated))
    invoice = updated.get("latest_invoice")
    if (
        new_period_billed
        and isinstance(invoice, dict)
        and invoice.get("id") != current.latest_invoice
    ):
        # Past due: its payment needs the card holder, or failed; a bank debit still
        # processing leaves the subscription active and is not the customer's to act on.
        return _action_required(view, invoice, waiting=view.status == "past_due")
    return view


def _change_pending_authentication(
    db: Database,
    gateway: StripeGateway,
    clock: Clock,
    customer: _Customer,
    current: SubscriptionSnapshot,
    key: str,
    params: dict[str, Any],
) -> SubscriptionView:
    """Bill a change whose payment needs the card holder; apply it only once paid.

    Stripe keeps the subscription as it was, with the change in `pending_update`, and the
    proration invoice open with its hosted page; paid there, the change applies (the plan flips
    with `customer.subscription.updated`). Not paid within 23 hours, the change expires and the
    plan stays as it was.
    """
    # Stripe takes only item and proration parameters with a pending update; the methods the
    # card payer's invoices are offered stay as they were (the check above let the card pay).
    pending = {name: value for name, value in params.items() if name != "payment_settings"}
    updated = gateway.update_subscription(
        current.id,
        idempotency_key=f"sub-update-{customer.id}-{key}-action",
        params={
            **pending,
            "payment_behavior": "pending_if_incomplete",
            "expand": ["latest_invoice"],
        },
    )
    _after_write(db, customer.id, clock)
    invoice = updated.get("latest_invoice")
    return _action_required(
        _stripe_view(subscription_snapshot(updated)),
        invoice if isinstance(invoice, dict) else {},
        waiting=updated.get("pending_update") is not None,
    )


def _current_amount(catalog: Catalog, current: SubscriptionSnapshot) -> int | None:
    """Return the catalog's unit amount of the subscription's plan price, if it still has it."""
    if current.plan not in catalog.plans:
        return None
    plan = catalog.plan_version(current.plan or "", current.plan_version)
    if plan.is_free or current.interval is None or current.currency is None:
        return None
    try:
        return plan.price_for(current.interval, current.currency).amount_minor
    except InvalidRequest:
        return None


def _item_changes(
    gateway: StripeGateway, current: SubscriptionSnapshot, terms: Terms
) -> dict[str, Any]:
    """Return the `items` update that moves the subscription to `terms`."""
    base = current.base_item
    assert base is not None
    wanted_keys = [terms.lookup_key, *terms.overage_lookup_keys.values()]
    prices = _price_ids(gateway, wanted_keys)
    items: list[dict[str, Any]] = []
    base_change: dict[str, Any] = {"id": base.id, "quantity": terms.quantity}
    if base.price_id != prices[terms.lookup_key]:
        base_change["price"] = prices[terms.lookup_key]
    items.append(base_change)
    kept = {item.price_id for item in current.items}
    wanted_overage = {prices[key] for key in terms.overage_lookup_keys.values()}
    for item in current.items:
        if item.id != base.id and item.price_id not in wanted_overage:
            items.append({"id": item.id, "deleted": True})
    items += [{"price": price} for price in sorted(wanted_overage - kept)]
    return {"items": items}


def _keep_plan_change(
    db: Database,
    clock: Clock,
    customer_id: str,
    subscription_id: str,
    terms: Terms,
    effective_at: datetime,
) -> PendingChangeView:
    """Record the change to make at period end, replacing any earlier one."""
    now = clock.now()
    with db.write_transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        assert customer is not None
        existing = pending_plan_change(session, customer_id)
        seats = terms.seats if terms.plan.per_seat else None
        wanted = (terms.plan.id, terms.interval, seats, subscription_id, effective_at)
        if (
            existing is not None
            and (
                existing.plan,
                existing.interval,
                existing.seats,
                existing.subscription_id,
                existing.effective_at,
            )
            == wanted
        ):
            return _pending_view(existing)  # type: ignore[return-value]
        _cancel_pending(session, customer_id, now)
        change = PlanChange(
            id=f"pc_{request_id(None, {'customer': customer_id, 'change': wanted}, now)}",
            customer_id=customer_id,
            subscription_id=subscription_id,
            plan=terms.plan.id,
            interval=terms.interval,
            seats=seats,
            effective_at=effective_at,
            status="pending",
            created_at=now,
            updated_at=now,
        )
        session.add(change)
        customer.updated_at = now
        _note_change(session, customer_id, now)
        return PendingChangeView(change.plan, change.interval, change.seats, effective_at)


def _note_change(session: Session, customer_id: str, now: datetime) -> None:
    """Mark the customer's cached decisions stale: its `state_version`, the change feed."""
    note_customer_changes(session.connection(), [customer_id], reason="customer", now=now)


def _cancel_pending(session: Any, customer_id: str, now: datetime) -> int:
    result = session.execute(
        update(PlanChange)
        .where(PlanChange.customer_id == customer_id, PlanChange.status == "pending")
        .values(status="canceled", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def _supersede_plan_changes(db: Database, customer_id: str, clock: Clock) -> None:
    """Drop a change waiting for the period end: a later request decided otherwise."""
    with db.transaction() as session:
        if pending_plan_change(session, customer_id) is None:
            return
    with db.write_transaction() as session:
        now = clock.now()
        if _cancel_pending(session, customer_id, now):
            _note_change(session, customer_id, now)


def _after_write(db: Database, customer_id: str, clock: Clock) -> None:
    """Note that Stripe changed the subscription: drop a waiting change, bump the state.

    The bump marks cached decisions stale at once (the webhook follows) and gives the next
    request a new idempotency key: the same request again is a new change, not a replay.
    """
    now = clock.now()
    with db.write_transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        if customer is None:
            return
        _cancel_pending(session, customer_id, now)
        customer.updated_at = now
        _note_change(session, customer_id, now)


def _change_offline_plan(
    db: Database, catalog: Catalog, clock: Clock, customer_id: str, wanted: SubscriptionRequest
) -> SubscriptionView:
    """Give an offline customer another plan: Tollgate keeps it, Stripe is not involved."""
    plan = find_plan(catalog, wanted.plan)
    if plan.prices and wanted.interval not in plan.intervals:
        offered = ", ".join(plan.intervals)
        raise InvalidRequest(
            f"plan {plan.id!r} is billed per {offered}, not {wanted.interval!r}", param="interval"
        )
    with db.write_transaction() as session:
        row = load_customer(session, customer_id, lock=True)
        if row.plan != plan.id:
            row.plan = plan.id
            row.updated_at = clock.now()
            _note_change(session, customer_id, row.updated_at)
    return _read_subscription(db, catalog, customer_id)


def _change_to_free(
    deps: Deps,
    catalog: Catalog,
    customer_id: str,
    wanted: SubscriptionRequest,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Move to a free plan: end the paid subscription (at period end unless asked now)."""
    db, clock = deps.db, deps.clock
    customer, target = _online_customer(db, catalog, deps.optional_stripe(), customer_id)
    live = _live_subscription(target, customer.stripe_id)
    with db.write_transaction() as session:
        row = load_customer(session, customer_id, lock=True)
        plan = None if wanted.plan == catalog.default_plan else wanted.plan
        if row.plan != plan:
            row.plan = plan
            row.updated_at = clock.now()
            _note_change(session, customer_id, row.updated_at)
    if live is None:
        return _read_subscription(db, catalog, customer_id)
    return cancel_subscription(
        deps,
        customer_id=customer_id,
        at_period_end=wanted.at_period_end is not False,
        idempotency_key=idempotency_key,
    )


# -- canceling and resuming ------------------------------------------------------------------


def cancel_subscription(
    deps: Deps,
    *,
    customer_id: str,
    at_period_end: bool,
    idempotency_key: str | None = None,
) -> SubscriptionView:
    """Cancel the subscription now, or at period end (`canceling` until then).

    Afterwards the customer is on the catalog's default plan. An offline customer goes back to
    the default plan at once.
    """
    db, catalog, gateway, clock = deps.db, deps.catalog, deps.optional_stripe(), deps.clock
    with db.transaction() as session:
        offline = load_customer(session, customer_id).offline
    if offline:
        with db.write_transaction() as session:
            row = load_customer(session, customer_id, lock=True)
            if row.plan is not None:
                row.plan = None
                row.updated_at = clock.now()
                _note_change(session, customer_id, row.updated_at)
        return _read_subscription(db, catalog, customer_id)
    customer, target = _online_customer(db, catalog, gateway, customer_id)
    live = _live_subscription(target, customer.stripe_id)
    if live is None:
        raise NotFound(f"customer {customer_id!r} has no subscription to cancel", param="id")
    current = live
    if at_period_end:
        if current.cancel_at_period_end:
            _supersede_plan_changes(db, customer_id, clock)
            return _stripe_view(current)
        return _set_cancel_at_period_end(
            db, clock, customer, target, current, True, idempotency_key
        )
    key = request_id(idempotency_key, {"cancel_now": current.id}, customer.state_version)
    try:
        canceled = target.cancel_subscription(
            current.id, idempotency_key=f"sub-cancel-now-{customer_id}-{key}"
        )
    except StripeFailure:
        # A retry after a timeout finds it canceled already: that is the answer wanted.
        canceled = target.retrieve_subscription(current.id)
        if is_live(str(canceled.get("status"))):
            raise
    _after_write(db, customer_id, clock)
    return _stripe_view(subscription_snapshot(canceled))


def resume_subscription(
    deps: Deps, *, customer_id: str, idempotency_key: str | None = None
) -> SubscriptionView:
    """Undo a cancel at period end before the period ends (nothing to undo: nothing changes)."""
    db, clock = deps.db, deps.clock
    customer, target = _online_customer(db, deps.catalog, deps.optional_stripe(), customer_id)
    live = _live_subscription(target, customer.stripe_id)
    if live is None:
        raise NotFound(
            f"customer {customer_id!r} has no subscription to resume (an ended one cannot be; "
            "start a new one)",
            param="id",
        )
    current = live
    if not current.cancel_at_period_end and current.cancel_at is None:
        return _stripe_view(current)
    return _set_cancel_at_period_end(db, clock, customer, target, current, False, idempotency_key)


def _set_cancel_at_period_end(
    db: Database,
    clock: Clock,
    customer: _Customer,
    target: StripeGateway,
    current: SubscriptionSnapshot,
    cancel: bool,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Ask Stripe to cancel the subscription at period end (or not any more); the view after."""
    verb = "cancel" if cancel else "resume"
    key = request_id(idempotency_key, {verb: current.id}, customer.state_version)
    updated = target.update_subscription(
        current.id,
        idempotency_key=f"sub-{verb}-{customer.id}-{key}",
        params={"cancel_at_period_end": cancel},
    )
    _after_write(db, customer.id, clock)
    return _stripe_view(subscription_snapshot(updated))


# -- changes at period end -------------------------------------------------------------------


@dataclass(frozen=True)
class PlanChangeReport:
    """What one run of `apply_due_plan_changes` did."""

    applied: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def apply_due_plan_changes(
    *,
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    settings: Settings,
    clock: Clock,
    lead: timedelta = PLAN_CHANGE_LEAD,
    limit: int = 100,
) -> PlanChangeReport:
    """Make in Stripe the changes whose period ends within `lead`, before the renewal bills.

    Each change is keyed by its own id in Stripe (`plan-change-{id}`), so two workers running
    this at once, or a rerun after a crash, change the subscription once.
    """
    now = clock.now()
    report = PlanChangeReport()
    with db.transaction() as session:
        due = list(
            session.scalars(
                select(PlanChange)
                .where(PlanChange.status == "pending", PlanChange.effective_at <= now + lead)
                .order_by(PlanChange.effective_at, PlanChange.id)
                .limit(limit)
            )
        )
        accounts = {
            change.id: (session.get(Customer, change.customer_id) or Customer()).stripe_account
            for change in due
        }
    for change in due:
        account = accounts.get(change.id)
        target = gateway.for_account(account) if account else gateway
        try:
            outcome = _apply_plan_change(catalog, settings, target, change)
        except TollgateError as error:
            log.warning("plan change %s failed: %s", change.id, error.message)
            report.failed.append(change.id)
            continue
        with db.write_transaction() as session:
            session.execute(
                update(PlanChange)
                .where(PlanChange.id == change.id, PlanChange.status == "pending")
                .values(status=outcome, updated_at=clock.now())
                .execution_options(synchronize_session=False)
            )
        (report.applied if outcome == "applied" else report.dropped).append(change.id)
    return report


def _apply_plan_change(
    catalog: Catalog, settings: Settings, gateway: StripeGateway, change: PlanChange
) -> str:
    """Make one change in Stripe; return `applied`, or `canceled` if it no longer applies."""
    try:
        raw = gateway.retrieve_subscription(change.subscription_id)
    except StripeNotFound:
        return "canceled"
    current = subscription_snapshot(raw)
    if not is_live(current.status) or current.cancel_at_period_end:
        return "canceled"
    terms = subscription_terms(
        catalog,
        plan_id=change.plan,
        interval=change.interval,
        currency=current.currency or catalog.currency,
        seats=change.seats,
    )
    params = _item_changes(gateway, current, terms)
    params["proration_behavior"] = settings.proration_behavior
    params.update(_payment_settings(settings, terms, current))
    gateway.update_subscription(
        current.id, idempotency_key=f"plan-change-{change.id}", params=params
    )
    return "applied"
