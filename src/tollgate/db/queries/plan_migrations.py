"""Plan migrations (issue 20): who is on a plan version, and each migration's progress."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, text, update

from tollgate.db.tables import (
    CUSTOMERS,
    PLAN_MIGRATION_CUSTOMERS,
    PLAN_MIGRATIONS,
    SUBSCRIPTIONS,
)
from tollgate.domain.events import ENDED_STATUSES


def subscribers_on_version(
    connection: Connection, plan: str, version: int, customer_ids: Iterable[str] | None = None
) -> list[Any]:
    """Return the live subscriptions on `plan` at `version`, with their customers, by customer."""
    query = (
        select(
            SUBSCRIPTIONS.c.id.label("subscription_id"),
            SUBSCRIPTIONS.c.customer_id,
            SUBSCRIPTIONS.c.interval,
            SUBSCRIPTIONS.c.currency,
            SUBSCRIPTIONS.c.seats,
            SUBSCRIPTIONS.c.current_period_end,
            CUSTOMERS.c.email,
            CUSTOMERS.c.name,
        )
        .join(CUSTOMERS, CUSTOMERS.c.id == SUBSCRIPTIONS.c.customer_id)
        .where(SUBSCRIPTIONS.c.plan == plan)
        .where(func.coalesce(SUBSCRIPTIONS.c.plan_version, 1) == version)
        .where(SUBSCRIPTIONS.c.status.not_in(sorted(ENDED_STATUSES)))
        .where(CUSTOMERS.c.deleted.is_(False))
        .order_by(SUBSCRIPTIONS.c.customer_id, SUBSCRIPTIONS.c.created_at.desc())
    )
    if customer_ids is not None:
        query = query.where(SUBSCRIPTIONS.c.customer_id.in_(sorted(set(customer_ids))))
    seen: set[str] = set()
    rows = []
    for row in connection.execute(query):
        if row.customer_id not in seen:  # a customer's newest live subscription
            seen.add(row.customer_id)
            rows.append(row)
    return rows


def hold_migrations(connection: Connection) -> None:
    """Make this transaction the only one starting a migration until it ends.

    Two requests at once would each find no unfinished migration and store one each. On SQLite
    the write transaction holds the database already; PostgreSQL locks the table against other
    writers (readers go on): migrations start rarely.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("LOCK TABLE plan_migrations IN SHARE ROW EXCLUSIVE MODE"))


def insert_migration(
    connection: Connection, migration: Mapping[str, Any], customers: Sequence[Mapping[str, Any]]
) -> None:
    """Store a migration and its subscribers (status pending)."""
    connection.execute(insert(PLAN_MIGRATIONS), [dict(migration)])
    for start in range(0, len(customers), 500):
        connection.execute(
            insert(PLAN_MIGRATION_CUSTOMERS), [dict(row) for row in customers[start : start + 500]]
        )


def migration(connection: Connection, migration_id: str) -> Any | None:
    """Return one migration's row."""
    return connection.execute(
        select(PLAN_MIGRATIONS).where(PLAN_MIGRATIONS.c.id == migration_id)
    ).first()


def unfinished_migration(
    connection: Connection, plan: str, from_version: int, to_version: int
) -> Any | None:
    """Return the newest migration of the plan between the versions that has not finished."""
    return connection.execute(
        select(PLAN_MIGRATIONS)
        .where(
            and_(
                PLAN_MIGRATIONS.c.plan == plan,
                PLAN_MIGRATIONS.c.from_version == from_version,
                PLAN_MIGRATIONS.c.to_version == to_version,
                PLAN_MIGRATIONS.c.status != "done",
            )
        )
        .order_by(PLAN_MIGRATIONS.c.created_at.desc())
        .limit(1)
    ).first()


def moved_subscriptions(
    connection: Connection, plan: str, from_version: int, to_version: int
) -> dict[str, str]:
    """Return the subscriptions a migration of the plan between the versions moved and whose row
    has not changed since (Stripe's webhook of the move may still be on its way), each with the
    newest such migration's id. A subscription whose row changed since is not in it: the row is
    the truth again."""
    rows = connection.execute(
        select(PLAN_MIGRATION_CUSTOMERS.c.subscription_id, PLAN_MIGRATIONS.c.id)
        .join(PLAN_MIGRATIONS, PLAN_MIGRATIONS.c.id == PLAN_MIGRATION_CUSTOMERS.c.migration_id)
        .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == PLAN_MIGRATION_CUSTOMERS.c.subscription_id)
        .where(
            and_(
                PLAN_MIGRATIONS.c.plan == plan,
                PLAN_MIGRATIONS.c.from_version == from_version,
                PLAN_MIGRATIONS.c.to_version == to_version,
                PLAN_MIGRATION_CUSTOMERS.c.status == "done",
                SUBSCRIPTIONS.c.updated_at <= PLAN_MIGRATION_CUSTOMERS.c.updated_at,
            )
        )
        .order_by(PLAN_MIGRATIONS.c.created_at)
    )
    return {row.subscription_id: row.id for row in rows}  # the newest wins


def stalled_migrations(connection: Connection, untouched_since: datetime) -> list[str]:
    """Return the running migrations no run has touched since `untouched_since`."""
    return [
        str(row.id)
        for row in connection.execute(
            select(PLAN_MIGRATIONS.c.id)
            .where(PLAN_MIGRATIONS.c.status == "running")
            .where(PLAN_MIGRATIONS.c.updated_at < untouched_since)
            .order_by(PLAN_MIGRATIONS.c.created_at)
        )
    ]


def pending_customers(connection: Connection, migration_id: str, limit: int) -> list[Any]:
    """Return up to `limit` subscribers of the migration not yet moved, in customer order,
    with the Stripe account their objects live on (Connect; None on the platform)."""
    return list(
        connection.execute(
            select(PLAN_MIGRATION_CUSTOMERS, CUSTOMERS.c.stripe_account)
            .join(CUSTOMERS, CUSTOMERS.c.id == PLAN_MIGRATION_CUSTOMERS.c.customer_id)
            .where(PLAN_MIGRATION_CUSTOMERS.c.migration_id == migration_id)
            .where(PLAN_MIGRATION_CUSTOMERS.c.status == "pending")
            .order_by(PLAN_MIGRATION_CUSTOMERS.c.customer_id)
            .limit(limit)
        )
    )


def migration_customers(connection: Connection, migration_id: str) -> list[Any]:
    """Return every subscriber of the migration, in customer order."""
    return list(
        connection.execute(
            select(PLAN_MIGRATION_CUSTOMERS)
            .where(PLAN_MIGRATION_CUSTOMERS.c.migration_id == migration_id)
            .order_by(PLAN_MIGRATION_CUSTOMERS.c.customer_id)
        )
    )


def finish_customer(
    connection: Connection,
    migration_id: str,
    customer_id: str,
    *,
    status: str,
    error: str | None,
    now: datetime,
) -> None:
    """Mark one subscriber done, failed or skipped."""
    connection.execute(
        update(PLAN_MIGRATION_CUSTOMERS)
        .where(PLAN_MIGRATION_CUSTOMERS.c.migration_id == migration_id)
        .where(PLAN_MIGRATION_CUSTOMERS.c.customer_id == customer_id)
        .values(status=status, error=error, updated_at=now)
    )


def retry_failed_customers(connection: Connection, migration_id: str, now: datetime) -> int:
    """Put the migration's failed subscribers back to pending; return how many."""
    result = connection.execute(
        update(PLAN_MIGRATION_CUSTOMERS)
        .where(PLAN_MIGRATION_CUSTOMERS.c.migration_id == migration_id)
        .where(PLAN_MIGRATION_CUSTOMERS.c.status == "failed")
        .values(status="pending", error=None, updated_at=now)
    )
    return int(result.rowcount or 0)


def status_counts(connection: Connection, migration_id: str) -> dict[str, int]:
    """Return how many of the migration's subscribers are in each status."""
    rows = connection.execute(
        select(PLAN_MIGRATION_CUSTOMERS.c.status, func.count())
        .where(PLAN_MIGRATION_CUSTOMERS.c.migration_id == migration_id)
        .group_by(PLAN_MIGRATION_CUSTOMERS.c.status)
    )
    return {str(status): int(count) for status, count in rows}


def set_migration_status(
    connection: Connection, migration_id: str, status: str, now: datetime
) -> None:
    connection.execute(
        update(PLAN_MIGRATIONS)
        .where(PLAN_MIGRATIONS.c.id == migration_id)
        .values(status=status, updated_at=now)
    )
