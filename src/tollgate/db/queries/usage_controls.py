"""Usage controls' statements: the answers of `consume`, reservations and voided events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, delete, func, select, update

from tollgate.db.dialects import among_json_array, insert_if_new, json_array, upsert
from tollgate.db.execution import named_row, on_cursor, read_rows
from tollgate.db.queries.usage import _postgres, _sqlite_time, sqlite_values
from tollgate.db.queries.usage_storage import events_of_ids
from tollgate.db.tables import (
    AUDIT_LOG,
    METER_ADJUSTMENTS,
    METER_OUTBOX,
    SPEND_CAPS,
    USAGE_ALERT_FIRINGS,
    USAGE_ALERTS,
    USAGE_CONSUMPTIONS,
    USAGE_COUNTERS,
    USAGE_EVENTS,
    USAGE_RESERVATIONS,
    USAGE_VOIDS,
)

# -- consume answers -------------------------------------------------------------------------

_CONSUMPTION = select(
    USAGE_CONSUMPTIONS.c.customer_id,
    USAGE_CONSUMPTIONS.c.feature,
    USAGE_CONSUMPTIONS.c.quantity,
    USAGE_CONSUMPTIONS.c.answer,
)


def consumptions(connection: Connection, consumption_ids: Sequence[str]) -> dict[str, Any]:
    """Return the stored answers of consume ids, by id (ids without one are left out)."""
    rows = connection.execute(_CONSUMPTIONS, {"ids": list(consumption_ids)})
    return {row.id: row for row in rows}


_CONSUMPTIONS = _CONSUMPTION.add_columns(USAGE_CONSUMPTIONS.c.id).where(
    USAGE_CONSUMPTIONS.c.id.in_(bindparam("ids", expanding=True))
)


# A consume answer to store: (id, customer id, feature, quantity, allowed, answer as JSON).
NewConsumption = tuple[str, str, str, int, bool, dict[str, Any]]


def insert_consumptions(
    connection: Connection, rows: Sequence[NewConsumption], now: datetime
) -> set[str]:
    """Store consume answers, made at `now`, in id order; return the ids stored now (an id
    stored first by another call is left as it was).

    Every consume group writes one, so it goes to the driver's cursor as one statement (a
    group's rows as one JSON parameter on PostgreSQL, one multi-row VALUES on SQLite), the
    answers written by orjson: SQLAlchemy's insert of many rows with RETURNING, rendered and its
    JSON encoded per row, took about an eighth of a large group's CPU.
    """
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda row: row[0])  # every batch claims its ids in one order
    if _postgres(connection):
        found = on_cursor(
            connection,
            _PG_INSERT_CONSUMPTIONS,
            {"rows": orjson.dumps(ordered).decode(), "now": now},
        )
        return {row[0] for row in found}
    stamp = _sqlite_time(now)
    values = [
        (use_id, customer, feature, quantity, int(allowed), orjson.dumps(answer).decode(), stamp)
        for use_id, customer, feature, quantity, allowed, answer in ordered
    ]
    found = sqlite_values(
        connection, _SQLITE_INSERT_CONSUMPTIONS, values, " ON CONFLICT DO NOTHING RETURNING id"
    )
    return {row[0] for row in found}


_SQLITE_INSERT_CONSUMPTIONS = (
    "INSERT INTO usage_consumptions (id, customer_id, feature, quantity, allowed, answer,"
    " created_at)"
)
_PG_INSERT_CONSUMPTIONS = (
    "INSERT INTO usage_consumptions (id, customer_id, feature, quantity, allowed, answer,"
    " created_at) SELECT r->>0, r->>1, r->>2, (r->>3)::bigint, (r->>4)::boolean, (r->5)::json,"
    " %(now)s FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
    " ON CONFLICT DO NOTHING RETURNING id"
)


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
            ).where(events_of_ids(connection, event_ids))
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


# -- compensating overage already queued or reported to Stripe -------------------------------

_OUTBOX_OF_COUNTER = (
    (METER_OUTBOX.c.customer_id == bindparam("customer_id"))
    & (METER_OUTBOX.c.feature == bindparam("feature"))
    & (METER_OUTBOX.c.period_start == bindparam("period_start"))
)


def unsent_overage(
    connection: Connection, customer_id: str, feature: str, period_start: datetime
) -> list[tuple[int, int]]:
    """Return a counter's pending (unclaimed) meter outbox rows, newest first: (id, value),
    locked for this transaction (the sync job skips them meanwhile)."""
    rows = connection.execute(
        select(METER_OUTBOX.c.id, METER_OUTBOX.c.value)
        .where(_OUTBOX_OF_COUNTER, METER_OUTBOX.c.status == "pending")
        .order_by(METER_OUTBOX.c.id.desc())
        .with_for_update(),
        {"customer_id": customer_id, "feature": feature, "period_start": period_start},
    )
    return [(int(row.id), int(row.value)) for row in rows]


def take_back_unsent(connection: Connection, row_id: int, value: int) -> None:
    """Lower a pending outbox row to `value` (deleted at zero)."""
    if value <= 0:
        connection.execute(delete(METER_OUTBOX).where(METER_OUTBOX.c.id == row_id))
    else:
        connection.execute(
            update(METER_OUTBOX).where(METER_OUTBOX.c.id == row_id).values(value=value)
        )


def sent_overage(
    connection: Connection, customer_id: str, feature: str, period_start: datetime
) -> list[Any]:
    """Return a counter's meter events Stripe has, newest first: identifier, stripe_customer_id,
    stripe_account, event_name, units each."""
    return list(
        connection.execute(
            select(
                METER_OUTBOX.c.identifier,
                METER_OUTBOX.c.stripe_customer_id,
                METER_OUTBOX.c.stripe_account,
                METER_OUTBOX.c.event_name,
                func.sum(METER_OUTBOX.c.value).label("units"),
            )
            .where(_OUTBOX_OF_COUNTER, METER_OUTBOX.c.status == "sent")
            .group_by(
                METER_OUTBOX.c.identifier,
                METER_OUTBOX.c.stripe_customer_id,
                METER_OUTBOX.c.stripe_account,
                METER_OUTBOX.c.event_name,
            )
            .order_by(func.max(METER_OUTBOX.c.id).desc()),
            {"customer_id": customer_id, "feature": feature, "period_start": period_start},
        )
    )


def cancel_sent(connection: Connection, row: Any, customer_id: str, now: datetime) -> bool:
    """Queue the cancellation of a sent meter event and mark its outbox rows cancelled; False
    if it was queued before."""
    statement = insert_if_new(connection, METER_ADJUSTMENTS, returning=("id",))
    queued = connection.execute(
        statement,
        {
            "customer_id": customer_id,
            "stripe_customer_id": row.stripe_customer_id,
            "stripe_account": row.stripe_account,
            "event_name": row.event_name,
            "cancel_identifier": row.identifier,
            "units": int(row.units),
            "status": "pending",
            "attempts": 0,
            "created_at": now,
        },
    ).first()
    connection.execute(
        update(METER_OUTBOX)
        .where(METER_OUTBOX.c.identifier == row.identifier, METER_OUTBOX.c.status == "sent")
        .values(status="cancelled")
    )
    return queued is not None


def pending_adjustments(connection: Connection, limit: int) -> list[Any]:
    """Return meter adjustments to send, oldest first."""
    return list(
        connection.execute(
            select(METER_ADJUSTMENTS)
            .where(METER_ADJUSTMENTS.c.status == "pending")
            .order_by(METER_ADJUSTMENTS.c.id)
            .limit(limit)
        )
    )


def mark_adjustment(
    connection: Connection, adjustment_id: int, *, status: str, error: str | None, now: datetime
) -> None:
    connection.execute(
        update(METER_ADJUSTMENTS)
        .where(METER_ADJUSTMENTS.c.id == adjustment_id)
        .values(
            status=status,
            last_error=error,
            attempts=METER_ADJUSTMENTS.c.attempts + 1,
            sent_at=now if status == "sent" else None,
        )
    )


def set_reported(
    connection: Connection, customer_id: str, feature: str, period_start: datetime, units: int
) -> None:
    """Set the overage units a counter has queued or reported to Stripe."""
    connection.execute(
        update(USAGE_COUNTERS)
        .where(
            USAGE_COUNTERS.c.customer_id == customer_id,
            USAGE_COUNTERS.c.meter == feature,
            USAGE_COUNTERS.c.period_start == period_start,
        )
        .values(reported=units)
    )


def audit_void(connection: Connection, row: Any, *, reason: str, actor: str, now: datetime) -> None:
    """Write the audit row of a voided usage event."""
    connection.execute(
        AUDIT_LOG.insert(),
        {
            "at": now,
            "actor": actor,
            "object_type": "usage_event",
            "object_id": row.id,
            "action": "void",
            "before": {"customer": row.customer_id, "meter": row.meter, "value": int(row.value)},
            "after": {"reason": reason},
            "event_id": None,
        },
    )


# -- spend caps ------------------------------------------------------------------------------


def spend_caps(connection: Connection, customer_ids: Sequence[str]) -> dict[str, int]:
    """Return the customers' spend caps (minor units of each one's currency), where set."""
    rows = connection.execute(
        _SPEND_CAPS_OF[connection.dialect.name], {"ids": json_array(customer_ids)}
    )
    return {customer_id: int(amount_minor) for customer_id, amount_minor in rows}


# Built once: every entitlement load and usage batch runs it.
_SPEND_CAPS_OF = among_json_array(
    select(SPEND_CAPS.c.customer_id, SPEND_CAPS.c.amount_minor),
    SPEND_CAPS,
    SPEND_CAPS.c.customer_id,
    "ids",
)


def spend_cap_row(connection: Connection, customer_id: str) -> Any | None:
    return connection.execute(
        select(SPEND_CAPS).where(SPEND_CAPS.c.customer_id == customer_id)
    ).first()


def put_spend_cap(connection: Connection, row: dict[str, Any]) -> None:
    """Set (or replace) a customer's spend cap."""
    replace = ("amount_minor", "currency", "set_by", "updated_at")
    statement = upsert(connection, SPEND_CAPS, index_elements=("customer_id",), update=replace)
    connection.execute(statement, row)


def delete_spend_cap(connection: Connection, customer_id: str) -> bool:
    gone = connection.execute(
        delete(SPEND_CAPS)
        .where(SPEND_CAPS.c.customer_id == customer_id)
        .returning(SPEND_CAPS.c.customer_id)
    ).first()
    return gone is not None


# -- usage alerts ----------------------------------------------------------------------------


class AlertRow(NamedTuple):
    """An alert as stored (the columns of `_ALERTS_OF`, in their order)."""

    id: str
    customer_id: str
    feature: str
    kind: str
    threshold: int
    created_at: datetime


def alerts_of(connection: Connection, customer_ids: Sequence[str]) -> list[AlertRow]:
    """Return the customers' alerts, oldest first.

    Every usage batch that counts runs it (on the driver's cursor: `read_rows`), and most
    customers have none.
    """
    rows = read_rows(
        connection, _ALERTS_OF[connection.dialect.name], {"ids": json_array(customer_ids)}
    )
    return [named_row(AlertRow, row) for row in rows]


_ALERTS_OF = among_json_array(
    select(*(USAGE_ALERTS.c[name] for name in AlertRow._fields)).order_by(
        USAGE_ALERTS.c.created_at, USAGE_ALERTS.c.id
    ),
    USAGE_ALERTS,
    USAGE_ALERTS.c.customer_id,
    "ids",
)


def insert_alert(connection: Connection, row: dict[str, Any]) -> bool:
    statement = insert_if_new(connection, USAGE_ALERTS, returning=("id",))
    return connection.execute(statement, row).first() is not None


def alert(connection: Connection, alert_id: str) -> Any | None:
    return connection.execute(select(USAGE_ALERTS).where(USAGE_ALERTS.c.id == alert_id)).first()


def delete_alert(connection: Connection, alert_id: str) -> None:
    connection.execute(
        delete(USAGE_ALERT_FIRINGS).where(USAGE_ALERT_FIRINGS.c.alert_id == alert_id)
    )
    connection.execute(delete(USAGE_ALERTS).where(USAGE_ALERTS.c.id == alert_id))


def insert_firing(
    connection: Connection, alert_id: str, period_start: datetime, used: int, now: datetime
) -> bool:
    """Record that an alert fired in a period; False if it fired there before."""
    statement = insert_if_new(connection, USAGE_ALERT_FIRINGS, returning=("alert_id",))
    row = {"alert_id": alert_id, "period_start": period_start, "used": used, "fired_at": now}
    return connection.execute(statement, row).first() is not None
