"""Refunds the app asks for: a charge, or a paid invoice (by credit note), through the gateway.

The Stripe idempotency key comes from the app's `Idempotency-Key` (or, without one, from what was
asked and what had been refunded before), so the same request twice refunds once. The refund
itself lands in the mirror from Stripe's `refund.created` and `charge.refunded` events, exactly
as one made in Stripe's dashboard does; this use case writes the audit row saying who asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tollgate.db.queries.audit import audit_recorded, record_audit
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.domain.subscriptions import request_id
from tollgate.services.customers import APP_ID_KEY, load_customer, stripe_customer
from tollgate.services.deps import Deps
from tollgate.stripe.errors import StripeFailure, StripeNotFound
from tollgate.stripe.gateway import StripeGateway

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# Stripe's answers to a refund it will not make: the app's request is at fault (400), not Stripe.
_REFUSED = (
    "amount_too_large",
    "charge_already_refunded",
    "charge_disputed",
    "charge_not_refundable",
    "parameter_invalid_integer",
)


@dataclass(frozen=True)
class RefundRequest:
    """A POST: what to refund (an invoice or a charge), how much, and why."""

    invoice: str | None = None
    charge: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RefundView:
    """A refund made (or found again by its idempotency key)."""

    id: str
    customer: str
    charge: str | None
    invoice: str | None
    credit_note: str | None
    amount: int
    currency: str
    reason: str | None
    status: str | None
    created: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer": self.customer,
            "charge": self.charge,
            "invoice": self.invoice,
            "credit_note": self.credit_note,
            "amount": {"amount": self.amount, "currency": self.currency},
            "reason": self.reason,
            "status": self.status,
            "created": self.created.isoformat().replace("+00:00", "Z"),
        }


def refund_payment(
    deps: Deps,
    *,
    customer_id: str,
    wanted: RefundRequest,
    idempotency_key: str | None,
    actor: str,
) -> tuple[RefundView, bool]:
    """Refund a customer's charge or paid invoice; returns the refund and whether it is new."""
    db, gateway, clock = deps.db, deps.optional_stripe(), deps.clock
    _check(wanted)
    with db.transaction() as session:
        stripe_id, target = stripe_customer(load_customer(session, customer_id), gateway)
    try:
        view = _refund(target, customer_id, stripe_id, wanted, idempotency_key)
    except StripeNotFound:
        param = "invoice" if wanted.invoice is not None else "charge"
        raise NotFound(f"no {param} {wanted.invoice or wanted.charge!r}", param=param) from None
    except StripeFailure as refused:
        if refused.code in _REFUSED or refused.param in ("amount", "refund_amount"):
            raise InvalidRequest(refused.message, param="amount") from None
        raise
    # The customer's row is locked, so requests repeated at once check and write the audit
    # row in turn: the first answers 201, the others find its row and answer as repeats.
    with db.write_transaction() as session:
        load_customer(session, customer_id, lock=True)
        connection = session.connection()
        new = not audit_recorded(
            connection, object_type="refund", object_id=view.id, action="refund"
        )
        if new:
            record_audit(
                connection,
                actor=actor,
                object_type="refund",
                object_id=view.id,
                action="refund",
                before=None,
                after=view.to_json() | {"idempotency_key": bool(idempotency_key)},
                now=clock.now(),
            )
    return view, new


def _check(wanted: RefundRequest) -> None:
    if (wanted.invoice is None) == (wanted.charge is None):
        raise InvalidRequest("name exactly one of invoice and charge", param="invoice")
    if wanted.reason is not None and wanted.reason not in REASONS:
        raise InvalidRequest(f"reason must be one of {', '.join(REASONS)}", param="reason")
    if wanted.amount_minor is not None and wanted.amount_minor <= 0:
        raise InvalidRequest(
            "amount must be a positive whole number of minor units", param="amount"
        )


def _owned(obj: dict[str, Any], stripe_id: str, kind: str, object_id: str) -> None:
    owner = obj.get("customer")
    owner = owner.get("id") if isinstance(owner, dict) else owner
    if owner != stripe_id:  # another customer's: as if it did not exist
        raise NotFound(f"no {kind} {object_id!r} for this customer", param=kind)


def _currency(wanted: RefundRequest, currency: str) -> None:
    if wanted.currency is not None and wanted.currency.lower() != currency:
        raise InvalidRequest(
            f"the payment is in {currency}, not {wanted.currency.lower()}", param="amount.currency"
        )


def _refund(
    gateway: StripeGateway,
    customer_id: str,
    stripe_id: str,
    wanted: RefundRequest,
    idempotency_key: str | None,
) -> RefundView:
    """Refund the customer's charge, or its paid invoice by a credit note."""
    kind, object_id = ("invoice", wanted.invoice) if wanted.invoice else ("charge", wanted.charge)
    assert object_id is not None
    if kind == "invoice":
        found = gateway.retrieve_invoice(object_id)
    else:
        found = gateway.retrieve_charge(object_id)
    _owned(found, stripe_id, kind, object_id)
    _currency(wanted, str(found["currency"]))
    metadata = {APP_ID_KEY: customer_id}
    if kind == "charge":
        asked = {"charge": object_id, "amount": wanted.amount_minor, "reason": wanted.reason}
        key = request_id(idempotency_key, asked, found.get("amount_refunded"))
        refund = gateway.refund_charge(
            charge_id=object_id,
            amount_minor=wanted.amount_minor,
            reason=wanted.reason,
            metadata=metadata,
            idempotency_key=f"refund-{customer_id}-{key}",
        )
        return _view(refund, customer_id, invoice=None, credit_note=None)
    if found.get("status") != "paid" or not found.get("amount_paid"):
        raise InvalidRequest(
            f"invoice {object_id!r} is {found.get('status')}, not paid: nothing to refund",
            param="invoice",
        )
    # All that was paid when no amount is named, so a repeat asks exactly the same of Stripe.
    amount = wanted.amount_minor if wanted.amount_minor is not None else found["amount_paid"]
    asked = {"invoice": object_id, "amount": amount, "reason": wanted.reason}
    key = request_id(idempotency_key, asked, found.get("post_payment_credit_notes_amount"))
    note, refund = gateway.refund_invoice(
        invoice_id=object_id,
        amount_minor=amount,
        reason=wanted.reason,
        metadata=metadata,
        idempotency_key=f"refund-invoice-{customer_id}-{key}",
    )
    if not refund:
        raise InvalidRequest(f"invoice {object_id!r} was not paid through Stripe", param="invoice")
    return _view(refund, customer_id, invoice=object_id, credit_note=str(note["id"]))


def _view(
    refund: dict[str, Any], customer_id: str, *, invoice: str | None, credit_note: str | None
) -> RefundView:
    charge = refund.get("charge")
    return RefundView(
        id=str(refund["id"]),
        customer=customer_id,
        charge=charge.get("id") if isinstance(charge, dict) else charge,
        invoice=invoice,
        credit_note=credit_note,
        amount=int(refund["amount"]),
        currency=str(refund["currency"]),
        reason=refund.get("reason"),
        status=refund.get("status"),
        created=datetime.fromtimestamp(int(refund["created"]), UTC),
    )
