"""What metering, entitlements, dunning and reminders read and set of customers and their
subscriptions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update

from tollgate.db.tables import BANK_TRANSFERS, CHARGES, CUSTOMERS, DISPUTES, SUBSCRIPTIONS
from tollgate.domain.events import DISPUTE_OPEN_STATUSES

_CUSTOMER_COLUMNS = (
    CUSTOMERS.c.id,
    CUSTOMERS.c.deleted,
    CUSTOMERS.c.offline,
    CUSTOMERS.c.plan,
    CUSTOMERS.c.currency,
    CUSTOMERS.c.requested_currency,
    CUSTOMERS.c.stripe_customer_id,
    CUSTOMERS.c.stripe_account,
    CUSTOMERS.c.dunning_access,
    CUSTOMERS.c.processing_access,
    CUSTOMERS.c.dispute_access,
)
_SUBSCRIPTION_COLUMNS = (
    SUBSCRIPTIONS.c.id,
    SUBSCRIPTIONS.c.customer_id,
    SUBSCRIPTIONS.c.status,
    SUBSCRIPTIONS.c.plan,
    SUBSCRIPTIONS.c.plan_version,
    SUBSCRIPTIONS.c.interval,
    SUBSCRIPTIONS.c.seats,
    SUBSCRIPTIONS.c.currency,
    SUBSCRIPTIONS.c.cancel_at_period_end,
    SUBSCRIPTIONS.c.cancel_at,
    SUBSCRIPTIONS.c.current_period_start,
    SUBSCRIPTIONS.c.current_period_end,
    SUBSCRIPTIONS.c.created_at,
)
# Built once: every entitlement load runs both, and building a statement and its cache key
# costs more than running it on SQLite.
_CUSTOMERS_BY_ID = select(*_CUSTOMER_COLUMNS).where(
    CUSTOMERS.c.id.in_(bindparam("ids", expanding=True))
)
_SUBSCRIPTIONS_OF = select(*_SUBSCRIPTION_COLUMNS).where(
    SUBSCRIPTIONS.c.customer_id.in_(bindparam("ids", expanding=True))
)


def customers_with_subscriptions(
    connection: Connection, customer_ids: Iterable[str]
) -> Iterator[tuple[Any, Sequence[Any]]]:
    """Yield each customer among `customer_ids` that is not deleted, with all its
    subscriptions (two statements per 500 customers)."""
    ids = sorted(set(customer_ids))
    for chunk in _chunks(ids, 500):
        customers = {
            row.id: row
            for row in connection.execute(_CUSTOMERS_BY_ID, {"ids": list(chunk)})
            if not row.deleted
        }
        if not customers:
            continue
        held: dict[str, list[Any]] = {}
        rows = connection.execute(_SUBSCRIPTIONS_OF, {"ids": list(customers)})
        for subscription in rows.all():
            held.setdefault(subscription.customer_id, []).append(subscription)
        for customer_id, customer in customers.items():
            yield customer, held.get(customer_id, ())


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dunning_access(connection: Connection, customer_id: str) -> Any:
    """Return the access dunning holds the customer at (None: the subscription decides)."""
    return connection.execute(
        select(CUSTOMERS.c.dunning_access).where(CUSTOMERS.c.id == customer_id)
    ).scalar()


def set_dunning_access(
    connection: Connection, customer_id: str, access: str | None, now: datetime
) -> None:
    connection.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .values(dunning_access=access, updated_at=now)
    )


def set_processing_access(
    connection: Connection, customer_id: str, access: str | None, now: datetime
) -> bool:
    """Set the access a processing bank debit gives; True when it changed."""
    return _set_hold(connection, "processing_access", customer_id, access, now)


def set_dispute_access(
    connection: Connection, customer_id: str, access: str | None, now: datetime
) -> bool:
    """Set the access the customer's disputes leave; True when it changed."""
    return _set_hold(connection, "dispute_access", customer_id, access, now)


def _set_hold(
    connection: Connection, column: str, customer_id: str, access: str | None, now: datetime
) -> bool:
    changed = connection.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .where(CUSTOMERS.c[column].is_distinct_from(access))
        .values({column: access, "updated_at": now})
    )
    return bool(changed.rowcount)


def held_dispute_count(connection: Connection, customer_id: str) -> int:
    """Return how many of the customer's disputes hold its access: open (answered or not) or
    lost. An inquiry (`warning_*`) withdrew nothing and holds nothing."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(DISPUTES)
            .where(
                DISPUTES.c.customer_id == customer_id,
                DISPUTES.c.status.in_(("needs_response", "under_review", "lost")),
            )
        ).scalar_one()
    )


def customers_with_cash(connection: Connection) -> list[Any]:
    """Return the customers that have paid by bank transfer (a mirrored cash balance, or a
    payment waiting for transfers): id, Stripe id and account, the cash balance as mirrored."""
    waiting = select(BANK_TRANSFERS.c.customer_id).where(
        BANK_TRANSFERS.c.customer_id == CUSTOMERS.c.id
    )
    return list(
        connection.execute(
            select(
                CUSTOMERS.c.id,
                CUSTOMERS.c.stripe_customer_id,
                CUSTOMERS.c.stripe_account,
                CUSTOMERS.c.cash_balance,
            )
            .where(
                CUSTOMERS.c.stripe_customer_id.is_not(None),
                CUSTOMERS.c.deleted.is_(False),
                or_(CUSTOMERS.c.cash_balance.is_not(None), waiting.exists()),
            )
            .order_by(CUSTOMERS.c.id)
        )
    )


def pending_charge_count(connection: Connection, customer_id: str) -> int:
    """Return how many of the customer's charges are still pending (bank debits processing)."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(CHARGES)
            .where(CHARGES.c.customer_id == customer_id, CHARGES.c.status == "pending")
        ).scalar_one()
    )


def trials_ending(connection: Connection, now: datetime, within: timedelta) -> list[Any]:
    """Return the trialing subscriptions whose trial ends after `now` and within `within`."""
    return list(
        connection.execute(
            select(SUBSCRIPTIONS)
            .where(
                SUBSCRIPTIONS.c.status == "trialing",
                SUBSCRIPTIONS.c.trial_end > now,
                SUBSCRIPTIONS.c.trial_end <= now + within,
            )
            .order_by(SUBSCRIPTIONS.c.trial_end, SUBSCRIPTIONS.c.id)
        )
        .mappings()
        .all()
    )


def disputes_due(connection: Connection, now: datetime, within: timedelta) -> list[Any]:
    """Return the open disputes of known customers whose evidence is due after `now` and within
    `within`."""
    return list(
        connection.execute(
            select(DISPUTES)
            .where(
                DISPUTES.c.status.in_(sorted(DISPUTE_OPEN_STATUSES)),
                DISPUTES.c.evidence_due_by > now,
                DISPUTES.c.evidence_due_by <= now + within,
                DISPUTES.c.customer_id.is_not(None),
            )
            .order_by(DISPUTES.c.evidence_due_by, DISPUTES.c.id)
        )
        .mappings()
        .all()
    )
