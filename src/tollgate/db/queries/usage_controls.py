"""Usage controls' statements: the answers of `consume`, reservations and voided events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from tollgate.db.dialects import insert_if_new
from tollgate.db.tables import USAGE_CONSUMPTIONS, USAGE_EVENTS, USAGE_RESERVATIONS, USAGE_VOIDS

# -- consume answers -------------------------------------------------------------------------

_CONSUMPTION = select(
    USAGE_CONSUMPTIONS.c.customer_id,
    USAGE_CONSUMPTIONS.c.feature,
    USAGE_CONSUMPTIONS.c.quantity,
    USAGE_CONSUMPTIONS.c.answer,
)


def consumption(connection: Connection, consumption_id: str) -> Any | None:
    """Return the stored answer of a consume id (customer_id, feature, quantity, answer)."""
    return connection.execute(_CONSUMPTION.where(USAGE_CONSUMPTIONS.c.id == consumption_id)).first()


def insert_consumption(
    connection: Connection,
    *,
    consumption_id: str,
    customer_id: str,
    feature: str,
    quantity: int,
    allowed: bool,
    answer: dict[str, Any],
    now: datetime,
) -> bool:
    """Store a consume answer; False if one with this id was stored first."""
    statement = insert_if_new(connection, USAGE_CONSUMPTIONS, returning=("id",))
    inserted = connection.execute(
        statement,
        {
            "id": consumption_id,
            "customer_id": customer_id,
            "feature": feature,
            "quantity": quantity,
            "allowed": allowed,
            "answer": answer,
            "created_at": now,
        },
    ).first()
    return inserted is not None


# -- reservations ----------------------------------------------------------------------------


def insert_reservation(connection: Connection, row: dict[str, Any]) -> bool:
    """Insert a reservation (held: its units were added to its counter's `held`); False if one
    with its id was inserted first."""
    statement = insert_if_new(connection, USAGE_RESERVATIONS, returning=("id",))
    return connection.execute(statement, row).first() is not None


def reservation(connection: Connection, reservation_id: str, *, lock: bool = False) -> Any | None:
    """Return a reservation row (locked for this transaction on PostgreSQL when `lock`)."""
    statement = select(USAGE_RESERVATIONS).where(USAGE_RESERVATIONS.c.id == reservation_id)
    if lock:
        statement = statement.with_for_update()
    return connection.execute(statement).first()


def close_reservation(
    connection: Connection,
    reservation_id: str,
    *,
    status: str,
    committed: int | None,
    now: datetime,
) -> bool:
    """Close a held reservation; False if it was closed already (by another call or the job)."""
    closed = connection.execute(
        update(USAGE_RESERVATIONS)
        .where(USAGE_RESERVATIONS.c.id == reservation_id, USAGE_RESERVATIONS.c.status == "held")
        .values(status=status, committed=committed, closed_at=now)
        .returning(USAGE_RESERVATIONS.c.id)
    ).first()
    return closed is not None


def expired_reservations(connection: Connection, now: datetime, limit: int) -> list[str]:
    """Return ids of held reservations whose time ran out, oldest first."""
    rows = connection.execute(
        select(USAGE_RESERVATIONS.c.id)
        .where(USAGE_RESERVATIONS.c.status == "held", USAGE_RESERVATIONS.c.expires_at <= now)
        .order_by(USAGE_RESERVATIONS.c.expires_at)
        .limit(limit)
    )
    return [row[0] for row in rows]


# -- voided events ---------------------------------------------------------------------------


def events_by_id(connection: Connection, event_ids: Sequence[str]) -> list[Any]:
    """Return recorded usage events: id, customer_id, meter, value, occurred_at each."""
    return list(
        connection.execute(
            select(
                USAGE_EVENTS.c.id,
                USAGE_EVENTS.c.customer_id,
                USAGE_EVENTS.c.meter,
                USAGE_EVENTS.c.value,
                USAGE_EVENTS.c.occurred_at,
            ).where(USAGE_EVENTS.c.id.in_(list(event_ids)))
        )
    )


def voided_ids(connection: Connection, event_ids: Sequence[str]) -> set[str]:
    """Return which of the events were voided before."""
    rows = connection.execute(
        select(USAGE_VOIDS.c.event_id).where(USAGE_VOIDS.c.event_id.in_(list(event_ids)))
    )
    return {row[0] for row in rows}


def insert_void(connection: Connection, row: dict[str, Any]) -> bool:
    """Record a voided event; False if it was voided first by another call."""
    statement = insert_if_new(connection, USAGE_VOIDS, returning=("event_id",))
    return connection.execute(statement, row).first() is not None
