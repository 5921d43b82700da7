"""Changes waiting for the period end: recorded, dropped by a later write, made in Stripe.

A downgrade waits as a `PlanChange` row; any later write to the subscription drops it and marks
the customer's cached decisions stale; `apply_due_plan_changes` makes the due ones in Stripe
shortly before the renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.models import Customer, PlanChange
from tollgate.db.queries.changes import note_customer_changes
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.dunning import DunningPolicy
from tollgate.domain.errors import TollgateError
from tollgate.domain.subscriptions import Terms, is_live, request_id, subscription_terms
from tollgate.services.customers import pending_plan_change
from tollgate.services.subscriptions.lookups import item_changes
from tollgate.services.subscriptions.payment_rules import payment_settings_update
from tollgate.services.subscriptions.reading import pending_view
from tollgate.services.webhooks import Watermark, apply_stripe_answer
from tollgate.stripe.errors import StripeNotFound
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import subscription_snapshot
from tollgate_client.views import PendingChangeView

log = logging.getLogger("tollgate.subscriptions")

# A change waiting for the period end is made in Stripe this long before the renewal.
PLAN_CHANGE_LEAD = timedelta(minutes=10)


def keep_plan_change(
    db: Database,
    clock: Clock,
    customer_id: str,
    subscription_id: str,
    terms: Terms,
    effective_at: datetime,
) -> PendingChangeView:
    """Record the change to make at period end, replacing any earlier one."""
    now = clock.now()
    with db.write_transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        assert customer is not None
        existing = pending_plan_change(session, customer_id)
        seats = terms.seats if terms.plan.per_seat else None
        wanted = (terms.plan.id, terms.interval, seats, subscription_id, effective_at)
        if (
            existing is not None
            and (
                existing.plan,
                existing.interval,
                existing.seats,
                existing.subscription_id,
                existing.effective_at,
            )
            == wanted
        ):
            return pending_view(existing)  # type: ignore[return-value]
        _cancel_pending(session, customer_id, now)
        change = PlanChange(
            id=f"pc_{request_id(None, {'customer': customer_id, 'change': wanted}, now)}",
            customer_id=customer_id,
            subscription_id=subscription_id,
            plan=terms.plan.id,
            interval=terms.interval,
            seats=seats,
            effective_at=effective_at,
            status="pending",
            created_at=now,
            updated_at=now,
        )
        session.add(change)
        customer.updated_at = now
        note_change(session, customer_id, now)
        return PendingChangeView(change.plan, change.interval, change.seats, effective_at)


def note_change(session: Session, customer_id: str, now: datetime) -> None:
    """Mark the customer's cached decisions stale: its `state_version`, the change feed."""
    note_customer_changes(session.connection(), [customer_id], reason="customer", now=now)


def _cancel_pending(session: Any, customer_id: str, now: datetime) -> int:
    result = session.execute(
        update(PlanChange)
        .where(PlanChange.customer_id == customer_id, PlanChange.status == "pending")
        .values(status="canceled", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def supersede_plan_changes(db: Database, customer_id: str, clock: Clock) -> None:
    """Drop a change waiting for the period end: a later request decided otherwise."""
    with db.transaction() as session:
        if pending_plan_change(session, customer_id) is None:
            return
    with db.write_transaction() as session:
        now = clock.now()
        if _cancel_pending(session, customer_id, now):
            note_change(session, customer_id, now)


@dataclass(frozen=True)
class StripeAnswer:
    """The subscription Stripe answered a write with, and what applying it to the mirror takes:
    `before` is its mirror row's watermark read before the write (`mirrored_watermark`; None
    for a subscription the write made)."""

    subscription: Mapping[str, Any]
    gateway: StripeGateway
    account: str | None
    dunning: DunningPolicy
    before: Watermark | None = None


def after_write(
    db: Database, customer_id: str, clock: Clock, answer: StripeAnswer | None = None
) -> None:
    """Note that Stripe changed the subscription: drop a waiting change, bump the state, and
    apply Stripe's `answer` to the mirror (see `apply_stripe_answer`).

    The bump marks cached decisions stale at once and gives the next request a new idempotency
    key: the same request again is a new change, not a replay. With the answer applied, the
    app's next check follows the change; Stripe's webhook follows and tells the app.
    """
    now = clock.now()
    with db.write_transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        if customer is None:
            return
        _cancel_pending(session, customer_id, now)
        customer.updated_at = now
        note_change(session, customer_id, now)
    if answer is not None:
        apply_stripe_answer(
            db=db,
            gateway=answer.gateway,
            subscription=answer.subscription,
            before=answer.before,
            account=answer.account,
            clock=clock,
            dunning=answer.dunning,
        )


# -- changes at period end -------------------------------------------------------------------


@dataclass(frozen=True)
class PlanChangeReport:
    """What one run of `apply_due_plan_changes` did."""

    applied: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def apply_due_plan_changes(
    *,
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    settings: Settings,
    clock: Clock,
    lead: timedelta = PLAN_CHANGE_LEAD,
    limit: int = 100,
) -> PlanChangeReport:
    """Make in Stripe the changes whose period ends within `lead`, before the renewal bills.

    Each change is keyed by its own id in Stripe (`plan-change-{id}`), so two workers running
    this at once, or a rerun after a crash, change the subscription once.
    """
    now = clock.now()
    report = PlanChangeReport()
    with db.transaction() as session:
        due = list(
            session.scalars(
                select(PlanChange)
                .where(PlanChange.status == "pending", PlanChange.effective_at <= now + lead)
                .order_by(PlanChange.effective_at, PlanChange.id)
                .limit(limit)
            )
        )
        accounts = {
            change.id: (session.get(Customer, change.customer_id) or Customer()).stripe_account
            for change in due
        }
    for change in due:
        account = accounts.get(change.id)
        target = gateway.for_account(account) if account else gateway
        try:
            outcome = _apply_plan_change(catalog, settings, target, change)
        except TollgateError as error:
            log.warning("plan change %s failed: %s", change.id, error.message)
            report.failed.append(change.id)
            continue
        with db.write_transaction() as session:
            session.execute(
                update(PlanChange)
                .where(PlanChange.id == change.id, PlanChange.status == "pending")
                .values(status=outcome, updated_at=clock.now())
                .execution_options(synchronize_session=False)
            )
        (report.applied if outcome == "applied" else report.dropped).append(change.id)
    return report


def _apply_plan_change(
    catalog: Catalog, settings: Settings, gateway: StripeGateway, change: PlanChange
) -> str:
    """Make one change in Stripe; return `applied`, or `canceled` if it no longer applies."""
    try:
        raw = gateway.retrieve_subscription(change.subscription_id)
    except StripeNotFound:
        return "canceled"
    current = subscription_snapshot(raw)
    if not is_live(current.status) or current.cancel_at_period_end:
        return "canceled"
    terms = subscription_terms(
        catalog,
        plan_id=change.plan,
        interval=change.interval,
        currency=current.currency or catalog.currency,
        seats=change.seats,
    )
    params = item_changes(gateway, current, terms)
    params["proration_behavior"] = settings.proration_behavior
    params.update(payment_settings_update(settings, terms, current))
    gateway.update_subscription(
        current.id, idempotency_key=f"plan-change-{change.id}", params=params
    )
    return "applied"
