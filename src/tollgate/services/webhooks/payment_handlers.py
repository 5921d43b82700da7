"""The handlers of payments: bank transfers, cash balances, charges, refunds and disputes.

Like the other handlers (see .handlers, which keeps the registry of all of them), each runs in
its event's transaction and applies the event behind the object's watermark (see .mirroring).
"""

from __future__ import annotations

from typing import Any

from tollgate.db.execution import Read
from tollgate.db.queries import mirror
from tollgate.db.queries.mirror import Row
from tollgate.db.tables import BANK_TRANSFERS, CHARGES, CUSTOMERS, DISPUTES, REFUNDS
from tollgate.domain.events import (
    BankTransferSnapshot,
    ChargeSnapshot,
    RefundSnapshot,
    bank_transfer_progress,
    charge_progress,
    compare_progress,
    dispute_progress,
    refund_is_behind,
)
from tollgate.services.credit_ledger import claw_back_refunds
from tollgate.services.debits import debit_settled, debit_started, dispute_changed
from tollgate.services.webhooks import notices
from tollgate.services.webhooks.context import HandlerContext, UnknownStripeObject
from tollgate.services.webhooks.mirroring import (
    SKIP,
    lock_customer,
    lock_customer_and_read,
    row_values,
    settle,
    write_row,
)
from tollgate.stripe.translate import (
    bank_transfer_snapshot,
    charge_snapshot,
    dispute_snapshot,
    refund_snapshot,
)


def on_payment_intent(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a payment by bank transfer: where to send the money, how much is still to come.

    Other payments are only acknowledged: their money is mirrored from the `charge.*` events
    they also send.
    """
    snapshot = bank_transfer_snapshot(obj)
    if snapshot is None or not snapshot.stripe_customer_id:
        return
    customer_id, row = lock_customer_and_read(
        ctx, snapshot.stripe_customer_id, BANK_TRANSFERS, snapshot.id
    )
    values = _bank_transfer_values(snapshot, customer_id, row)
    if row is not None:
        progress = compare_progress(
            bank_transfer_progress(values["status"], values["amount"], values["amount_remaining"]),
            bank_transfer_progress(row["status"], row["amount"], row["amount_remaining"]),
        )
        differs = row_values(row, values) != values
        found = settle(ctx, row, differs, progress, "payment_intent", snapshot.id)
        if found is SKIP:
            return
        fetched = bank_transfer_snapshot(found) if found is not None else None
        if fetched is not None:
            values = _bank_transfer_values(fetched, customer_id, row)
    write_row(ctx, BANK_TRANSFERS, "bank_transfer", snapshot.id, row, values, customer_id)


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
    customer_id = lock_customer(ctx, stripe_customer_id)
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
        customer_id, row = lock_customer_and_read(
            ctx, snapshot.stripe_customer_id, CHARGES, snapshot.id
        )
    else:
        row = ctx.row(CHARGES, snapshot.id, lock=True)
    values = _charge_values(ctx, snapshot, customer_id, row)
    if row is not None:
        differs = row_values(row, values) != values
        progress = compare_progress(
            charge_progress(
                snapshot.status, snapshot.amount_refunded, snapshot.refunded, snapshot.disputed
            ),
            charge_progress(
                row["status"], row["amount_refunded"], row["refunded"], row["disputed"]
            ),
        )
        found = settle(ctx, row, differs, progress, "charge", snapshot.id)
        if found is SKIP:
            return row
        if found is not None:
            snapshot = charge_snapshot(found)
            values = _charge_values(ctx, snapshot, customer_id, row)
    written = write_row(ctx, CHARGES, "charge", snapshot.id, row, values, customer_id)
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
    before = None if row is None else row_values(row, values)
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
        differs = row_values(row, values) != values
        progress = compare_progress(
            dispute_progress(snapshot.status), dispute_progress(row["status"])
        )
        found = settle(ctx, row, differs, progress, "dispute", snapshot.id)
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
    write_row(ctx, DISPUTES, "dispute", snapshot.id, row, values, customer_id)
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
