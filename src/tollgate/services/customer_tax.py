"""A customer's tax status and tax IDs (issue 21): set in Stripe, kept in the mirror.

Stripe holds them (Checkout collects tax IDs too); `customer.updated` and `customer.tax_id.*`
events keep the mirror. A change made through the API writes the mirror at once as well, so the
answer shows it; the events that follow carry the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollgate.db.models import CustomerTaxId
from tollgate.domain.tax import TaxIdEntry
from tollgate.stripe.errors import StripeFailure
from tollgate.stripe.gateway import StripeGateway


class TaxIdRefused(StripeFailure):
    """Stripe refused a tax ID's value for its type (a malformed VAT number, say)."""

    type = "tax_id_invalid"
    status = 400


def tax_ids_of(session: Session, customer_id: str) -> tuple[dict[str, Any], ...]:
    """Return the customer's tax IDs as the API shows them, oldest first."""
    rows = session.scalars(
        select(CustomerTaxId)
        .where(CustomerTaxId.customer_id == customer_id, CustomerTaxId.deleted.is_(False))
        .order_by(CustomerTaxId.created_at, CustomerTaxId.id)
    ).all()
    return tuple(
        {
            "id": row.id,
            "type": row.type,
            "value": row.value,
            "country": row.country,
            "verification": row.verification,
        }
        for row in rows
    )


def set_tax_ids(
    target: StripeGateway,
    stripe_customer_id: str,
    wanted: Sequence[TaxIdEntry],
    *,
    key_prefix: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Make the customer's tax IDs in Stripe exactly `wanted`; return (added, removed ids).

    New ones are added before any is removed, and a value Stripe refuses removes the ones this
    call added, so a refusal leaves the set as it was.
    """
    present = target.tax_ids(stripe_customer_id)
    have = {(entry["type"], entry["value"]): entry for entry in present}
    added: list[dict[str, Any]] = []
    for index, entry in enumerate(wanted):
        if (entry.type, entry.value) in have:
            continue
        try:
            added.append(
                target.add_tax_id(
                    stripe_customer_id,
                    kind=entry.type,
                    value=entry.value,
                    idempotency_key=f"{key_prefix}-{entry.type}-{entry.value}",
                )
            )
        except StripeFailure as refused:
            for made in added:
                target.remove_tax_id(stripe_customer_id, str(made["id"]))
            if type(refused) is not StripeFailure:
                raise  # Stripe unreachable, the key refused…: not the value's fault
            raise TaxIdRefused(
                f"Stripe refused tax ID {entry.value!r} of type {entry.type}: {refused.message}",
                param=f"tax_ids[{index}]",
                code=refused.code,
            ) from None
    keep = {(entry.type, entry.value) for entry in wanted}
    removed = [str(entry["id"]) for key, entry in have.items() if key not in keep]
    for tax_id in removed:
        target.remove_tax_id(stripe_customer_id, tax_id)
    return added, removed


def record_tax_ids(
    session: Session,
    customer_id: str,
    added: Sequence[dict[str, Any]],
    removed: Sequence[str],
    now: datetime,
) -> None:
    """Write what `set_tax_ids` did to the mirror (no watermark: any event of them applies)."""
    for made in added:
        if session.get(CustomerTaxId, made["id"]) is not None:
            continue  # its event came first
        session.add(
            CustomerTaxId(
                id=made["id"],
                customer_id=customer_id,
                type=made["type"],
                value=made["value"],
                country=made.get("country"),
                verification=(made.get("verification") or {}).get("status"),
                deleted=False,
                created_at=now,
                updated_at=now,
            )
        )
    for tax_id in removed:
        row = session.get(CustomerTaxId, tax_id)
        if row is not None:
            row.deleted = True
            row.updated_at = now
