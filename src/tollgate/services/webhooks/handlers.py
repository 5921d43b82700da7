"""One handler per Stripe event type, keeping the local mirror of Stripe's objects.

Each handler runs inside the transaction its caller opened for the event (see
tollgate.services.webhooks.inbox) and works through its context (see .context): it locks the
customer, reads the object's stored row, applies the event's snapshot behind the object's
watermark (tollgate.domain.events.decide), writes and audits what changed, and queues what the
event tells the customer and the app (see .notices). The statements live in
tollgate.db.queries.mirror, which also explains the order locks are taken in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table

from tollgate.db.execution import Read
from tollgate.db.queries import mirror
from tollgate.db.queries.mirror import Row
from tollgate.db.tables import (
    BANK_TRANSFERS,
    CHARGES,
    CUSTOMER_TAX_IDS,
    CUSTOMERS,
    DISCOUNTS,
    DISPUTES,
    INVOICE_PAYMENTS,
    INVOICES,
    REFUNDS,
    SUBSCRIPTION_ITEMS,
    SUBSCRIPTIONS,
    TAX_RATES,
)
from tollgate.domain.events import (
    BankTransferSnapshot,
    ChargeSnapshot,
    CustomerSnapshot,
    Decision,
    DiscountSnapshot,
    InvoicePaymentSnapshot,
    InvoiceSnapshot,
    RefundSnapshot,
    SubscriptionSnapshot,
    bank_transfer_progress,
    charge_progress,
    compare_progress,
    customer_progress,
    decide,
    dispute_progress,
    invoice_progress,
    refund_is_behind,
    subscription_progress,
    tax_id_progress,
)
from tollgate.metrics import WEBHOOK_REFUSED
from tollgate.services.credit_ledger import claw_back_refunds, grant_purchased_credits
from tollgate.services.debits import (
    debit_settled,
    debit_started,
    dispute_changed,
    first_transfer_changed,
)
from tollgate.services.webhooks import notices
from tollgate.services.webhooks.context import HandlerContext, UnknownStripeObject
from tollgate.stripe.translate import (
    bank_transfer_snapshot,
    charge_snapshot,
    checkout_session_snapshot,
    customer_snapshot,
    discount_snapshot,
    dispute_snapshot,
    invoice_payment_snapshot,
    invoice_snapshot,
    refund_snapshot,
    subscription_snapshot,
    tax_id_snapshot,
    tax_rate_snapshot,
)

log = logging.getLogger("tollgate.webhooks")


def _stored(row: Row, keys: Iterable[str]) -> dict[str, Any]:
    return {key: row[key] for key in keys}


SKIP: Any = object()
"""What `_settle` answers when the event is behind the stored row: change nothing."""


def _settle(
    ctx: HandlerContext,
    row: Row | None,
    differs: bool,
    progress: int,
    object_type: str,
    object_id: str,
) -> Any:
    """Return SKIP, None (apply the event's snapshot) or the object as Stripe has it now.

    The stored row's watermark decides (tollgate.domain.events.decide); when the event and the
    row are of the same second and disagree, Stripe is asked, and an object Stripe no longer
    has is skipped.
    """
    if row is None:
        return None
    decision = _decision(ctx, row, differs, progress)
    if decision is Decision.SKIP:
        return SKIP
    if decision is Decision.REFETCH:
        return ctx.fetch(object_type, object_id, "same_second") or SKIP
    return None


def _decision(ctx: HandlerContext, row: Row, differs: bool, progress: int) -> Decision:
    """Decide by the stored row's watermark what the event's snapshot does to it."""
    return decide(
        stored_created=row["watermark_created"],
        stored_event_id=row["watermark_event_id"],
        incoming_created=ctx.created,
        incoming_event_id=ctx.event_id,
        differs=differs,
        progress=progress,
    )


def _write(
    ctx: HandlerContext,
    table: Table,
    object_type: str,
    object_id: str,
    row: Row | None,
    values: dict[str, Any],
    customer_id: str | None,
    *,
    audited: dict[str, Any] | None = None,
    before_extra: dict[str, Any] | None = None,
    action: str | None = None,
) -> dict[str, Any]:
    """Insert or update a watermarked mirror row, audit what changed; return the row as written."""
    before = None if row is None else {**_stored(row, values), **(before_extra or {})}
    after = {**values, **(audited or {})}
    watermark = {"watermark_created": ctx.created, "watermark_event_id": ctx.event_id}
    if row is None:
        written = {**values, **watermark, "id": object_id, "created_at": ctx.now}
        ctx.write(mirror.insert_row(table), {**written, "updated_at": ctx.now})
    else:
        # Only what changed: fewer values to convert and send, the same row in the end.
        written = {key: value for key, value in values.items() if row[key] != value}
        written.update(watermark)
        if before != after:
            written["updated_at"] = ctx.now
        ctx.write(mirror.update_by_id(table), {**written, "row_id": object_id})
        written = {**row, **values, **written}
    action = action or ("created" if before is None else "updated")
    ctx.audit(object_type, object_id, action, before, after, customer_id)
    return written


# -- customers ----------------------------------------------------------------------------


def _customer_values(snapshot: CustomerSnapshot, account: str | None) -> dict[str, Any]:
    return {
        "email": snapshot.email,
        "name": snapshot.name,
        "currency": snapshot.currency,
        "metadata": dict(snapshot.metadata),
        "deleted": snapshot.deleted,
        "stripe_account": account,
        "address": dict(snapshot.address) if snapshot.address else None,
        "tax_exempt": snapshot.tax_exempt,
    }


def _customer_by_stripe_id(ctx: HandlerContext, stripe_customer_id: str) -> Row | None:
    found = ctx.rows(mirror.CUSTOMER_BY_STRIPE_ID, stripe_customer_id=stripe_customer_id)
    return found[0] if found else None


def _new_customer(
    ctx: HandlerContext, snapshot: CustomerSnapshot, app_id_hint: str | None = None
) -> Row:
    """Create the mirror row of a customer seen for the first time, under the app's id."""
    app_id = snapshot.app_id if snapshot.app_id != snapshot.stripe_id else app_id_hint
    row = None
    if app_id:
        # The app may have made the customer (e.g. offline) before Stripe had it.
        row = ctx.row(CUSTOMERS, app_id, lock=True)
        if row is not None and row["stripe_customer_id"] not in (None, snapshot.stripe_id):
            row, app_id = None, None  # that id is another Stripe customer's: use the cus_ id
        elif not _stamped_by_tollgate(row, ctx.account):
            row, app_id = None, None  # a tenant's claim, not Tollgate's stamp: the cus_ id
    values = _customer_values(snapshot, ctx.account)
    linked = {
        **values,
        "stripe_customer_id": snapshot.stripe_id,
        "watermark_created": ctx.created,
        "watermark_event_id": ctx.event_id,
    }
    if row is not None:
        before = {**_stored(row, values), "stripe_customer_id": row["stripe_customer_id"]}
        ctx.write(mirror.update_by_id(CUSTOMERS), {**linked, "row_id": row["id"]})
        after = {**values, "stripe_customer_id": snapshot.stripe_id}
        ctx.audit("customer", row["id"], "linked", before, after, row["id"])
        return {**row, **linked}
    created = {
        **linked,
        "id": app_id or snapshot.stripe_id,
        "offline": False,
        "state_version": 0,
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    ctx.write(mirror.insert_row(CUSTOMERS), created)
    after = {**values, "stripe_customer_id": snapshot.stripe_id}
    ctx.audit("customer", created["id"], "created", None, after, created["id"])
    return created


def _stamped_by_tollgate(row: Row | None, account: str | None) -> bool:
    """Whether an app id a Stripe customer names (metadata, client_reference_id) is to be trusted.

    On the platform, Tollgate stamps it on the customers it makes, and the platform's Stripe
    account is the operator's own. A connected account is a tenant's: anyone with access to it
    can write any metadata. Its claim is trusted only for a customer the app created on that
    very account (the row exists, attached to it by the operator's app); otherwise the customer
    is mirrored under its `cus_` id, and cannot take an id the app may create later.
    """
    if account is None:
        return True
    return row is not None and row["stripe_account"] == account


def _lock_customer(
    ctx: HandlerContext, stripe_customer_id: str, *, app_id_hint: str | None = None
) -> str:
    """Lock the customer's row and return its id; create it from Stripe's copy if first seen."""
    locked = ctx.rows(mirror.LOCK_CUSTOMER, stripe_customer_id=stripe_customer_id)
    if locked:
        return str(locked[0]["id"])
    return _first_seen_customer(ctx, stripe_customer_id, app_id_hint)


def _first_seen_customer(
    ctx: HandlerContext, stripe_customer_id: str, app_id_hint: str | None = None
) -> str:
    """Create the mirror row of a customer the mirror lacks, from Stripe's copy; return its id."""
    found = ctx.fetch("customer", stripe_customer_id, "first_seen")
    if not found:
        raise UnknownStripeObject(
            f"customer {stripe_customer_id} is not in Stripe"
            + (f" account {ctx.account}" if ctx.account else "")
        )
    return str(_new_customer(ctx, customer_snapshot(found), app_id_hint)["id"])


def _lock_customer_and_read(
    ctx: HandlerContext, stripe_customer_id: str, table: Table, row_id: str
) -> tuple[str, Row | None]:
    """Lock the customer (made from Stripe's copy if first seen), then read the object's row."""
    statement = mirror.row_by_id(table, lock=True)
    customer_id, rows = mirror.lock_customer_and_read(
        ctx.read, stripe_customer_id, statement, row_id
    )
    if customer_id is None:
        # First seen: made now, so the object is read again behind its lock.
        customer_id = _first_seen_customer(ctx, stripe_customer_id)
        rows = ctx.rows(statement, row_id=row_id)
    return customer_id, rows[0] if rows else None


def _apply_customer(ctx: HandlerContext, obj: dict[str, Any], *, deleted: bool = False) -> None:
    snapshot = customer_snapshot(obj, deleted=deleted)
    row = _customer_by_stripe_id(ctx, snapshot.stripe_id)
    if row is None:
        _new_customer(ctx, snapshot)
        return
    values = _customer_values(snapshot, ctx.account)
    # Stripe cannot undelete a customer, so deletion stays whatever order events come in.
    values["deleted"] = snapshot.deleted or row["deleted"]
    differs = _stored(row, values) != values
    progress = compare_progress(
        customer_progress(values["deleted"]), customer_progress(row["deleted"])
    )
    found = _settle(ctx, row, differs, progress, "customer", snapshot.stripe_id)
    if found is SKIP:
        return
    if found is not None:
        values = _customer_values(customer_snapshot(found), ctx.account)
        values["deleted"] = values["deleted"] or row["deleted"]
    action = "deleted" if values["deleted"] and not row["deleted"] else None
    _write(ctx, CUSTOMERS, "customer", row["id"], row, values, row["id"], action=action)


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
    customer_id, row = _lock_customer_and_read(
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
        differs = _stored(row, values) != values
        progress = compare_progress(
            tax_id_progress(bool(values["deleted"]), snapshot.verification),
            tax_id_progress(row["deleted"], row["verification"]),
        )
        # Same second, different content, and no way to tell: the newest event id wins, as a
        # tax ID has nothing else to fetch by its own id.
        if _settle_without_fetch(ctx, row, differs, progress):
            return
    _write(ctx, CUSTOMER_TAX_IDS, "tax_id", snapshot.id, row, values, customer_id)


def _settle_without_fetch(ctx: HandlerContext, row: Row, differs: bool, progress: int) -> bool:
    """Return whether the stored row wins over the event (for objects not fetched by id)."""
    decision = _decision(ctx, row, differs, progress)
    if decision is Decision.REFETCH:
        return ctx.event_id < str(row["watermark_event_id"] or "")
    return decision is Decision.SKIP


def on_tax_id(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a customer's tax ID as added or verified (`customer.tax_id.created|updated`)."""
    _apply_tax_id(ctx, obj)


def on_tax_id_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mark a customer's tax ID deleted; it stays deleted whatever arrives later."""
    _apply_tax_id(ctx, obj, deleted=True)


# -- subscriptions ------------------------------------------------------------------------


def _subscription_values(snapshot: SubscriptionSnapshot, customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "status": snapshot.status,
        "cancel_at_period_end": snapshot.cancel_at_period_end,
        "cancel_at": snapshot.cancel_at,
        "canceled_at": snapshot.canceled_at,
        "ended_at": snapshot.ended_at,
        "trial_start": snapshot.trial_start,
        "trial_end": snapshot.trial_end,
        "current_period_start": snapshot.current_period_start,
        "current_period_end": snapshot.current_period_end,
        "collection_method": snapshot.collection_method,
        "currency": snapshot.currency,
        "plan": snapshot.plan,
        "plan_version": snapshot.plan_version,
        "interval": snapshot.interval,
        "seats": snapshot.seats,
        "latest_invoice": snapshot.latest_invoice,
        "discount_ids": list(snapshot.discount_ids) or None,
    }


def _item_values(snapshot: SubscriptionSnapshot) -> list[dict[str, Any]]:
    return [{key: getattr(item, key) for key in mirror.ITEM_KEYS} for item in snapshot.items]


def _customer_and_subscription(
    ctx: HandlerContext, stripe_customer_id: str, subscription_id: str
) -> tuple[str, Row | None, list[dict[str, Any]]]:
    """Lock the customer; return its id, the stored subscription (locked) and its items."""
    customer_id, row, items = mirror.lock_customer_and_subscription(
        ctx.read, ctx.dialect, stripe_customer_id, subscription_id
    )
    if customer_id is None:
        # First seen: made now, so the subscription is read again behind its lock.
        customer_id = _first_seen_customer(ctx, stripe_customer_id)
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
    if row is not None:
        differs = _stored(row, values) != values or stored_items != items
        progress = compare_progress(
            subscription_progress(snapshot.status, snapshot.current_period_start),
            subscription_progress(row["status"], row["current_period_start"]),
        )
        found = _settle(ctx, row, differs, progress, "subscription", snapshot.id)
        if found is SKIP:
            return event_snapshot, customer_id
        if found is not None:
            snapshot = subscription_snapshot(found)
            values = _subscription_values(snapshot, customer_id)
            items = _item_values(snapshot)
    _mirror_discounts(ctx, customer_id, snapshot.id, snapshot.discount_ids)
    # The subscription row is written first: its items reference it.
    _write(
        ctx,
        SUBSCRIPTIONS,
        "subscription",
        snapshot.id,
        row,
        values,
        customer_id,
        audited={"items": _item_summary(items)},
        before_extra={"items": _item_summary(stored_items)} if row is not None else None,
    )
    if items != stored_items:
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
    gone = [item_id for item_id in existing if item_id not in wanted]
    if gone:
        ctx.write(mirror.delete_items(gone))
    added = [
        {**values, "subscription_id": subscription_id}
        for item_id, values in wanted.items()
        if item_id not in existing
    ]
    if added:
        ctx.write(mirror.insert_row(SUBSCRIPTION_ITEMS), added)
    for item_id, values in wanted.items():
        stored_values = existing.get(item_id)
        if stored_values is not None and stored_values != values:
            changed = {key: value for key, value in values.items() if stored_values[key] != value}
            ctx.write(mirror.update_by_id(SUBSCRIPTION_ITEMS), {**changed, "row_id": item_id})


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
    customer_id, row = _lock_customer_and_read(
        ctx, snapshot.stripe_customer_id, INVOICES, snapshot.id
    )
    values = _invoice_values(snapshot, customer_id)
    values["tax_amounts"] = _tax_lines(ctx, snapshot)
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            invoice_progress(snapshot.status, snapshot.attempt_count, snapshot.amount_paid),
            invoice_progress(row["status"], row["attempt_count"], row["amount_paid"]),
        )
        found = _settle(ctx, row, differs, progress, "invoice", snapshot.id)
        if found is SKIP:
            _record_invoice_payments(ctx, snapshot.payments, customer_id)
            return event_snapshot, customer_id
        if found is not None:
            snapshot = invoice_snapshot(found)
            values = _invoice_values(snapshot, customer_id)
            values["tax_amounts"] = _tax_lines(ctx, snapshot)
    _mirror_discounts(ctx, customer_id, snapshot.id, snapshot.discount_ids)
    _write(ctx, INVOICES, "invoice", snapshot.id, row, values, customer_id)
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
        elif _stored(row, values) != values:
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


# -- payments -------------------------------------------------------------------------------


def on_payment_intent(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a payment by bank transfer: where to send the money, how much is still to come.

    Other payments are only acknowledged: their money is mirrored from the `charge.*` events
    they also send.
    """
    snapshot = bank_transfer_snapshot(obj)
    if snapshot is None or not snapshot.stripe_customer_id:
        return
    customer_id, row = _lock_customer_and_read(
        ctx, snapshot.stripe_customer_id, BANK_TRANSFERS, snapshot.id
    )
    values = _bank_transfer_values(snapshot, customer_id, row)
    if row is not None:
        progress = compare_progress(
            bank_transfer_progress(values["status"], values["amount"], values["amount_remaining"]),
            bank_transfer_progress(row["status"], row["amount"], row["amount_remaining"]),
        )
        differs = _stored(row, values) != values
        found = _settle(ctx, row, differs, progress, "payment_intent", snapshot.id)
        if found is SKIP:
            return
        fetched = bank_transfer_snapshot(found) if found is not None else None
        if fetched is not None:
            values = _bank_transfer_values(fetched, customer_id, row)
    _write(ctx, BANK_TRANSFERS, "bank_transfer", snapshot.id, row, values, customer_id)


def _bank_transfer_values(
    snapshot: BankTransferSnapshot, customer_id: str, row: Row | None
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "amount": snapshot.amount,
        "amount_remaining": snapshot.amount_remaining,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "reference": snapshot.reference,
        "account": snapshot.account,
        "instructions_url": snapshot.instructions_url,
    }
    if row is not None:
        # A settled payment has no instructions left: keep the ones it was paid to.
        for key in ("reference", "account", "instructions_url"):
            if values[key] is None:
                values[key] = row[key]
    return values


def on_cash_balance(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """A bank transfer moved the customer's cash balance: keep Stripe's figure, fetched, so
    the events of several transfers in any order end the same."""
    stripe_customer_id = obj.get("customer")
    if not isinstance(stripe_customer_id, str):
        return
    customer_id = _lock_customer(ctx, stripe_customer_id)
    found = ctx.fetch("cash_balance", stripe_customer_id, "current") or {}
    available = {
        str(currency).lower(): int(amount)
        for currency, amount in sorted((found.get("available") or {}).items())
        if amount
    }
    row = ctx.row(CUSTOMERS, customer_id, lock=True)
    if row is None or row["cash_balance"] == available:
        return
    ctx.write(
        mirror.update_by_id(CUSTOMERS),
        {"cash_balance": available, "updated_at": ctx.now, "row_id": customer_id},
    )
    ctx.audit(
        "customer",
        customer_id,
        "updated",
        {"cash_balance": row["cash_balance"]},
        {"cash_balance": available},
        customer_id,
    )


def on_payment_intent_processing(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge; the processing debit is mirrored from its `charge.pending` event."""


def on_payment_intent_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge; the failed charge and the invoice's attempt come in their own events."""


def _charge_values(
    ctx: HandlerContext, snapshot: ChargeSnapshot, customer_id: str | None, row: Row | None
) -> dict[str, Any]:
    invoice_id = row["invoice_id"] if row is not None else None
    disputed = snapshot.disputed or (row is not None and bool(row["disputed"]))
    # What the mirror does not say yet, asked in one round trip: the invoice the charge paid (by
    # the charge, else by its PaymentIntent) and whether a dispute of it arrived first.
    reads: list[Read] = []
    if invoice_id is None:
        reads.append((mirror.INVOICE_PAID_BY_CHARGE, {"charge_id": snapshot.id}))
        if snapshot.payment_intent:
            by_intent = {"payment_intent": snapshot.payment_intent}
            reads.append((mirror.INVOICE_PAID_BY_INTENT, by_intent))
    if not disputed:
        reads.append((mirror.DISPUTE_OF_CHARGE, {"charge_id": snapshot.id}))
    found = iter(ctx.read(reads) if reads else [])
    if invoice_id is None:
        candidates = [next(found)] + ([next(found)] if snapshot.payment_intent else [])
        invoice_id = next((rows[0]["invoice_id"] for rows in candidates if rows), None)
    if not disputed:
        disputed = bool(next(found))
    return {
        "customer_id": customer_id,
        "payment_intent": snapshot.payment_intent,
        "invoice_id": invoice_id,
        "amount": snapshot.amount,
        "amount_refunded": snapshot.amount_refunded,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "refunded": snapshot.refunded,
        "disputed": disputed,
        "payment_method_type": snapshot.payment_method_type
        or (row["payment_method_type"] if row is not None else None),
    }


def _apply_charge(ctx: HandlerContext, obj: dict[str, Any], *, refunds_wanted: bool) -> Row:
    snapshot = charge_snapshot(obj)
    customer_id: str | None = None
    row: Row | None
    if snapshot.stripe_customer_id:
        customer_id, row = _lock_customer_and_read(
            ctx, snapshot.stripe_customer_id, CHARGES, snapshot.id
        )
    else:
        row = ctx.row(CHARGES, snapshot.id, lock=True)
    values = _charge_values(ctx, snapshot, customer_id, row)
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            charge_progress(
                snapshot.status, snapshot.amount_refunded, snapshot.refunded, snapshot.disputed
            ),
            charge_progress(
                row["status"], row["amount_refunded"], row["refunded"], row["disputed"]
            ),
        )
        found = _settle(ctx, row, differs, progress, "charge", snapshot.id)
        if found is SKIP:
            return row
        if found is not None:
            snapshot = charge_snapshot(found)
            values = _charge_values(ctx, snapshot, customer_id, row)
    written = _write(ctx, CHARGES, "charge", snapshot.id, row, values, customer_id)
    refunds = snapshot.refunds
    if refunds is None and refunds_wanted and snapshot.amount_refunded > 0:
        # The charge's refunds list is not in this API version's payload by default.
        fetched = ctx.fetch("refunds", snapshot.id, "thin")
        refunds = tuple(refund_snapshot(refund) for refund in fetched or [])
    for refund in refunds or ():
        _apply_refund_snapshot(ctx, refund, customer_id)
    return written


def _apply_refund_snapshot(
    ctx: HandlerContext, snapshot: RefundSnapshot, customer_id: str | None
) -> None:
    row = ctx.row(REFUNDS, snapshot.id, lock=True)
    if row is not None and refund_is_behind(snapshot.status, row["status"]):
        return
    values = {
        "charge_id": snapshot.charge_id,
        "amount": snapshot.amount,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "reason": snapshot.reason,
    }
    before = None if row is None else _stored(row, values)
    if row is None:
        ctx.write(
            mirror.insert_row(REFUNDS),
            {**values, "id": snapshot.id, "created_at": ctx.now, "updated_at": ctx.now},
        )
    elif before != values:
        ctx.write(
            mirror.update_by_id(REFUNDS), {**values, "updated_at": ctx.now, "row_id": snapshot.id}
        )
    ctx.audit(
        "refund", snapshot.id, "created" if row is None else "updated", before, values, customer_id
    )


BANK_DEBIT = "us_bank_account"  # the payment method type of an ACH debit


def on_charge(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a succeeded or failed charge against its customer (and invoice, once known)."""
    row = _apply_charge(ctx, obj, refunds_wanted=False)
    if (
        row["customer_id"]
        and row["payment_method_type"] == BANK_DEBIT
        and row["status"] != "pending"
    ):
        ctx.flush()
        debit_settled(ctx.connection, customer_id=row["customer_id"], now=ctx.now)


def on_charge_pending(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a bank debit that is processing; access meanwhile as TOLLGATE_PROCESSING_ACCESS
    says. Its invoice stays open: only `invoice.paid` marks it paid."""
    row = _apply_charge(ctx, obj, refunds_wanted=False)
    if row["customer_id"] and row["status"] == "pending":
        ctx.flush()
        debit_started(
            ctx.connection, policy=ctx.dunning, customer_id=row["customer_id"], now=ctx.now
        )


def on_charge_refunded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refunded charge and its refunds, against its invoice and customer."""
    _apply_charge(ctx, obj, refunds_wanted=True)
    ctx.flush()
    claw_back_refunds(ctx.connection, charge_id=obj["id"], now=ctx.now, actor=ctx.actor)


def on_refund(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new refund, or one whose status changed; take back credits it refunded."""
    snapshot = refund_snapshot(obj)
    charge = ctx.row(CHARGES, snapshot.charge_id) if snapshot.charge_id else None
    _apply_refund_snapshot(ctx, snapshot, charge["customer_id"] if charge else None)
    if charge is not None:
        ctx.flush()
        claw_back_refunds(ctx.connection, charge_id=charge["id"], now=ctx.now, actor=ctx.actor)


def _apply_dispute(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    snapshot = dispute_snapshot(obj)
    charge = ctx.row(CHARGES, snapshot.charge_id)
    if charge is None:
        # Record the dispute against the charge's customer and invoice: fetch the charge.
        found = ctx.fetch("charge", snapshot.charge_id, "first_seen")
        if not found:
            raise UnknownStripeObject(f"charge {snapshot.charge_id} is not in Stripe")
        charge = _apply_charge(ctx, found, refunds_wanted=False)
    customer_id = charge["customer_id"]
    if customer_id:
        ctx.row(CUSTOMERS, customer_id, lock=True)
    row = ctx.row(DISPUTES, snapshot.id, lock=True)
    values = {
        "charge_id": snapshot.charge_id,
        "payment_intent": snapshot.payment_intent,
        "amount": snapshot.amount,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "reason": snapshot.reason,
        "evidence_due_by": snapshot.evidence_due_by,
        "customer_id": customer_id,
    }
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            dispute_progress(snapshot.status), dispute_progress(row["status"])
        )
        found = _settle(ctx, row, differs, progress, "dispute", snapshot.id)
        if found is SKIP:
            return
        if found is not None:
            snapshot = dispute_snapshot(found)
            values = {
                **values,
                "status": snapshot.status,
                "reason": snapshot.reason,
                "evidence_due_by": snapshot.evidence_due_by,
            }
    _write(ctx, DISPUTES, "dispute", snapshot.id, row, values, customer_id)
    if customer_id:
        notices.notice_dispute(ctx, snapshot, customer_id)
        ctx.flush()
        dispute_changed(ctx.connection, policy=ctx.dunning, customer_id=customer_id, now=ctx.now)
    if not charge["disputed"]:
        ctx.write(
            mirror.update_by_id(CHARGES),
            {"disputed": True, "updated_at": ctx.now, "row_id": charge["id"]},
        )
        ctx.audit(
            "charge", charge["id"], "disputed", {"disputed": False}, {"disputed": True}, customer_id
        )


def on_dispute(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Record a dispute against its charge, invoice and customer; mirror its status (won, lost
    or warning closed when it closes)."""
    _apply_dispute(ctx, obj)


# -- checkout -------------------------------------------------------------------------------


def on_checkout_session_completed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror the customer and the subscription a Checkout Session started, at once.

    The subscription's own events may arrive later; fetching it here grants access as soon as
    the buyer is back from Checkout. `client_reference_id` names the app's customer.
    """
    session = checkout_session_snapshot(obj)
    if not session.stripe_customer_id:
        return
    customer_id = _lock_customer(
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
        _lock_customer(ctx, session.stripe_customer_id, app_id_hint=session.client_reference_id)


Handler = Callable[[HandlerContext, dict[str, Any]], None]

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
