"""What an operator does to a customer from the console, each one recorded in the audit log
under the operator's name (`operator:<name>`), beside the change it describes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import console as queries
from tollgate.db.queries.audit import record_audit
from tollgate.db.queries.changes import note_customer_changes
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.services.customers import get_customer
from tollgate.services.deps import Deps
from tollgate.services.webhooks import ProcessResult, replay_stripe_event


def record_operator_action(
    *,
    db: Database,
    clock: Clock,
    actor: str,
    customer_id: str,
    action: str,
    details: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
) -> None:
    """Write the audit row of an operator's action on a customer."""
    with db.write_connection() as connection:
        _audit_action(
            connection, clock.now(), actor, customer_id, action, before=before, after=details
        )


def _audit_action(
    connection: Connection,
    now: datetime,
    actor: str,
    customer_id: str,
    action: str,
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Write, in the caller's transaction, the audit row of an operator's action on a customer."""
    record_audit(
        connection,
        now=now,
        actor=actor,
        object_type="customer",
        object_id=customer_id,
        action=action,
        before=before,
        after=after,
    )


def mark_offline(
    deps: Deps,
    *,
    actor: str,
    customer_id: str,
    offline: bool,
) -> None:
    """Take a customer out of Stripe billing (its plan kept by Tollgate), or back in.

    Offline, the customer keeps the plan it has now; Stripe is no longer asked to bill it.
    """
    db, clock = deps.db, deps.clock
    view = get_customer(deps, customer_id=customer_id)
    if view.offline == offline:
        return
    if not offline and not view.stripe_customer_id:
        raise InvalidRequest(
            "this customer has no Stripe customer; it can only be billed offline", param="offline"
        )
    now = clock.now()
    with db.write_connection() as connection:
        queries.set_customer_offline(
            connection, customer_id, offline=offline, plan=view.plan if offline else None, now=now
        )
        note_customer_changes(connection, [customer_id], reason="customer", now=now)
        action = "mark_offline" if offline else "mark_online"
        before = {"offline": view.offline, "plan": view.plan}
        after = {"offline": offline, "plan": view.plan}
        _audit_action(connection, now, actor, customer_id, action, before=before, after=after)


@dataclass(frozen=True)
class ResentEmail:
    id: int
    template: str


def resend_email(
    *, db: Database, clock: Clock, actor: str, customer_id: str, notification_id: int
) -> ResentEmail:
    """Send one of the customer's emails again at the worker's next run."""
    now = clock.now()
    with db.write_connection() as connection:
        row = queries.notification(connection, notification_id)
        if row is None or row["customer_id"] != customer_id:
            raise NotFound(f"no email {notification_id} of {customer_id!r}", param="email")
        queries.resend_notification(connection, notification_id, now)
        before = {"status": row["status"]}
        after = {"email": notification_id, "template": row["template"]}
        _audit_action(
            connection, now, actor, customer_id, "resend_email", before=before, after=after
        )
    return ResentEmail(notification_id, row["template"])


@dataclass(frozen=True)
class BillingFacts:
    """What the mirror holds of a customer's subscriptions and invoices."""

    subscriptions: list[Any]
    invoices: list[Any]


def billing_facts(*, db: Database, customer_id: str, invoices: int = 12) -> BillingFacts:
    """Return a customer's mirrored subscriptions and newest invoices (none for a customer
    Tollgate does not know: callers look the customer up first)."""
    with db.engine.connect() as connection:
        return BillingFacts(
            subscriptions=queries.subscriptions_of(connection, customer_id),
            invoices=queries.invoices_of(connection, customer_id, invoices),
        )


def replay_event(deps: Deps, *, event_id: str) -> ProcessResult:
    """Apply a stored Stripe event again (harmless: newer state is kept); this process's
    cached decisions of the customers it touched are dropped at once."""
    result = replay_stripe_event(
        db=deps.db,
        gateway=deps.optional_stripe(),
        event_id=event_id,
        clock=deps.clock,
        dunning=deps.dunning_policy,
    )
    deps.forget_decisions(result.customers)
    return result
