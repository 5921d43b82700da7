"""The outbox's statements: emails (`notifications`) and app webhooks (`app_events`).

Both tables have the same delivery columns (status, attempts, next_attempt_at, last_error), so
one set of statements claims, finishes and reschedules rows of either.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, select, update

from tollgate.db.dialects import insert_if_new
from tollgate.db.tables import APP_EVENTS, CUSTOMERS, NOTIFICATIONS


def insert_new(connection: Connection, table: Table, row: Mapping[str, Any]) -> None:
    """Insert an outbox row unless one with its key is there already."""
    connection.execute(insert_if_new(connection, table), dict(row))


# Built once, not per call: a payment's receipt asks it on every `invoice.paid`, and making the
# statement cost more than running it.
_NOTIFIED = (
    select(NOTIFICATIONS.c.id)
    .where(
        NOTIFICATIONS.c.customer_id == bindparam("customer_id"),
        NOTIFICATIONS.c.cause == bindparam("cause"),
        NOTIFICATIONS.c.template.in_(bindparam("templates", expanding=True)),
    )
    .limit(1)
)


def notified(
    connection: Connection, *, customer_id: str, cause: str, templates: Collection[str]
) -> bool:
    """Whether one of `templates` was queued to the customer for `cause`."""
    found = connection.execute(
        _NOTIFIED, {"customer_id": customer_id, "cause": cause, "templates": sorted(templates)}
    )
    return found.first() is not None


def due_ids(connection: Connection, table: Table, now: datetime, limit: int) -> list[Any]:
    """Return the ids of pending rows due by `now`, the longest waiting first."""
    return list(
        connection.execute(
            select(table.c.id)
            .where(and_(table.c.status == "pending", table.c.next_attempt_at <= now))
            .order_by(table.c.next_attempt_at, table.c.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )


def claim(
    connection: Connection, table: Table, row_id: Any, now: datetime, lease: timedelta
) -> bool:
    """Push a due pending row a lease ahead; False when another worker took it first."""
    taken = connection.execute(
        update(table)
        .where(
            and_(table.c.id == row_id, table.c.status == "pending", table.c.next_attempt_at <= now)
        )
        .values(next_attempt_at=now + lease)
    )
    return bool(taken.rowcount)


def finish(
    connection: Connection, table: Table, row_id: Any, status: str, error: str | None, now: datetime
) -> None:
    """Mark a row done (sent, delivered or skipped), counting the attempt."""
    done = {"sent_at": now} if table is NOTIFICATIONS else {"delivered_at": now}
    connection.execute(
        update(table)
        .where(table.c.id == row_id)
        .values(
            status=status,
            attempts=table.c.attempts + 1,
            last_error=error,
            next_attempt_at=None,
            **done,
        )
    )


def reschedule(
    connection: Connection,
    table: Table,
    row_id: Any,
    *,
    attempts: int,
    error: str,
    next_attempt_at: datetime | None,
) -> None:
    """Record a failed attempt: pending again at `next_attempt_at`, or failed when None."""
    connection.execute(
        update(table)
        .where(table.c.id == row_id)
        .values(
            status="failed" if next_attempt_at is None else "pending",
            attempts=attempts,
            last_error=error[:2000],
            next_attempt_at=next_attempt_at,
        )
    )


def email_with_recipient(connection: Connection, row_id: Any) -> Mapping[Any, Any]:
    """Return a queued email with its customer's address, name and metadata."""
    return (
        connection.execute(
            select(
                NOTIFICATIONS,
                CUSTOMERS.c.email,
                CUSTOMERS.c.name,
                CUSTOMERS.c.metadata.label("customer_metadata"),
            )
            .outerjoin(CUSTOMERS, CUSTOMERS.c.id == NOTIFICATIONS.c.customer_id)
            .where(NOTIFICATIONS.c.id == row_id)
        )
        .mappings()
        .one()
    )


def app_event(connection: Connection, event_id: str) -> Mapping[Any, Any]:
    """Return a queued app webhook."""
    return (
        connection.execute(select(APP_EVENTS).where(APP_EVENTS.c.id == event_id)).mappings().one()
    )


def recipient(connection: Connection, customer_id: str) -> Any:
    """Return the customer's email, name and metadata, or None."""
    return connection.execute(
        select(CUSTOMERS.c.email, CUSTOMERS.c.name, CUSTOMERS.c.metadata).where(
            CUSTOMERS.c.id == customer_id
        )
    ).first()


def newest_facts(
    connection: Connection, customer_id: str, template: str, number: int | None = None
) -> Any:
    """Return the facts of the customer's email `number` of `template` (its newest when None),
    or None."""
    n = NOTIFICATIONS.c
    query = select(n.facts).where(n.customer_id == customer_id, n.template == template)
    if number is not None:
        query = query.where(n.id == number)
    return connection.scalar(query.order_by(n.id.desc()).limit(1))
