"""What metering, entitlements, dunning and reminders read and set of customers and their
subscriptions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from tollgate.db.tables import CHARGES, CUSTOMERS, SUBSCRIPTIONS

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


# Built once with expanding parameters: compiled once, not on every entitlement load.
_CUSTOMERS_IN = select(*_CUSTOMER_COLUMNS).where(
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
            for row in connection.execute(_CUSTOMERS_IN, {"ids": list(chunk)})
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
    changed = connection.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .where(CUSTOMERS.c.processing_access.is_distinct_from(access))
        .values(processing_access=access, updated_at=now)
    )
    return bool(changed.rowcount)


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
