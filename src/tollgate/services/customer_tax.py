"""A customer's tax status and tax IDs (issue 21): set in Stripe, kept in the mirror.

Stripe holds them (Checkout collects tax IDs too); `customer.updated` and `customer.tax_id.*`
events keep the mirror. A change made through the API writes the mirror at once as well, so the
answer shows it; the events that follow carry the same values. Changes of one customer's tax IDs
take turns (`change_tax_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollgate.clock import Clock
from tollgate.db.models import Customer, CustomerTaxId
from tollgate.db.unit_of_work import Database
from tollgate.domain.subscriptions import fingerprint
from tollgate.domain.tax import TaxIdEntry
from tollgate.stripe.errors import StripeFailure
from tollgate.stripe.gateway import StripeGateway


class TaxIdRefused(StripeFailure):
    """Stripe refused a tax ID's value for its type (a malformed VAT number, say)."""

    type = "tax_id_invalid"
    status = 400
    # The tax IDs the refused call had added to Stripe and then removed again.
    withdrawn: Sequence[dict[str, Any]] = ()


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


def tax_id_history(session: Session, customer_id: str) -> list[str]:
    """Return the ids of every tax ID the mirror has known of the customer, deleted ones too."""
    return list(
        session.scalars(select(CustomerTaxId.id).where(CustomerTaxId.customer_id == customer_id))
    )


def change_tax_ids(
    *,
    db: Database,
    clock: Clock,
    customer_id: str,
    target: StripeGateway,
    stripe_customer_id: str,
    wanted: Sequence[TaxIdEntry],
    key_prefix: str,
) -> None:
    """Make the customer's tax IDs exactly `wanted`, in Stripe and in the mirror.

    Two changes at once would each list the set, add theirs and remove the other's, and could
    leave neither. So a change takes its turn per customer (every replica's requests) across
    its Stripe calls and until the mirror holds what it did; the next one lists what this one
    left. A tax-ID change is rare, and a turn holds no other write back (see `taking_turns`).
    """
    with db.taking_turns(f"tax-ids:{customer_id}") as turn:
        with turn.transaction() as session:
            history = tax_id_history(session, customer_id)
        refused: TaxIdRefused | None = None
        try:
            added, removed = set_tax_ids(
                target, stripe_customer_id, wanted, key_prefix=key_prefix, history=history
            )
        except TaxIdRefused as error:
            # Added and removed again in Stripe: kept as deleted, whatever order their events
            # come in, so no later answer shows them.
            refused, added, removed = error, [], list(error.withdrawn)
        with turn.write_transaction() as session:
            # The customer is locked first, as the webhook handlers writing its tax IDs lock it.
            session.get(Customer, customer_id, with_for_update=True)
            record_tax_ids(session, customer_id, added, removed, clock.now())
    if refused is not None:
        raise refused


def set_tax_ids(
    target: StripeGateway,
    stripe_customer_id: str,
    wanted: Sequence[TaxIdEntry],
    *,
    key_prefix: str,
    history: Sequence[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Make the customer's tax IDs in Stripe exactly `wanted`; return (added, removed), Stripe's
    tax ID objects.

    New ones are added before any is removed, and a value Stripe refuses removes the ones this
    call added, so a refusal leaves the set as it was (the error names them: `withdrawn`).
    `history` is the ids of every tax ID the customer has had (`tax_id_history`).
    """
    present = target.tax_ids(stripe_customer_id)
    have = {(entry["type"], entry["value"]): entry for entry in present}
    # An add's key names what the change saw: the tax IDs Stripe has and every one the customer
    # has had. The same request seeing the same state adds once; one that finds the value gone
    # after it was added and removed (by another change between, or the same request repeated
    # later) makes a real add, not a replay of the one that was removed.
    seen = fingerprint(
        {"present": sorted(str(entry["id"]) for entry in present), "had": sorted(history)}
    )[:16]
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
                    idempotency_key=f"{key_prefix}-{seen}-{entry.type}-{entry.value}",
                )
            )
        except StripeFailure as refused:
            for made in added:
                target.remove_tax_id(stripe_customer_id, str(made["id"]))
            if type(refused) is not StripeFailure:
                raise  # Stripe unreachable, the key refused…: not the value's fault
            error = TaxIdRefused(
                f"Stripe refused tax ID {entry.value!r} of type {entry.type}: {refused.message}",
                param=f"tax_ids[{index}]",
                code=refused.code,
            )
            error.withdrawn = added
            raise error from None
    keep = {(entry.type, entry.value) for entry in wanted}
    removed = [tax_id for key, tax_id in have.items() if key not in keep]
    for tax_id in removed:
        target.remove_tax_id(stripe_customer_id, str(tax_id["id"]))
    return added, removed


def record_tax_ids(
    session: Session,
    customer_id: str,
    added: Sequence[dict[str, Any]],
    removed: Sequence[dict[str, Any]],
    now: datetime,
) -> None:
    """Write what `set_tax_ids` did to the mirror (no watermark: any event of them applies).

    A removed tax ID whose events have not come yet is kept as deleted, as its `deleted` event
    would: deletion is final in the mirror, so its `created` event, if it comes later, cannot
    show it again.
    """
    for made in added:
        if session.get(CustomerTaxId, made["id"]) is None:  # else its event came first
            session.add(_tax_id_row(customer_id, made, deleted=False, now=now))
    for gone in removed:
        row = session.get(CustomerTaxId, gone["id"])
        if row is None:
            session.add(_tax_id_row(customer_id, gone, deleted=True, now=now))
        else:
            row.deleted = True
            row.updated_at = now


def _tax_id_row(
    customer_id: str, tax_id: dict[str, Any], *, deleted: bool, now: datetime
) -> CustomerTaxId:
    return CustomerTaxId(
        id=tax_id["id"],
        customer_id=customer_id,
        type=tax_id["type"],
        value=tax_id["value"],
        country=tax_id.get("country"),
        verification=(tax_id.get("verification") or {}).get("status"),
        deleted=deleted,
        created_at=now,
        updated_at=now,
    )
