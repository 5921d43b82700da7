"""One handler per Stripe event type, keeping the local mirror of Stripe's objects.

Each handler runs inside the transaction `process_stripe_event` opened for the event. A handler
applies the event's snapshot behind the object's watermark (see tollgate.domain.events.decide)
and never calls Stripe itself. When it needs an object the event does not carry, it calls
`ctx.fetch`. The first time that raises NeedsFetch, which rolls the transaction back; the caller
fetches outside any transaction and runs the handler again with the object at hand. So no row
lock or SQLite write lock is held while Stripe answers.

Locks: every handler locks the customer row first (PostgreSQL `FOR UPDATE`), then the object's
row. All events of one customer therefore apply one at a time, always taking locks in the same
order. On SQLite the processing transaction already holds the database's write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tollgate.db.models import (
    AuditLog,
    Charge,
    Customer,
    Dispute,
    Invoice,
    InvoicePayment,
    Refund,
    Subscription,
    SubscriptionItem,
)
from tollgate.domain.errors import TollgateError
from tollgate.domain.events import (
    ChargeSnapshot,
    CustomerSnapshot,
    Decision,
    InvoicePaymentSnapshot,
    RefundSnapshot,
    SubscriptionSnapshot,
    changed_fields,
    charge_progress,
    compare_progress,
    customer_progress,
    decide,
    dispute_progress,
    invoice_progress,
    refund_is_behind,
    subscription_progress,
)
from tollgate.stripe.translate import (
    charge_snapshot,
    checkout_session_snapshot,
    customer_snapshot,
    dispute_snapshot,
    invoice_payment_snapshot,
    invoice_snapshot,
    refund_snapshot,
    subscription_snapshot,
)


class UnknownStripeObject(TollgateError):
    """An event refers to an object Stripe does not have (in this account)."""

    type = "unknown_stripe_object"


class NeedsFetch(Exception):
    """Raised inside a handler to have the caller fetch an object from Stripe, then rerun it."""

    def __init__(self, object_type: str, object_id: str, reason: str, account: str | None):
        super().__init__(f"{object_type} {object_id} needed from Stripe ({reason})")
        self.object_type = object_type
        self.object_id = object_id
        self.reason = reason
        self.account = account

    @property
    def key(self) -> tuple[str, str]:
        return (self.object_type, self.object_id)


@dataclass
class HandlerContext:
    """What a handler knows: the transaction, the event, and objects fetched from Stripe."""

    session: Session
    event: dict[str, Any]
    now: datetime
    fetched: dict[tuple[str, str], Any]
    touched: dict[str, Customer] = field(default_factory=dict)
    changes: int = 0

    @property
    def event_id(self) -> str:
        return str(self.event["id"])

    @property
    def created(self) -> int:
        return int(self.event["created"])

    @property
    def account(self) -> str | None:
        account = self.event.get("account")
        return account if isinstance(account, str) else None

    def fetch(self, object_type: str, object_id: str, reason: str) -> Any:
        """Return the object as Stripe has it now (None when Stripe has no such object)."""
        key = (object_type, object_id)
        if key in self.fetched:
            return self.fetched[key]
        raise NeedsFetch(object_type, object_id, reason, self.account)

    def audit(
        self,
        object_type: str,
        object_id: str,
        action: str,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        customer: Customer | None,
    ) -> None:
        """Record a change that was applied, and mark its customer's cached state stale."""
        old, new = changed_fields(before, after)
        if not new:
            return
        self.session.add(
            AuditLog(
                at=self.now,
                actor=f"stripe:{self.event_id}",
                object_type=object_type,
                object_id=object_id,
                action=action,
                before=_jsonable(old) if before is not None else None,
                after=_jsonable(new),
                event_id=self.event_id,
            )
        )
        self.changes += 1
        if customer is not None:
            self.touched[customer.id] = customer

    def finish(self) -> None:
        """Bump `state_version` once for each customer whose state this event changed."""
        for customer in self.touched.values():
            customer.state_version += 1
            customer.updated_at = self.now


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in values.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def _stored(row: Any, keys: Iterable[str]) -> dict[str, Any]:
    return {key: getattr(row, key) for key in keys}


def _decide(ctx: HandlerContext, row: Any, differs: bool, progress: int) -> Decision:
    if row is None:
        return Decision.APPLY
    return decide(
        stored_created=row.watermark_created,
        stored_event_id=row.watermark_event_id,
        incoming_created=ctx.created,
        incoming_event_id=ctx.event_id,
        differs=differs,
        progress=progress,
    )


def _write(
    ctx: HandlerContext,
    model: type[Any],
    object_type: str,
    object_id: str,
    row: Any,
    values: dict[str, Any],
    customer: Customer | None,
    *,
    audited: dict[str, Any] | None = None,
    before_extra: dict[str, Any] | None = None,
    action: str | None = None,
) -> Any:
    """Insert or update a watermarked mirror row, and audit what changed."""
    before = None if row is None else {**_stored(row, values), **(before_extra or {})}
    if row is None:
        row = model(id=object_id, created_at=ctx.now, updated_at=ctx.now, **values)
        ctx.session.add(row)
    else:
        for key, value in values.items():
            setattr(row, key, value)
    row.watermark_created = ctx.created
    row.watermark_event_id = ctx.event_id
    after = {**values, **(audited or {})}
    if before is None or before != after:
        row.updated_at = ctx.now
    action = action or ("created" if before is None else "updated")
    ctx.audit(object_type, object_id, action, before, after, customer)
    return row


# -- customers ----------------------------------------------------------------------------


def _customer_values(snapshot: CustomerSnapshot, account: str | None) -> dict[str, Any]:
    return {
        "email": snapshot.email,
        "name": snapshot.name,
        "currency": snapshot.currency,
        "metadata_": dict(snapshot.metadata),
        "deleted": snapshot.deleted,
        "stripe_account": account,
    }


def _customer_by_stripe_id(ctx: HandlerContext, stripe_customer_id: str) -> Customer | None:
    return ctx.session.scalars(
        select(Customer).where(Customer.stripe_customer_id == stripe_customer_id).with_for_update()
    ).first()


def _new_customer(
    ctx: HandlerContext, snapshot: CustomerSnapshot, app_id_hint: str | None = None
) -> Customer:
    """Create the mirror row of a customer seen for the first time, under the app's id."""
    app_id = snapshot.app_id if snapshot.app_id != snapshot.stripe_id else app_id_hint
    row = None
    if app_id:
        # The app may have made the customer (e.g. offline) before Stripe had it.
        row = ctx.session.get(Customer, app_id, with_for_update=True)
        if row is not None and row.stripe_customer_id not in (None, snapshot.stripe_id):
            row, app_id = None, None  # that id is another Stripe customer's: use the cus_ id
    values = _customer_values(snapshot, ctx.account)
    if row is not None:
        before = {**_stored(row, values), "stripe_customer_id": row.stripe_customer_id}
        for key, value in values.items():
            setattr(row, key, value)
        row.stripe_customer_id = snapshot.stripe_id
        row.watermark_created, row.watermark_event_id = ctx.created, ctx.event_id
        after = {**values, "stripe_customer_id": snapshot.stripe_id}
        ctx.audit("customer", row.id, "linked", before, after, row)
        return row
    row = Customer(
        id=app_id or snapshot.stripe_id,
        stripe_customer_id=snapshot.stripe_id,
        offline=False,
        state_version=0,
        watermark_created=ctx.created,
        watermark_event_id=ctx.event_id,
        created_at=ctx.now,
        updated_at=ctx.now,
        **values,
    )
    ctx.session.add(row)
    ctx.audit(
        "customer",
        row.id,
        "created",
        None,
        {**values, "stripe_customer_id": snapshot.stripe_id},
        row,
    )
    return row


def _lock_customer(
    ctx: HandlerContext, stripe_customer_id: str, *, app_id_hint: str | None = None
) -> Customer:
    """Lock the customer's row, creating it from Stripe's copy the first time it is seen."""
    row = _customer_by_stripe_id(ctx, stripe_customer_id)
    if row is not None:
        return row
    found = ctx.fetch("customer", stripe_customer_id, "first_seen")
    if not found:
        raise UnknownStripeObject(
            f"customer {stripe_customer_id} is not in Stripe"
            + (f" account {ctx.account}" if ctx.account else "")
        )
    return _new_customer(ctx, customer_snapshot(found), app_id_hint)


def _apply_customer(ctx: HandlerContext, obj: dict[str, Any], *, deleted: bool = False) -> None:
    snapshot = customer_snapshot(obj, deleted=deleted)
    row = _customer_by_stripe_id(ctx, snapshot.stripe_id)
    if row is None:
        _new_customer(ctx, snapshot)
        return
    values = _customer_values(snapshot, ctx.account)
    # Stripe cannot undelete a customer, so deletion stays whatever order events come in.
    values["deleted"] = snapshot.deleted or row.deleted
    differs = _stored(row, values) != values
    progress = compare_progress(
        customer_progress(values["deleted"]), customer_progress(row.deleted)
    )
    decision = _decide(ctx, row, differs, progress)
    if decision is Decision.SKIP:
        return
    if decision is Decision.REFETCH:
        found = ctx.fetch("customer", snapshot.stripe_id, "same_second")
        if not found:
            return
        values = _customer_values(customer_snapshot(found), ctx.account)
        values["deleted"] = values["deleted"] or row.deleted
    action = "deleted" if values["deleted"] and not row.deleted else None
    _write(ctx, Customer, "customer", row.id, row, values, row, action=action)


def on_customer_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new Stripe customer."""
    _apply_customer(ctx, obj)


def on_customer_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a changed Stripe customer (email, name, currency, metadata)."""
    _apply_customer(ctx, obj)


def on_customer_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mark the customer deleted; it stays deleted whatever arrives later."""
    _apply_customer(ctx, obj, deleted=True)


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
        "interval": snapshot.interval,
        "seats": snapshot.seats,
        "latest_invoice": snapshot.latest_invoice,
    }


_ITEM_KEYS = (
    "id",
    "price_id",
    "lookup_key",
    "usage_type",
    "quantity",
    "current_period_start",
    "current_period_end",
)


def _item_values(snapshot: SubscriptionSnapshot) -> list[dict[str, Any]]:
    return [{key: getattr(item, key) for key in _ITEM_KEYS} for item in snapshot.items]


def _stored_items(session: Session, subscription_id: str) -> list[SubscriptionItem]:
    return list(
        session.scalars(
            select(SubscriptionItem)
            .where(SubscriptionItem.subscription_id == subscription_id)
            .order_by(SubscriptionItem.id)
        )
    )


def _apply_subscription(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    snapshot = subscription_snapshot(obj)
    customer = _lock_customer(ctx, snapshot.stripe_customer_id)
    row = ctx.session.get(Subscription, snapshot.id, with_for_update=True)
    values = _subscription_values(snapshot, customer.id)
    items = _item_values(snapshot)
    item_rows = _stored_items(ctx.session, snapshot.id) if row is not None else []
    stored_items = [_stored(item, _ITEM_KEYS) for item in item_rows]
    if row is not None:
        differs = _stored(row, values) != values or stored_items != items
        progress = compare_progress(
            subscription_progress(snapshot.status, snapshot.current_period_start),
            subscription_progress(row.status, row.current_period_start),
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            return
        if decision is Decision.REFETCH:
            found = ctx.fetch("subscription", snapshot.id, "same_second")
            if not found:
                return
            snapshot = subscription_snapshot(found)
            values = _subscription_values(snapshot, customer.id)
            items = _item_values(snapshot)
    _write(
        ctx,
        Subscription,
        "subscription",
        snapshot.id,
        row,
        values,
        customer,
        audited={"items": _item_summary(items)},
        before_extra={"items": _item_summary(stored_items)} if row is not None else None,
    )
    if row is None:
        # Items reference the subscription row, so it must exist before they are inserted.
        ctx.session.flush()
    if items != stored_items:
        _replace_items(ctx.session, snapshot.id, items, item_rows)


def _item_summary(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": item["id"], "price_id": item["price_id"], "quantity": item["quantity"]}
        for item in items
    ]


def _replace_items(
    session: Session,
    subscription_id: str,
    items: list[dict[str, Any]],
    stored: list[SubscriptionItem],
) -> None:
    wanted = {item["id"]: item for item in items}
    existing = {item.id: item for item in stored}
    for item_id, gone in existing.items():
        if item_id not in wanted:
            session.delete(gone)
    for item_id, values in wanted.items():
        row = existing.get(item_id)
        if row is None:
            session.add(SubscriptionItem(subscription_id=subscription_id, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)


def on_customer_subscription_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new subscription: status, plan, seats, periods, trial."""
    _apply_subscription(ctx, obj)


def on_customer_subscription_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a changed subscription (status, plan, seats, cancel at period end, …)."""
    _apply_subscription(ctx, obj)


def on_customer_subscription_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a subscription that ended (its snapshot says canceled)."""
    _apply_subscription(ctx, obj)


def on_customer_subscription_paused(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a paused subscription."""
    _apply_subscription(ctx, obj)


def on_customer_subscription_resumed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a resumed subscription."""
    _apply_subscription(ctx, obj)


def on_customer_subscription_trial_will_end(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror the subscription whose trial ends in three days (its snapshot is current)."""
    _apply_subscription(ctx, obj)


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
    }


def _apply_invoice(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    snapshot = invoice_snapshot(obj)
    customer = _lock_customer(ctx, snapshot.stripe_customer_id)
    row = ctx.session.get(Invoice, snapshot.id, with_for_update=True)
    values = _invoice_values(snapshot, customer.id)
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            invoice_progress(snapshot.status, snapshot.attempt_count, snapshot.amount_paid),
            invoice_progress(row.status, row.attempt_count, row.amount_paid),
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            _record_invoice_payments(ctx, snapshot.payments, customer)
            return
        if decision is Decision.REFETCH:
            found = ctx.fetch("invoice", snapshot.id, "same_second")
            if not found:
                return
            snapshot = invoice_snapshot(found)
            values = _invoice_values(snapshot, customer.id)
    _write(ctx, Invoice, "invoice", snapshot.id, row, values, customer)
    _record_invoice_payments(ctx, snapshot.payments, customer)


def _record_invoice_payments(
    ctx: HandlerContext, payments: Iterable[InvoicePaymentSnapshot], customer: Customer | None
) -> None:
    """Keep which PaymentIntent or charge paid which invoice, and link those charges."""
    for payment in payments:
        row = ctx.session.get(InvoicePayment, payment.id)
        values = {
            "invoice_id": payment.invoice_id,
            "payment_intent": payment.payment_intent,
            "charge_id": payment.charge_id,
            "status": payment.status,
        }
        if row is None:
            ctx.session.add(InvoicePayment(id=payment.id, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)
        ctx.session.flush()
        paid_by = []
        if payment.payment_intent:
            paid_by.append(Charge.payment_intent == payment.payment_intent)
        if payment.charge_id:
            paid_by.append(Charge.id == payment.charge_id)
        for condition in paid_by:
            linked = ctx.session.execute(
                update(Charge)
                .where(condition, Charge.invoice_id.is_(None))
                .values(invoice_id=payment.invoice_id, updated_at=ctx.now)
                .returning(Charge.id)
            ).scalars()
            for charge_id in linked:
                ctx.audit(
                    "charge",
                    charge_id,
                    "linked",
                    {"invoice_id": None},
                    {"invoice_id": payment.invoice_id},
                    customer,
                )


def on_invoice_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new (draft) invoice."""
    _apply_invoice(ctx, obj)


def on_invoice_finalized(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a finalized invoice: its number, hosted page and PDF now exist."""
    _apply_invoice(ctx, obj)


def on_invoice_paid(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a paid invoice."""
    _apply_invoice(ctx, obj)


def on_invoice_payment_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice whose payment succeeded."""
    _apply_invoice(ctx, obj)


def on_invoice_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice whose payment failed: attempt count and next attempt."""
    _apply_invoice(ctx, obj)


def on_invoice_voided(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a voided invoice."""
    _apply_invoice(ctx, obj)


def on_invoice_marked_uncollectible(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice marked uncollectible."""
    _apply_invoice(ctx, obj)


def on_invoice_upcoming(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge a coming renewal; its invoice is a preview with no id, so nothing is kept."""


def on_invoice_payment_paid(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Record which PaymentIntent or charge paid an invoice, linking the charge to it."""
    invoice_id = obj.get("invoice")
    if not isinstance(invoice_id, str):
        return
    payment = invoice_payment_snapshot(obj, invoice_id)
    invoice = ctx.session.get(Invoice, invoice_id)
    customer = ctx.session.get(Customer, invoice.customer_id) if invoice else None
    _record_invoice_payments(ctx, [payment], customer)


# -- payments -------------------------------------------------------------------------------


def on_payment_intent_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge; the money is mirrored from the `charge.*` events the payment also sends."""


def on_payment_intent_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge; the failed charge and the invoice's attempt come in their own events."""


def _charge_values(
    ctx: HandlerContext, snapshot: ChargeSnapshot, customer: Customer | None, row: Charge | None
) -> dict[str, Any]:
    invoice_id = row.invoice_id if row is not None else None
    if invoice_id is None:
        paid_by = [InvoicePayment.charge_id == snapshot.id]
        if snapshot.payment_intent:
            paid_by.append(InvoicePayment.payment_intent == snapshot.payment_intent)
        for condition in paid_by:
            invoice_id = (
                invoice_id
                or ctx.session.scalars(
                    select(InvoicePayment.invoice_id).where(condition).limit(1)
                ).first()
            )
    disputed = snapshot.disputed or (row is not None and row.disputed)
    if not disputed:
        disputed = (
            ctx.session.scalars(select(Dispute.id).where(Dispute.charge_id == snapshot.id)).first()
            is not None
        )
    return {
        "customer_id": customer.id if customer else None,
        "payment_intent": snapshot.payment_intent,
        "invoice_id": invoice_id,
        "amount": snapshot.amount,
        "amount_refunded": snapshot.amount_refunded,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "refunded": snapshot.refunded,
        "disputed": disputed,
    }


def _apply_charge(ctx: HandlerContext, obj: dict[str, Any], *, refunds_wanted: bool) -> Charge:
    snapshot = charge_snapshot(obj)
    customer = (
        _lock_customer(ctx, snapshot.stripe_customer_id) if snapshot.stripe_customer_id else None
    )
    row = ctx.session.get(Charge, snapshot.id, with_for_update=True)
    values = _charge_values(ctx, snapshot, customer, row)
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            charge_progress(
                snapshot.status, snapshot.amount_refunded, snapshot.refunded, snapshot.disputed
            ),
            charge_progress(row.status, row.amount_refunded, row.refunded, row.disputed),
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            return row
        if decision is Decision.REFETCH:
            found = ctx.fetch("charge", snapshot.id, "same_second")
            if not found:
                return row
            snapshot = charge_snapshot(found)
            values = _charge_values(ctx, snapshot, customer, row)
    row = _write(ctx, Charge, "charge", snapshot.id, row, values, customer)
    refunds = snapshot.refunds
    if refunds is None and refunds_wanted and snapshot.amount_refunded > 0:
        # The charge's refunds list is not in this API version's payload by default.
        fetched = ctx.fetch("refunds", snapshot.id, "thin")
        refunds = tuple(refund_snapshot(refund) for refund in fetched or [])
    for refund in refunds or ():
        _apply_refund_snapshot(ctx, refund, customer)
    return row


def _apply_refund_snapshot(
    ctx: HandlerContext, snapshot: RefundSnapshot, customer: Customer | None
) -> None:
    row = ctx.session.get(Refund, snapshot.id, with_for_update=True)
    if row is not None and refund_is_behind(snapshot.status, row.status):
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
        ctx.session.add(Refund(id=snapshot.id, created_at=ctx.now, updated_at=ctx.now, **values))
    elif before != values:
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = ctx.now
    ctx.audit(
        "refund", snapshot.id, "created" if row is None else "updated", before, values, customer
    )


def on_charge_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a succeeded charge against its customer (and invoice, once known)."""
    _apply_charge(ctx, obj, refunds_wanted=False)


def on_charge_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a failed charge."""
    _apply_charge(ctx, obj, refunds_wanted=False)


def on_charge_refunded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refunded charge and its refunds, against its invoice and customer."""
    _apply_charge(ctx, obj, refunds_wanted=True)


def on_refund_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refund."""
    snapshot = refund_snapshot(obj)
    charge = ctx.session.get(Charge, snapshot.charge_id) if snapshot.charge_id else None
    customer = (
        ctx.session.get(Customer, charge.customer_id) if charge and charge.customer_id else None
    )
    _apply_refund_snapshot(ctx, snapshot, customer)


def on_refund_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refund whose status changed."""
    on_refund_created(ctx, obj)


def _apply_dispute(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    snapshot = dispute_snapshot(obj)
    charge = ctx.session.get(Charge, snapshot.charge_id)
    if charge is None:
        # Record the dispute against the charge's customer and invoice: fetch the charge.
        found = ctx.fetch("charge", snapshot.charge_id, "first_seen")
        if not found:
            raise UnknownStripeObject(f"charge {snapshot.charge_id} is not in Stripe")
        charge = _apply_charge(ctx, found, refunds_wanted=False)
        ctx.session.flush()
    customer = None
    if charge.customer_id:
        customer = ctx.session.get(Customer, charge.customer_id, with_for_update=True)
    row = ctx.session.get(Dispute, snapshot.id, with_for_update=True)
    values = {
        "charge_id": snapshot.charge_id,
        "payment_intent": snapshot.payment_intent,
        "amount": snapshot.amount,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "reason": snapshot.reason,
    }
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(dispute_progress(snapshot.status), dispute_progress(row.status))
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            return
        if decision is Decision.REFETCH:
            found = ctx.fetch("dispute", snapshot.id, "same_second")
            if not found:
                return
            snapshot = dispute_snapshot(found)
            values = {**values, "status": snapshot.status, "reason": snapshot.reason}
    _write(ctx, Dispute, "dispute", snapshot.id, row, values, customer)
    if not charge.disputed:
        charge.disputed = True
        charge.updated_at = ctx.now
        ctx.audit(
            "charge", charge.id, "disputed", {"disputed": False}, {"disputed": True}, customer
        )


def on_charge_dispute_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Record a dispute against its charge, invoice and customer."""
    _apply_dispute(ctx, obj)


def on_charge_dispute_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a dispute whose status changed."""
    _apply_dispute(ctx, obj)


def on_charge_dispute_closed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a closed dispute (won, lost or warning closed)."""
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
    _lock_customer(ctx, session.stripe_customer_id, app_id_hint=session.client_reference_id)
    if session.mode != "subscription" or not session.subscription_id:
        return
    if ctx.session.get(Subscription, session.subscription_id) is not None:
        return
    found = ctx.fetch("subscription", session.subscription_id, "thin")
    if not found:
        raise UnknownStripeObject(f"subscription {session.subscription_id} is not in Stripe")
    _apply_subscription(ctx, found)


Handler = Callable[[HandlerContext, dict[str, Any]], None]

HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_checkout_session_completed,
    "customer.created": on_customer_created,
    "customer.updated": on_customer_updated,
    "customer.deleted": on_customer_deleted,
    "customer.subscription.created": on_customer_subscription_created,
    "customer.subscription.updated": on_customer_subscription_updated,
    "customer.subscription.deleted": on_customer_subscription_deleted,
    "customer.subscription.paused": on_customer_subscription_paused,
    "customer.subscription.resumed": on_customer_subscription_resumed,
    "customer.subscription.trial_will_end": on_customer_subscription_trial_will_end,
    "invoice.created": on_invoice_created,
    "invoice.finalized": on_invoice_finalized,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_succeeded": on_invoice_payment_succeeded,
    "invoice.payment_failed": on_invoice_payment_failed,
    "invoice.upcoming": on_invoice_upcoming,
    "invoice.voided": on_invoice_voided,
    "invoice.marked_uncollectible": on_invoice_marked_uncollectible,
    "invoice_payment.paid": on_invoice_payment_paid,
    "payment_intent.succeeded": on_payment_intent_succeeded,
    "payment_intent.payment_failed": on_payment_intent_payment_failed,
    "charge.succeeded": on_charge_succeeded,
    "charge.failed": on_charge_failed,
    "charge.refunded": on_charge_refunded,
    "refund.created": on_refund_created,
    "refund.updated": on_refund_updated,
    "charge.refund.updated": on_refund_updated,
    "charge.dispute.created": on_charge_dispute_created,
    "charge.dispute.updated": on_charge_dispute_updated,
    "charge.dispute.closed": on_charge_dispute_closed,
}
