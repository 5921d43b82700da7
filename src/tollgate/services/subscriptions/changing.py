"""Subscribe a customer directly, or change its plan, interval or seats (now or at period end).

A card that needs its holder (3-D Secure) answers `action_required` with the invoice's page; an
offline customer's plan is Tollgate's alone; a free plan ends the paid subscription.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, CollectionMethod
from tollgate.domain.errors import Conflict, InvalidRequest
from tollgate.domain.events import BANK_TRANSFER, SubscriptionSnapshot
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
    find_plan,
    request_id,
    seats_after,
    trial_days_for,
)
from tollgate.domain.tax import require_address
from tollgate.services.customers import APP_ID_KEY, live_subscription, load_customer
from tollgate.services.deps import Deps
from tollgate.services.subscriptions.canceling import cancel_subscription
from tollgate.services.subscriptions.lookups import (
    OnlineCustomer,
    application_fee,
    current_amount,
    item_changes,
    online_customer,
    price_ids,
    terms_for,
)
from tollgate.services.subscriptions.payment_rules import (
    check_card_limit,
    paid_by,
    payment_method_types,
    payment_settings_update,
)
from tollgate.services.subscriptions.pending_changes import (
    StripeAnswer,
    after_write,
    keep_plan_change,
    note_change,
    supersede_plan_changes,
)
from tollgate.services.subscriptions.reading import read_subscription, stripe_view
from tollgate.services.webhooks import mirrored_watermark
from tollgate.stripe.errors import IdempotencyKeyReused, PaymentDeclined, StripeNotFound
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import subscription_snapshot
from tollgate_client.views import SubscriptionView

# Stripe's decline code for a card whose holder must authenticate the payment (3-D Secure), and
# what a direct subscription answers then: the customer must act on the page at `url`.
AUTHENTICATION_REQUIRED = "authentication_required"
# What Stripe answers when the first payment needs the customer: a card's 3-D Secure, or a bank
# account's micro-deposit verification.
ACTION_NEEDED = frozenset({AUTHENTICATION_REQUIRED, "payment_intent_action_required"})
ACTION_REQUIRED = "action_required"


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
    customer, target = online_customer(db, catalog, gateway, customer_id)
    live = live_subscription(target, customer.stripe_id)
    if live is not None and live.currency:
        # The subscription's currency is fixed; a change stays in it.
        customer = replace(customer, currency=live.currency)
    if live is not None and live.plan == wanted.plan:
        # A grandfathered subscriber keeps its version's prices through seat and interval
        # changes; only a migration (or another plan) moves it to the newest version.
        catalog = catalog.with_plan_version(live.plan, live.plan_version)
    terms = terms_for(catalog, customer, wanted.plan, wanted.interval, wanted.seats)
    wanted = replace(wanted, payment_method=paid_by(settings, terms, wanted.payment_method))
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
        return _action_required(stripe_view(live), target.retrieve_invoice(live.latest_invoice))
    if live.change_pending and live.latest_invoice:
        # A change waits for the customer to confirm its payment: the same answer until it is
        # paid or expires (one change at a time, as Stripe's pending updates are).
        pending = target.retrieve_invoice(live.latest_invoice)
        return _action_required(stripe_view(live), pending, waiting=True)
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
    customer: OnlineCustomer,
    terms: Terms,
    collection: Collection,
    wanted: SubscriptionRequest,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Create the customer's subscription to `terms`."""
    address = customer.address
    if settings.stripe_automatic_tax and not (address or {}).get("country"):
        # The mirror may lag an address set a moment ago (an older event of the customer
        # applied after it, the newer one not yet): Stripe, which taxes by it, decides.
        address = gateway.retrieve_customer(customer.stripe_id).get("address")
    require_address(address, automatic_tax=settings.stripe_automatic_tax)
    days = trial_days_for(terms.plan, wanted.trial_days)
    if not days and collection.method == CollectionMethod.CHARGE_AUTOMATICALLY:
        check_card_limit(gateway, settings, customer, terms)
    prices = price_ids(gateway, [terms.lookup_key, *terms.overage_lookup_keys.values()])
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
    methods = payment_method_types(settings, terms)
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
    fee = application_fee(settings, customer)
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
    after_write(
        db,
        customer.id,
        clock,
        StripeAnswer(created, gateway, customer.account, settings.dunning_policy),
    )
    return stripe_view(subscription_snapshot(created))


def _subscribe_pending_authentication(
    db: Database,
    gateway: StripeGateway,
    clock: Clock,
    customer: OnlineCustomer,
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
    after_write(db, customer.id, clock)
    invoice = created.get("latest_invoice")
    return _action_required(
        stripe_view(subscription_snapshot(created)), invoice if isinstance(invoice, dict) else {}
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
    customer: OnlineCustomer,
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
            current_amount(catalog, current),
        ),
        terms,
        at_period_end=change.at_period_end,
    )
    if same_plan and timing is ChangeTiming.PERIOD_END and change.at_period_end is None:
        timing = ChangeTiming.NOW  # seats follow the app's member count as it changes
    if timing is ChangeTiming.NOTHING and collection is None:
        supersede_plan_changes(db, customer.id, clock)
        return stripe_view(current)
    if timing is ChangeTiming.PERIOD_END:
        if current.current_period_end is None:
            raise InvalidRequest("the subscription has no current period to end", param="plan")
        pending = keep_plan_change(
            db, clock, customer.id, current.id, terms, current.current_period_end
        )
        return stripe_view(current, pending)
    charged = (collection.method if collection else current.collection_method) == (
        CollectionMethod.CHARGE_AUTOMATICALLY
    )
    if charged and current.status != "trialing":
        check_card_limit(gateway, settings, customer, terms, current.default_payment_method)
    params = item_changes(gateway, current, terms)
    params["proration_behavior"] = change.proration
    if collection is not None:
        params["collection_method"] = collection.method
        if collection.days_until_due is not None:
            params["days_until_due"] = collection.days_until_due
    params.update(payment_settings_update(settings, terms, current))
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
    before = mirrored_watermark(db, current.id)
    try:
        updated = gateway.update_subscription(
            current.id, idempotency_key=f"sub-update-{customer.id}-{key}", params=params
        )
    except PaymentDeclined as declined:
        if not billed_now or declined.code != AUTHENTICATION_REQUIRED:
            raise
        return _change_pending_authentication(db, gateway, clock, customer, current, key, params)
    except (StripeNotFound, IdempotencyKeyReused) as raced:
        if isinstance(raced, IdempotencyKeyReused) and idempotency_key:
            raise  # the app's own key, sent before with another request
        # Another change made at once got there first: this one was built from the items (and
        # named by the state) it replaced.
        raise Conflict(
            f"customer {customer.id!r}'s subscription was changed by another request at the "
            "same time; read it and send the change again",
            param="plan",
        ) from raced
    after_write(
        db,
        customer.id,
        clock,
        StripeAnswer(updated, gateway, customer.account, settings.dunning_policy, before),
    )
    view = stripe_view(subscription_snapshot(updated))
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
    customer: OnlineCustomer,
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
    after_write(db, customer.id, clock)
    invoice = updated.get("latest_invoice")
    return _action_required(
        stripe_view(subscription_snapshot(updated)),
        invoice if isinstance(invoice, dict) else {},
        waiting=updated.get("pending_update") is not None,
    )


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
            note_change(session, customer_id, row.updated_at)
    return read_subscription(db, catalog, customer_id)


def _change_to_free(
    deps: Deps,
    catalog: Catalog,
    customer_id: str,
    wanted: SubscriptionRequest,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Move to a free plan: end the paid subscription (at period end unless asked now)."""
    db, clock = deps.db, deps.clock
    customer, target = online_customer(db, catalog, deps.optional_stripe(), customer_id)
    live = live_subscription(target, customer.stripe_id)
    with db.write_transaction() as session:
        row = load_customer(session, customer_id, lock=True)
        plan = None if wanted.plan == catalog.default_plan else wanted.plan
        if row.plan != plan:
            row.plan = plan
            row.updated_at = clock.now()
            note_change(session, customer_id, row.updated_at)
    if live is None:
        return read_subscription(db, catalog, customer_id)
    return cancel_subscription(
        deps,
        customer_id=customer_id,
        at_period_end=wanted.at_period_end is not False,
        idempotency_key=idempotency_key,
    )
