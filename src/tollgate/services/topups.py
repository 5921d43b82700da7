"""Auto top-up: when a customer's credits fall below N, buy pack P with the saved card.

The crossing is seen in the transaction that burns the credits (the wallet row is locked
there, so concurrent burns take turns and exactly one takes the balance from at least N to
below it): that transaction queues one attempt. `run_auto_topups` pays each attempt once with
an off-session PaymentIntent (confirm, off_session, the idempotency key `topup-<attempt>`) and
grants the pack's credits with the payment; a refused payment (a declined card, or one that
needs its holder: `authentication_required`) emails the customer and is not retried. Below N
after a failure, further burns cross nothing: no loop; a purchase or grant that lifts the
balance to N or more makes the next fall a new crossing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from tollgate.clock import Clock
from tollgate.db.dialects import upsert
from tollgate.db.tables import AUTO_TOPUPS, CUSTOMERS, TOPUP_ATTEMPTS
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.credits import PURCHASE
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.money import format_minor
from tollgate.services import credit_ledger, outbox
from tollgate.services.deps import Deps
from tollgate.stripe.errors import StripeFailure, StripeUnavailable
from tollgate.stripe.gateway import StripeGateway


@dataclass(frozen=True)
class AutoTopupView:
    customer: str
    below: int | None
    pack: str | None

    def to_json(self) -> dict[str, Any]:
        return {"customer": self.customer, "below": self.below, "pack": self.pack}


def after_burn(connection: Connection, *, customer_id: str, burned: int, now: datetime) -> bool:
    """Queue a top-up if this burn took the balance below the customer's threshold (in the
    burn's transaction, the wallet locked); return whether one was queued."""
    setting = connection.execute(
        select(AUTO_TOPUPS.c.below, AUTO_TOPUPS.c.pack).where(
            AUTO_TOPUPS.c.customer_id == customer_id
        )
    ).first()
    if setting is None:
        return False
    balance = credit_ledger.credit_position(connection, customer_id).balance
    if not balance < setting.below <= balance + burned:
        return False
    connection.execute(
        TOPUP_ATTEMPTS.insert(),
        {
            "id": f"tu_{secrets.token_hex(10)}",
            "customer_id": customer_id,
            "pack": setting.pack,
            "credits": 0,
            "status": "pending",
            "created_at": now,
        },
    )
    return True


def set_auto_topup(
    deps: Deps,
    *,
    customer_id: str,
    below: Any,
    pack: Any,
) -> AutoTopupView:
    """Set (or, with `below` None, remove) the customer's auto top-up."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    with db.write_connection() as connection:
        found = connection.execute(
            select(CUSTOMERS.c.id).where(CUSTOMERS.c.id == customer_id)
        ).first()
        if found is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        if below is None:
            connection.execute(AUTO_TOPUPS.delete().where(AUTO_TOPUPS.c.customer_id == customer_id))
            return AutoTopupView(customer_id, None, None)
        if isinstance(below, bool) or not isinstance(below, int) or below < 1:
            raise InvalidRequest("below must be whole credits, 1 or more", param="below")
        if pack not in catalog.credit_packs:
            packs = ", ".join(sorted(catalog.credit_packs)) or "none in the catalog"
            raise NotFound(f"unknown credit pack {pack!r}; packs: {packs}", param="pack")
        replace = ("below", "pack", "updated_at")
        connection.execute(
            upsert(connection, AUTO_TOPUPS, index_elements=("customer_id",), update=replace),
            {"customer_id": customer_id, "below": below, "pack": pack, "updated_at": clock.now()},
        )
    return AutoTopupView(customer_id, below, str(pack))


@dataclass
class TopupReport:
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0


def run_auto_topups(
    *, db: Database, catalog: Catalog, gateway: StripeGateway, clock: Clock, limit: int = 100
) -> TopupReport:
    """Pay each queued top-up once; grant its credits, or email the customer why not."""
    report = TopupReport()
    with db.engine.connect() as connection:
        due = connection.execute(
            select(TOPUP_ATTEMPTS, CUSTOMERS.c.stripe_customer_id, CUSTOMERS.c.currency)
            .join(CUSTOMERS, CUSTOMERS.c.id == TOPUP_ATTEMPTS.c.customer_id)
            .where(TOPUP_ATTEMPTS.c.status == "pending")
            .order_by(TOPUP_ATTEMPTS.c.created_at)
            .limit(limit)
        ).all()
        connection.rollback()
    for attempt in due:
        _pay(db, catalog, gateway, clock, attempt, report)
    return report


def _pay(
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    clock: Clock,
    attempt: Any,
    report: TopupReport,
) -> None:
    pack = catalog.credit_packs.get(attempt.pack)
    currency = attempt.currency or catalog.currency
    price = pack.price_in(currency) if pack else None
    error: str | None = None
    intent: dict[str, Any] | None = None
    if pack is None or price is None:
        error = f"the credit pack {attempt.pack!r} has no price in {currency.upper()}"
    elif not attempt.stripe_customer_id:
        error = "the customer is not billed through Stripe"
    else:
        try:
            intent = gateway.charge_off_session(
                stripe_customer_id=attempt.stripe_customer_id,
                amount_minor=price.amount_minor,
                currency=currency,
                description=f"Automatic top-up: {pack.name}",
                metadata={"tollgate_topup": attempt.id, "tollgate_pack": pack.id},
                idempotency_key=f"topup-{attempt.id}",
            )
        except StripeUnavailable:
            report.retrying += 1  # Stripe did not answer: the same key tries again next run
            return
        except StripeFailure as failure:
            error = failure.message
            if failure.code:
                error = f"{error} ({failure.code})"
    now = clock.now()
    with db.write_connection() as connection:
        if intent is not None and intent.get("status") == "succeeded" and pack is not None:
            credit_ledger.grant_credits_in(
                connection,
                customer_id=attempt.customer_id,
                credits=pack.credits,
                reason=f"automatic top-up: credit pack {pack.id}",
                key=f"topup:{attempt.id}",
                actor="system",
                now=now,
                kind=PURCHASE,
                payment_intent=str(intent["id"]),
            )
            _finish(connection, attempt.id, "succeeded", str(intent["id"]), None, pack.credits, now)
            report.succeeded += 1
            return
        if error is None:
            error = f"the payment is {intent.get('status') if intent else 'missing'}"
        _finish(
            connection,
            attempt.id,
            "failed",
            str(intent["id"]) if intent else None,
            error,
            0,
            now,
        )
        outbox.queue_email(
            connection,
            customer_id=attempt.customer_id,
            template="auto_topup_failed",
            cause=f"topup:{attempt.id}",
            facts={
                "pack": attempt.pack,
                "pack_name": pack.name if pack else attempt.pack,
                "credits": pack.credits if pack else 0,
                "amount_text": format_minor(price.amount_minor, currency) if price else "",
                "error": error,
            },
            now=now,
        )
        report.failed += 1


def _finish(
    connection: Connection,
    attempt_id: str,
    status: str,
    intent: str | None,
    error: str | None,
    credits: int,
    now: datetime,
) -> None:
    connection.execute(
        update(TOPUP_ATTEMPTS)
        .where(TOPUP_ATTEMPTS.c.id == attempt_id)
        .values(status=status, payment_intent=intent, error=error, credits=credits, finished_at=now)
    )
