"""What a Stripe event tells the customer and the app: emails and app webhooks to queue.

Called by the webhook handlers after they applied the event, in the event's transaction, so a
rolled-back (and re-run) handler leaves nothing behind. Each trigger reads the event's own
snapshot (and `previous_attributes`), not the mirror's transition: the mirror may already be
ahead when events come out of order, while each event still says what happened. Keys (invoice
id and attempt, subscription id and trial end, …) make a duplicated event queue nothing new.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tollgate.db.queries import mirror
from tollgate.db.tables import INVOICES
from tollgate.domain.events import (
    DISPUTE_OPEN_STATUSES,
    DisputeSnapshot,
    InvoiceSnapshot,
    SubscriptionSnapshot,
)
from tollgate.domain.subscriptions import trial_cause
from tollgate.domain.tax import tax_note
from tollgate.services.dunning import clear_dunning, record_failed_attempt
from tollgate.services.outbox import queue_app_event, queue_email
from tollgate.services.webhooks.context import HandlerContext

# Invoice states after which a failed-payment event is old news.
_SETTLED = ("paid", "void", "uncollectible")

# Stripe retries a delivery for three days. A payment older than that which only reconciliation
# brings in (a new install reconciling a month back, say) is history: it is mirrored, and the
# receipt Stripe's own emails may have sent long ago is not sent again.
RECEIPT_WINDOW = timedelta(days=3)

# One invoice's payment is told once, in one of these words (see queue_email's same_notice).
PAYMENT_OUTCOME = ("payment_succeeded", "payment_recovered")


def notice_subscription_event(
    ctx: HandlerContext, obj: dict[str, Any], snapshot: SubscriptionSnapshot, customer_id: str
) -> None:
    """Queue what a `customer.subscription.*` event means: trial, cancel and status emails.

    `snapshot` is the event's own subscription and `customer_id` its customer, as the handler
    that applied it found them.
    """
    kind = str(ctx.event.get("type", ""))
    previous: dict[str, Any] = (ctx.event.get("data") or {}).get("previous_attributes") or {}
    now = ctx.now
    # `ctx.connection` only where something is queued: most events queue nothing, and stay
    # undoable in their group (see HandlerContext.drop_writes).

    def email(template: str, cause: str) -> None:
        # The facts are made only for an email: most events queue none.
        queue_email(
            ctx.connection,
            customer_id=customer_id,
            template=template,
            cause=cause,
            facts=_subscription_facts(snapshot, obj),
            now=now,
        )

    status = snapshot.status
    if kind == "customer.subscription.created" and status == "trialing":
        if snapshot.trial_end is not None and snapshot.trial_end.timestamp() > ctx.created:
            email("trial_started", trial_cause(snapshot.id, snapshot.trial_end))
    elif kind == "customer.subscription.trial_will_end" and snapshot.trial_end is not None:
        email("trial_ending", trial_cause(snapshot.id, snapshot.trial_end))
    elif kind == "customer.subscription.deleted":
        # After a final failed payment the customer was told already (downgraded_payment_failed).
        dunned = clear_dunning(ctx.connection, customer_id=customer_id, cause=snapshot.id, now=now)
        if not dunned:
            email("downgraded_to_free", snapshot.id)
    if previous:
        if previous.get("status") == "trialing" and status == "active":
            email("trial_converted", trial_cause(snapshot.id, snapshot.trial_end))
        if previous.get("status") in ("past_due", "unpaid") and status == "active":
            clear_dunning(ctx.connection, customer_id=customer_id, cause=ctx.event_id, now=now)
        if _cancel_requested(snapshot, previous) and status != "canceled":
            stamp = _stamp(snapshot.canceled_at or snapshot.cancel_at)
            email("subscription_canceled", f"{snapshot.id}:{stamp}")

    status_changed = "status" in previous or kind in (
        "customer.subscription.created",
        "customer.subscription.deleted",
    )
    entitlements_changed = status_changed or bool(
        previous.keys() & {"items", "plan", "quantity", "cancel_at_period_end"}
    )
    if not entitlements_changed:
        return
    data = {
        "customer": customer_id,
        "subscription": snapshot.id,
        "status": snapshot.status,
        "plan": snapshot.plan,
        "occurred_at": datetime.fromtimestamp(ctx.created, tz=UTC),
    }
    if status_changed:
        queue_app_event(
            ctx.connection,
            event_type="customer.subscription_status_changed",
            customer_id=customer_id,
            data={**data, "previous_status": previous.get("status")},
            cause=ctx.event_id,
            now=now,
        )
    if entitlements_changed:
        queue_app_event(
            ctx.connection,
            event_type="customer.entitlements_changed",
            customer_id=customer_id,
            data={**data, "reason": "subscription"},
            cause=ctx.event_id,
            now=now,
        )


def notice_invoice_paid(ctx: HandlerContext, snapshot: InvoiceSnapshot, customer_id: str) -> None:
    """Queue the receipt of a paid invoice; after failures, say access is restored instead."""
    if snapshot.status != "paid":
        return
    restored = clear_dunning(
        ctx.connection, customer_id=customer_id, cause=snapshot.id, now=ctx.now
    )
    if snapshot.amount_paid <= 0:
        return  # a trial's or fully credited invoice: nothing to give a receipt for
    if _healed_history(ctx):
        return
    recovered = restored or snapshot.attempt_count > 1
    queue_email(
        ctx.connection,
        customer_id=customer_id,
        template="payment_recovered" if recovered else "payment_succeeded",
        cause=snapshot.id,
        facts={**_invoice_facts(snapshot), **_tax_facts(ctx, snapshot)},
        now=ctx.now,
        same_notice=PAYMENT_OUTCOME,
    )


def notice_invoice_payment_failed(
    ctx: HandlerContext, snapshot: InvoiceSnapshot, customer_id: str
) -> None:
    """Apply the dunning step for a failed attempt, unless the invoice has been settled since."""
    if snapshot.attempt_count < 1:
        return
    stored = ctx.rows(mirror.INVOICE_PAYMENT_STATE, row_id=snapshot.id)
    if stored and stored[0]["status"] in _SETTLED:
        return
    seen = max(snapshot.attempt_count, stored[0]["attempt_count"] if stored else 0)
    record_failed_attempt(
        ctx.connection,
        policy=ctx.dunning,
        customer_id=customer_id,
        # Stripe's time, not ours: the days left count from when the attempt failed.
        invoice=_invoice_facts(snapshot, now=datetime.fromtimestamp(ctx.created, UTC)),
        attempt_count=seen,
        cause=snapshot.id,
        now=ctx.now,
    )


def notice_invoice_action_required(
    ctx: HandlerContext, snapshot: InvoiceSnapshot, customer_id: str
) -> None:
    """Email the customer the page where they confirm a payment, once per attempt, while the
    invoice is still open."""
    stored = ctx.rows(mirror.INVOICE_PAYMENT_STATE, row_id=snapshot.id)
    if snapshot.status != "open" or (stored and stored[0]["status"] in _SETTLED):
        return
    if not snapshot.hosted_invoice_url:
        return
    queue_email(
        ctx.connection,
        customer_id=customer_id,
        template="payment_action_required",
        cause=f"{snapshot.id}:action:{snapshot.attempt_count}",
        facts=_invoice_facts(snapshot),
        now=ctx.now,
    )


def notice_dispute(ctx: HandlerContext, snapshot: DisputeSnapshot, customer_id: str) -> None:
    """Tell the operator (TOLLGATE_OPERATOR_EMAIL) of a dispute at once, and of its outcome."""
    if snapshot.status in DISPUTE_OPEN_STATUSES:
        template, cause = "dispute_opened", snapshot.id
    elif snapshot.status in ("won", "lost", "warning_closed"):
        template, cause = "dispute_closed", f"{snapshot.id}:closed"
    else:
        return
    queue_email(
        ctx.connection,
        customer_id=customer_id,
        template=template,
        cause=cause,
        facts=dispute_facts(snapshot),
        now=ctx.now,
    )


def dispute_facts(snapshot: DisputeSnapshot) -> dict[str, Any]:
    """What the operator's dispute emails say (also the reminder job's)."""
    return {
        "dispute": snapshot.id,
        "charge": snapshot.charge_id,
        "amount": {"amount": snapshot.amount, "currency": snapshot.currency},
        "reason": snapshot.reason,
        "status": snapshot.status,
        "evidence_due_by": snapshot.evidence_due_by,
    }


def _healed_history(ctx: HandlerContext) -> bool:
    """Whether reconciliation (not a delivery) applied a payment made before RECEIPT_WINDOW."""
    if not ctx.actor.startswith("reconcile:"):
        return False
    invoice = (ctx.event.get("data") or {}).get("object") or {}
    paid_at = (invoice.get("status_transitions") or {}).get("paid_at") or invoice.get("created")
    if not isinstance(paid_at, int):
        return False
    return ctx.now - datetime.fromtimestamp(paid_at, UTC) > RECEIPT_WINDOW


def _cancel_requested(snapshot: SubscriptionSnapshot, previous: dict[str, Any]) -> bool:
    if snapshot.cancel_at_period_end and previous.get("cancel_at_period_end") is False:
        return True
    return snapshot.cancel_at is not None and "cancel_at" in previous and not previous["cancel_at"]


def _stamp(at: datetime | None) -> str:
    return str(int(at.timestamp())) if at is not None else "none"


def _subscription_facts(snapshot: SubscriptionSnapshot, obj: dict[str, Any]) -> dict[str, Any]:
    base = snapshot.base_item
    price: dict[str, Any] = {}
    for item in (obj.get("items") or {}).get("data") or []:
        if base is not None and item.get("id") == base.id:
            price = item.get("price") or {}
    unit = price.get("unit_amount")
    quantity = base.quantity if base is not None and base.quantity else 1
    currency = snapshot.currency or price.get("currency")
    amount = {"amount": int(unit) * quantity, "currency": currency} if unit and currency else None
    return {
        "subscription": snapshot.id,
        "plan": snapshot.plan,
        "interval": snapshot.interval,
        "seats": snapshot.seats,
        "amount": amount,
        "trial_end": snapshot.trial_end,
        "current_period_end": snapshot.current_period_end,
        "access_until": snapshot.cancel_at or snapshot.current_period_end,
        "ended_at": snapshot.ended_at,
    }


def _tax_facts(ctx: HandlerContext, snapshot: InvoiceSnapshot) -> dict[str, Any]:
    """Return the invoice's taxes one per rate, as the mirror named them, and its tax note."""
    stored = ctx.row(INVOICES, snapshot.id)
    lines = (stored["tax_amounts"] if stored is not None else None) or []
    return {
        "taxes": [
            {
                "name": line["display_name"],
                "percentage": line.get("percentage"),
                "amount": {"amount": line["amount"], "currency": snapshot.currency},
            }
            for line in lines
        ],
        "tax_note": tax_note(snapshot.customer_tax_exempt),
    }


def _invoice_facts(snapshot: InvoiceSnapshot, now: datetime | None = None) -> dict[str, Any]:
    days_left = None
    if now is not None and snapshot.next_payment_attempt is not None:
        days_left = max(0, (snapshot.next_payment_attempt - now).days)
    return {
        "invoice": snapshot.id,
        "number": snapshot.number,
        "amount_due": {"amount": snapshot.amount_due, "currency": snapshot.currency},
        "amount_paid": {"amount": snapshot.amount_paid, "currency": snapshot.currency},
        "tax": {"amount": snapshot.tax, "currency": snapshot.currency} if snapshot.tax else None,
        "attempt_count": snapshot.attempt_count,
        "next_payment_attempt": snapshot.next_payment_attempt,
        "days_left": days_left,
        "hosted_invoice_url": snapshot.hosted_invoice_url,
        "invoice_pdf": snapshot.invoice_pdf,
        "period_start": snapshot.period_start,
        "period_end": snapshot.period_end,
    }
