"""One handler per Stripe event type, keeping the local mirror of Stripe's objects.

Each handler runs inside the transaction its caller opened for the event (see
tollgate.services.webhooks.inbox) and works through its context (see .context): it locks the
customer, reads the object's stored row, applies the event's snapshot behind the object's
watermark (tollgate.domain.events.decide), writes and audits what changed, and queues what the
event tells the customer and the app (see .notices). The statements live in
tollgate.db.queries.mirror, which also explains the order locks are taken in.

The steps every handler shares are in .mirroring, the handlers of payments (charges, refunds,
disputes, bank transfers) in .payment_handlers; `HANDLERS`, at the end, maps every event type
Tollgate applies to its handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.db import execution
from tollgate.db.execution import Read
from tollgate.db.queries import mirror
from tollgate.db.queries.mirror import Row
from tollgate.db.tables import (
    CUSTOMER_TAX_IDS,
    CUSTOMERS,
    DISCOUNTS,
    INVOICE_PAYMENTS,
    INVOICES,
    SUBSCRIPTION_ITEMS,
    SUBSCRIPTIONS,
    TAX_RATES,
)
from tollgate.domain.events import (
    DiscountSnapshot,
    InvoicePaymentSnapshot,
    InvoiceSnapshot,
    SubscriptionSnapshot,
    compare_progress,
    customer_progress,
    invoice_progress,
    subscription_progress,
    tax_id_progress,
)
from tollgate.metrics import WEBHOOK_REFUSED
from tollgate.services.credit_ledger import grant_purchased_credits
from tollgate.services.debits import first_transfer_changed
from tollgate.services.webhooks import notices
from tollgate.services.webhooks.context import GroupWrites, HandlerContext, UnknownStripeObject
from tollgate.services.webhooks.mirroring import (
    SKIP,
    changed_keys,
    customer_values,
    first_seen_customer,
    lock_customer,
    lock_customer_and_read,
    new_customer,
    row_values,
    same_second,
    settle,
    settle_without_fetch,
    write_row,
)
from tollgate.services.webhooks.payment_handlers import (
    on_cash_balance,
    on_charge,
    on_charge_pending,
    on_charge_refunded,
    on_dispute,
    on_payment_intent,
    on_payment_intent_payment_failed,
    on_payment_intent_processing,
    on_refund,
)
from tollgate.stripe.translate import (
    checkout_session_snapshot,
    customer_snapshot,
    discount_snapshot,
    invoice_payment_snapshot,
    invoice_snapshot,
    object_id,
    subscription_snapshot,
    tax_id_snapshot,
    tax_rate_snapshot,
)

log = logging.getLogger("tollgate.webhooks")


# -- customers ----------------------------------------------------------------------------


def _customer_by_stripe_id(ctx: HandlerContext, stripe_customer_id: str) -> Row | None:
    known = ctx.group.customers.pop(stripe_customer_id, None)
    if known is not None:
        return known
    found = ctx.rows(mirror.CUSTOMER_BY_STRIPE_ID, stripe_customer_id=stripe_customer_id)
    return found[0] if found else None


def _apply_customer(ctx: HandlerContext, obj: dict[str, Any], *, deleted: bool = False) -> None:
    snapshot = customer_snapshot(obj, deleted=deleted)
    row = _customer_by_stripe_id(ctx, snapshot.stripe_id)
    if row is None:
        new_customer(ctx, snapshot)
        return
    values = customer_values(snapshot, ctx.account)
    # Stripe cannot undelete a customer, so deletion stays whatever order events come in.
    values["deleted"] = snapshot.deleted or row["deleted"]
    changed: list[str] | None = changed_keys(row, values)
    progress = 0
    if same_second(ctx, row):
        progress = compare_progress(
            customer_progress(values["deleted"]), customer_progress(row["deleted"])
        )
    found = settle(ctx, row, bool(changed), progress, "customer", snapshot.stripe_id)
    if found is SKIP:
        return
    if found is not None:
        values = customer_values(customer_snapshot(found), ctx.account)
        values["deleted"] = values["deleted"] or row["deleted"]
        changed = None
    action = "deleted" if values["deleted"] and not row["deleted"] else None
    write_row(
        ctx,
        CUSTOMERS,
        "customer",
        row["id"],
        row,
        values,
        row["id"],
        action=action,
        changed=changed,
    )


def on_customer(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new or changed Stripe customer (email, name, currency, metadata)."""
    _apply_customer(ctx, obj)


def on_customer_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mark the customer deleted; it stays deleted whatever arrives later."""
    _apply_customer(ctx, obj, deleted=True)


def _apply_tax_id(ctx: HandlerContext, obj: dict[str, Any], *, deleted: bool = False) -> None:
    snapshot = tax_id_snapshot(obj, deleted=deleted)
    if not snapshot.stripe_customer_id:
        return  # an account's own tax ID, not a customer's
    customer_id, row = lock_customer_and_read(
        ctx, snapshot.stripe_customer_id, CUSTOMER_TAX_IDS, snapshot.id
    )
    values = {
        "customer_id": customer_id,
        "type": snapshot.type,
        "value": snapshot.value,
        "country": snapshot.country,
        "verification": snapshot.verification,
        # Stripe never brings a deleted tax ID back, so deletion stays in any order.
        "deleted": bool(snapshot.deleted or (row is not None and row["deleted"])),
    }
    if row is not None:
        differs = row_values(row, values) != values
        progress = compare_progress(
            tax_id_progress(bool(values["deleted"]), snapshot.verification),
            tax_id_progress(row["deleted"], row["verification"]),
        )
        # Same second, different content, and no way to tell: the newest event id wins, as a
        # tax ID has nothing else to fetch by its own id.
        if settle_without_fetch(ctx, row, differs, progress):
            return
    write_row(ctx, CUSTOMER_TAX_IDS, "tax_id", snapshot.id, row, values, customer_id)


def on_tax_id(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a customer's tax ID as added or verified (`customer.tax_id.created|updated`)."""
    _apply_tax_id(ctx, obj)


def on_tax_id_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mark a customer's tax ID deleted; it stays deleted whatever arrives later."""
    _apply_tax_id(ctx, obj, deleted=True)


# -- subscriptions ------------------------------------------------------------------------


def _subscription_values(snapshot: SubscriptionSnapshot, customer_id: str) -> dict[str, Any]:
    plan, plan_version, interval, seats, period_start, period_end = snapshot.plan_terms()
    return {
        "customer_id": customer_id,
        "status": snapshot.status,
        "cancel_at_period_end": snapshot.cancel_at_period_end,
        "cancel_at": snapshot.cancel_at,
        "canceled_at": snapshot.canceled_at,
        "ended_at": snapshot.ended_at,
        "trial_start": snapshot.trial_start,
        "trial_end": snapshot.trial_end,
        "current_period_start": period_start,
        "current_period_end": period_end,
        "collection_method": snapshot.collection_method,
        "currency": snapshot.currency,
        "plan": plan,
        "plan_version": plan_version,
        "interval": interval,
        "seats": seats,
        "latest_invoice": snapshot.latest_invoice,
        "discount_ids": list(snapshot.discount_ids) or None,
        "payment_method_types": list(snapshot.payment_method_types or ()) or None,
    }


def _item_values(snapshot: SubscriptionSnapshot) -> list[dict[str, Any]]:
    """Return the items' columns (mirror.ITEM_KEYS), as `mirror.read_subscription` has them."""
    # Spelled out: half the cost of a comprehension over ITEM_KEYS (a test keeps them equal).
    return [
        {
            "id": item.id,
            "price_id": item.price_id,
            "lookup_key": item.lookup_key,
            "usage_type": item.usage_type,
            "quantity": item.quantity,
            "current_period_start": item.current_period_start,
            "current_period_end": item.current_period_end,
        }
        for item in snapshot.items
    ]


def _customer_and_subscription(
    ctx: HandlerContext, stripe_customer_id: str, subscription_id: str
) -> tuple[str, Row | None, list[dict[str, Any]]]:
    """Lock the customer; return its id, the stored subscription (locked) and its items."""
    known = ctx.group.take_subscription(stripe_customer_id, subscription_id)
    if known is not None:
        return known
    customer_id, row, items = mirror.lock_customer_and_subscription(
        ctx.read, ctx.dialect, stripe_customer_id, subscription_id
    )
    if customer_id is None:
        # First seen: made now, so the subscription is read again behind its lock.
        customer_id = first_seen_customer(ctx, stripe_customer_id)
        row, items = mirror.read_subscription(ctx.read, subscription_id)
    return customer_id, row, items


def _apply_subscription(
    ctx: HandlerContext, obj: dict[str, Any]
) -> tuple[SubscriptionSnapshot, str] | None:
    """Apply the event's subscription; return its snapshot (as the event has it) and customer,
    or None when the event is refused (it names another customer than the subscription's)."""
    snapshot = event_snapshot = subscription_snapshot(obj)
    customer_id, row, stored_items = _customer_and_subscription(
        ctx, snapshot.stripe_customer_id, snapshot.id
    )
    if row is not None and row["customer_id"] != customer_id:
        _refuse_customer_change(ctx, snapshot.id, row["customer_id"], customer_id)
        return None
    values = _subscription_values(snapshot, customer_id)
    items = _item_values(snapshot)
    changed: list[str] | None = None
    if row is not None:
        changed = changed_keys(row, values)
        progress = 0
        if same_second(ctx, row):
            progress = compare_progress(
                subscription_progress(snapshot.status, snapshot.current_period_start),
                subscription_progress(row["status"], row["current_period_start"]),
            )
        differs = bool(changed) or stored_items != items
        found = settle(ctx, row, differs, progress, "subscription", snapshot.id)
        if found is SKIP:
            return event_snapshot, customer_id
        if found is not None:
            snapshot = subscription_snapshot(found)
            values = _subscription_values(snapshot, customer_id)
            items = _item_values(snapshot)
            changed = None
    _mirror_discounts(ctx, customer_id, snapshot.id, snapshot.discount_ids)
    items_changed = items != stored_items
    # The audit records the items too (id, price, quantity), when they changed.
    audited = before_items = None
    if row is None or items_changed:
        audited = {"items": _item_summary(items)}
    if row is not None and items_changed:
        before_items = {"items": _item_summary(stored_items)}
    # The subscription row is written first: its items reference it.
    write_row(
        ctx,
        SUBSCRIPTIONS,
        "subscription",
        snapshot.id,
        row,
        values,
        customer_id,
        audited=audited,
        before_extra=before_items,
        changed=changed,
    )
    if items_changed:
        _replace_items(ctx, snapshot.id, items, stored_items)
    return event_snapshot, customer_id


def _refuse_customer_change(
    ctx: HandlerContext, subscription_id: str, owner: str, claimed: str
) -> None:
    """Record and report an event moving a subscription to another customer; apply nothing.

    Stripe never changes a subscription's customer, so such an event is forged or replayed
    across customers by whoever holds a webhook secret: applying it would give one customer
    another's plan. The audit log keeps it (action `refused`), the log says it at ERROR and
    `tollgate_webhook_refused_total` counts it, for the operator's alerts.
    """
    WEBHOOK_REFUSED.labels("subscription_customer_changed").inc()
    log.error(
        "refused event %s: subscription %s belongs to customer %s, the event names %s",
        ctx.event_id,
        subscription_id,
        owner,
        claimed,
    )
    ctx.audit(
        "subscription",
        subscription_id,
        "refused",
        {"customer_id": owner},
        {"customer_id": claimed, "refused": "a subscription's customer never changes"},
        owner,
    )


def _item_summary(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": item["id"], "price_id": item["price_id"], "quantity": item["quantity"]}
        for item in items
    ]


def _replace_items(
    ctx: HandlerContext,
    subscription_id: str,
    items: list[dict[str, Any]],
    stored: list[dict[str, Any]],
) -> None:
    wanted = {item["id"]: item for item in items}
    existing = {item["id"]: item for item in stored}
    # One pass over the wanted items (most events change one item's quantity); the writes go in
    # the order deletes, inserts, updates.
    added, changed = [], []
    for item_id, values in wanted.items():
        stored_values = existing.pop(item_id, None)
        if stored_values is None:
            added.append({**values, "subscription_id": subscription_id})
        elif stored_values != values:
            update = {key: value for key, value in values.items() if stored_values[key] != value}
            changed.append({**update, "row_id": item_id})
    if existing:  # the stored items no longer wanted
        ctx.write(mirror.delete_items(list(existing)))
    if added:
        ctx.write(mirror.insert_row(SUBSCRIPTION_ITEMS), added)
    for update in changed:
        ctx.write(mirror.update_by_id(SUBSCRIPTION_ITEMS), update)


def _mirror_discounts(
    ctx: HandlerContext, customer_id: str, parent_id: str, discount_ids: Sequence[str]
) -> None:
    """Keep the discounts a subscription or invoice names, each with its coupon's terms.

    Events name discounts by id only, so one not seen before is fetched (with its coupon)
    from the subscription or invoice that carries it; each is fetched once.
    """
    if not discount_ids:
        return
    stored = ctx.read([(mirror.row_by_id(DISCOUNTS), {"row_id": d}) for d in discount_ids])
    missing = {d for d, rows in zip(discount_ids, stored, strict=True) if not rows}
    if not missing:
        return
    for raw in ctx.fetch("discounts", parent_id, "discounts") or []:
        found = discount_snapshot(raw)
        if found.id in missing:
            missing.discard(found.id)
            ctx.write(mirror.insert_row(DISCOUNTS), _discount_values(found, customer_id, ctx.now))


def _discount_values(found: DiscountSnapshot, customer_id: str, now: datetime) -> dict[str, Any]:
    return {
        "id": found.id,
        "customer_id": customer_id,
        "subscription_id": found.subscription_id,
        "coupon_id": found.coupon_id,
        "catalog_coupon": found.catalog_coupon,
        "name": found.name,
        "percent_off": found.percent_off,
        "amount_off": found.amount_off,
        "currency": found.currency,
        "amounts_off": found.amounts_off or None,
        "duration": found.duration,
        "duration_in_months": found.duration_in_months,
        "promotion_code": found.promotion_code,
        "started_at": found.start,
        "ends_at": found.end,
        "created_at": now,
    }


def on_subscription(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror the subscription a `customer.subscription.*` event carries (created, updated,
    deleted, paused, resumed, trial_will_end: the snapshot is current in each) and queue what
    the event tells the customer and the app."""
    applied = _apply_subscription(ctx, obj)
    if applied is not None:
        notices.notice_subscription_event(ctx, obj, *applied)


# -- invoices -------------------------------------------------------------------------------


def _invoice_values(snapshot: Any, customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "subscription_id": snapshot.subscription_id,
        "status": snapshot.status,
        "currency": snapshot.currency,
        "amount_due": snapshot.amount_due,
        "amount_paid": snapshot.amount_paid,
        "amount_remaining": snapshot.amount_remaining,
        "total": snapshot.total,
        "attempt_count": snapshot.attempt_count,
        "next_payment_attempt": snapshot.next_payment_attempt,
        "hosted_invoice_url": snapshot.hosted_invoice_url,
        "invoice_pdf": snapshot.invoice_pdf,
        "billing_reason": snapshot.billing_reason,
        "number": snapshot.number,
        "period_start": snapshot.period_start,
        "period_end": snapshot.period_end,
        "subtotal": snapshot.subtotal,
        "discount_amounts": [
            {"discount": discount, "amount": amount}
            for discount, amount in snapshot.discount_amounts
        ]
        or None,
        "tax": snapshot.tax,
        "customer_tax_exempt": snapshot.customer_tax_exempt,
    }


def _tax_lines(ctx: HandlerContext, snapshot: InvoiceSnapshot) -> list[dict[str, Any]] | None:
    """Return each of the invoice's taxes with its rate's name, jurisdiction and percentage.

    Invoices name tax rates by id only, so the rates not seen before are fetched together, once,
    and kept in `tax_rates`.
    """
    if not snapshot.tax_amounts:
        return None
    named = sorted({rate for rate, _ in snapshot.tax_amounts})
    stored = ctx.read([(mirror.row_by_id(TAX_RATES), {"row_id": rate}) for rate in named])
    rates = {rate: rows[0] for rate, rows in zip(named, stored, strict=True) if rows}
    missing = [rate for rate in named if rate not in rates]
    if missing:
        for raw in ctx.fetch("tax_rates", ",".join(missing), "tax_rates") or []:
            found = tax_rate_snapshot(raw)
            values = {"id": found.id, **found.terms(), "created_at": ctx.now}
            ctx.write(mirror.insert_row(TAX_RATES), values)
            rates[found.id] = values
    lines = []
    for rate_id, amount in snapshot.tax_amounts:
        rate = rates.get(rate_id) or {}
        lines.append(
            {
                "tax_rate": rate_id,
                "display_name": rate.get("display_name") or "Tax",
                "jurisdiction": rate.get("jurisdiction"),
                "percentage": rate.get("percentage"),
                "inclusive": bool(rate.get("inclusive")),
                "amount": amount,
            }
        )
    return lines


def _apply_invoice(ctx: HandlerContext, obj: dict[str, Any]) -> tuple[InvoiceSnapshot, str]:
    """Apply the event's invoice; return its snapshot (as the event has it) and customer."""
    snapshot = event_snapshot = invoice_snapshot(obj)
    customer_id, row = lock_customer_and_read(
        ctx, snapshot.stripe_customer_id, INVOICES, snapshot.id
    )
    values = _invoice_values(snapshot, customer_id)
    values["tax_amounts"] = _tax_lines(ctx, snapshot)
    if row is not None:
        differs = row_values(row, values) != values
        progress = compare_progress(
            invoice_progress(snapshot.status, snapshot.attempt_count, snapshot.amount_paid),
            invoice_progress(row["status"], row["attempt_count"], row["amount_paid"]),
        )
        found = settle(ctx, row, differs, progress, "invoice", snapshot.id)
        if found is SKIP:
            _record_invoice_payments(ctx, snapshot.payments, customer_id)
            return event_snapshot, customer_id
        if found is not None:
            snapshot = invoice_snapshot(found)
            values = _invoice_values(snapshot, customer_id)
            values["tax_amounts"] = _tax_lines(ctx, snapshot)
    _mirror_discounts(ctx, customer_id, snapshot.id, snapshot.discount_ids)
    write_row(ctx, INVOICES, "invoice", snapshot.id, row, values, customer_id)
    _record_invoice_payments(ctx, snapshot.payments, customer_id)
    return event_snapshot, customer_id


def _record_invoice_payments(
    ctx: HandlerContext, payments: Iterable[InvoicePaymentSnapshot], customer_id: str | None
) -> None:
    """Keep which PaymentIntent or charge paid which invoice, and link those charges."""
    for payment in payments:
        row = ctx.row(INVOICE_PAYMENTS, payment.id)
        values = {
            "invoice_id": payment.invoice_id,
            "payment_intent": payment.payment_intent,
            "charge_id": payment.charge_id,
            "status": payment.status,
        }
        if row is None:
            ctx.write(mirror.insert_row(INVOICE_PAYMENTS), {**values, "id": payment.id})
        elif row_values(row, values) != values:
            ctx.write(mirror.update_by_id(INVOICE_PAYMENTS), {**values, "row_id": payment.id})
        links: list[Read] = []
        linked = {"paid_invoice": payment.invoice_id, "now": ctx.now}
        if payment.payment_intent:
            by_intent = {**linked, "paid_by_intent": payment.payment_intent}
            links.append((mirror.LINK_CHARGES_BY_INTENT, by_intent))
        if payment.charge_id:
            links.append((mirror.LINK_CHARGE_BY_ID, {**linked, "charge_id": payment.charge_id}))
        for charges in ctx.read(links) if links else []:
            for charge_id in (charge["id"] for charge in charges):
                ctx.audit(
                    "charge",
                    charge_id,
                    "linked",
                    {"invoice_id": None},
                    {"invoice_id": payment.invoice_id},
                    customer_id,
                )


def on_invoice(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice as the event carries it (created, finalized, updated, voided,
    uncollectible)."""
    _hold_for_first_transfer(ctx, *_apply_invoice(ctx, obj))


def on_invoice_paid(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a paid invoice (`invoice.paid`, `invoice.payment_succeeded`); queue its receipt."""
    applied = _apply_invoice(ctx, obj)
    _hold_for_first_transfer(ctx, *applied)
    notices.notice_invoice_paid(ctx, *applied)


def _hold_for_first_transfer(
    ctx: HandlerContext, snapshot: InvoiceSnapshot, customer_id: str
) -> None:
    """A subscription's first invoice paid by bank transfer: access as TOLLGATE_PROCESSING_ACCESS
    says while it is open (the mirror's status decides: events come in any order)."""
    if not snapshot.by_bank_transfer or snapshot.billing_reason != "subscription_create":
        return
    stored = ctx.row(INVOICES, snapshot.id)
    waiting = stored is not None and stored["status"] == "open"
    ctx.flush()
    first_transfer_changed(
        ctx.connection, policy=ctx.dunning, customer_id=customer_id, waiting=waiting, now=ctx.now
    )


def on_invoice_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice whose payment failed: attempt count and next attempt; dunning."""
    notices.notice_invoice_payment_failed(ctx, *_apply_invoice(ctx, obj))


def on_invoice_payment_action_required(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice whose payment waits for the cardholder (3-D Secure); email the link."""
    notices.notice_invoice_action_required(ctx, *_apply_invoice(ctx, obj))


def on_invoice_upcoming(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge a coming renewal; its invoice is a preview with no id, so nothing is kept."""


def on_invoice_payment_paid(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Record which PaymentIntent or charge paid an invoice, linking the charge to it."""
    invoice_id = obj.get("invoice")
    if not isinstance(invoice_id, str):
        return
    payment = invoice_payment_snapshot(obj, invoice_id)
    invoice = ctx.row(INVOICES, invoice_id)
    _record_invoice_payments(ctx, [payment], invoice["customer_id"] if invoice else None)


# -- checkout -------------------------------------------------------------------------------


def on_checkout_session_completed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror the customer and the subscription a Checkout Session started, at once.

    The subscription's own events may arrive later; fetching it here grants access as soon as
    the buyer is back from Checkout. `client_reference_id` names the app's customer.
    """
    session = checkout_session_snapshot(obj)
    if not session.stripe_customer_id:
        return
    customer_id = lock_customer(
        ctx, session.stripe_customer_id, app_id_hint=session.client_reference_id
    )
    if session.mode == "payment":
        ctx.flush()
        grant_purchased_credits(
            ctx.connection, customer_id=customer_id, session=obj, now=ctx.now, actor=ctx.actor
        )
        return
    if session.mode != "subscription" or not session.subscription_id:
        return
    if ctx.row(SUBSCRIPTIONS, session.subscription_id) is not None:
        return
    found = ctx.fetch("subscription", session.subscription_id, "thin")
    if not found:
        raise UnknownStripeObject(f"subscription {session.subscription_id} is not in Stripe")
    _apply_subscription(ctx, found)


def on_checkout_session_async_payment_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """A delayed payment (bank debit) of a Checkout Session arrived: grant what it bought.

    The same as `checkout.session.completed`, now with `payment_status` paid: purchased credits
    are granted only then, and a subscription is mirrored if it is not yet.
    """
    on_checkout_session_completed(ctx, obj)


def on_checkout_session_async_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """A delayed payment of a Checkout Session was returned: nothing was granted for it.

    Credits wait for `payment_status` paid; a subscription's invoice fails through its own
    `invoice.payment_failed` (dunning). Mirror the customer so the session's buyer is known.
    """
    session = checkout_session_snapshot(obj)
    if session.stripe_customer_id:
        lock_customer(ctx, session.stripe_customer_id, app_id_hint=session.client_reference_id)


Handler = Callable[[HandlerContext, dict[str, Any]], None]


def read_ahead(
    connection: Connection,
    events: Sequence[dict[str, Any]],
    group: GroupWrites,
    *,
    first: Read | None = None,
) -> execution.Rows | None:
    """Read what the events about to be applied together will read, for the group to hand
    each event: for `customer.subscription.*` events their customers (locked) and
    subscriptions with items; else, for `customer.*` events, their customer rows (locked).

    A statement or two for the group instead of one read per event (on PostgreSQL a round
    trip each). Valid while only such events have run in the group (`forget_read_ahead` before
    any other kind); an event takes what was read for it once (see `take_subscription`). One
    kind a group, so a group locks what it reads ahead in one order (customers by id), as
    another replica's group does.

    With `first` (a lone event's inbox insert), that event's reads are made too, `first` sent
    before them in their round trip, and its rows returned; None when nothing was read (then
    `first` did not run either).
    """
    pairs = []
    customers = []
    for event in events:
        obj = (event.get("data") or {}).get("object")
        # A malformed event is left to its handler, which fails it alone.
        if not isinstance(obj, dict) or not obj.get("id"):
            continue
        kind = event.get("type")
        if kind in SUBSCRIPTION_EVENTS:
            # As `subscription_snapshot` names them.
            pairs.append((object_id(obj.get("customer")) or "", str(obj["id"])))
        elif kind in CUSTOMER_EVENTS:
            customers.append(str(obj["id"]))

    ran: list[execution.Rows] = []  # `first`'s rows, once it ran

    def reader(reads: Sequence[Read]) -> list[execution.Rows]:
        if first is None:
            return execution.run(connection, group.take(), reads)
        found, *rows = execution.run(connection, group.take(), [first, *reads])
        ran.append(found)
        return rows

    alone = first is not None  # one event: read for it too (else it reads for itself)
    if len({subscription_id for _, subscription_id in pairs}) > 1 or (alone and pairs):
        group.subscriptions = mirror.lock_customers_and_subscriptions(
            reader, connection.dialect.name, pairs
        )
    elif len(set(customers)) > 1 or (alone and customers):
        group.customers = mirror.lock_customer_rows(reader, connection.dialect.name, customers)
    return ran[0] if ran else None


def forget_read_ahead(event: dict[str, Any], group: GroupWrites) -> None:
    """Drop what the group read ahead before an event that may write it otherwise."""
    if (
        group.subscriptions
        and event["type"] in HANDLERS
        and event["type"] not in SUBSCRIPTION_EVENTS
    ):
        group.subscriptions.clear()
    if group.customers and event["type"] in HANDLERS and event["type"] not in CUSTOMER_EVENTS:
        group.customers.clear()


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_checkout_session_completed,
    "checkout.session.async_payment_succeeded": on_checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": on_checkout_session_async_payment_failed,
    "customer.created": on_customer,
    "customer.updated": on_customer,
    "customer.deleted": on_customer_deleted,
    "customer.tax_id.created": on_tax_id,
    "customer.tax_id.updated": on_tax_id,
    "customer.tax_id.deleted": on_tax_id_deleted,
    "customer.subscription.created": on_subscription,
    "customer.subscription.updated": on_subscription,
    "customer.subscription.deleted": on_subscription,
    "customer.subscription.paused": on_subscription,
    "customer.subscription.resumed": on_subscription,
    "customer.subscription.trial_will_end": on_subscription,
    "invoice.created": on_invoice,
    "invoice.finalized": on_invoice,
    "invoice.updated": on_invoice,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_succeeded": on_invoice_paid,
    "invoice.payment_failed": on_invoice_payment_failed,
    "invoice.payment_action_required": on_invoice_payment_action_required,
    "invoice.upcoming": on_invoice_upcoming,
    "invoice.voided": on_invoice,
    "invoice.marked_uncollectible": on_invoice,
    "invoice_payment.paid": on_invoice_payment_paid,
    "payment_intent.succeeded": on_payment_intent,
    "payment_intent.requires_action": on_payment_intent,
    "payment_intent.partially_funded": on_payment_intent,
    "payment_intent.canceled": on_payment_intent,
    "customer_cash_balance_transaction.created": on_cash_balance,
    "cash_balance.funds_available": on_cash_balance,
    "payment_intent.payment_failed": on_payment_intent_payment_failed,
    "payment_intent.processing": on_payment_intent_processing,
    "charge.succeeded": on_charge,
    "charge.failed": on_charge,
    "charge.pending": on_charge_pending,
    "charge.refunded": on_charge_refunded,
    "refund.created": on_refund,
    "refund.updated": on_refund,
    "charge.refund.updated": on_refund,
    "charge.dispute.created": on_dispute,
    "charge.dispute.updated": on_dispute,
    "charge.dispute.closed": on_dispute,
}

# The events whose handler is `on_subscription`: the ones a group reads ahead for.
SUBSCRIPTION_EVENTS = frozenset(
    kind for kind, handler in HANDLERS.items() if handler is on_subscription
)
CUSTOMER_EVENTS = frozenset(
    kind for kind, handler in HANDLERS.items() if handler in (on_customer, on_customer_deleted)
)
