"""The inbox of Stripe events: stored once by id, claimed, leased, finished, retried.

Claiming: on PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED`, so a second worker on the same event
moves on at once. On SQLite each transaction's first statement is a write, so it holds the
database's single write lock before it reads anything. Either way, only one transaction at a
time decides whether an event still needs applying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select, update

from tollgate.db.dialects import among_json_array, insert_if_new, json_array
from tollgate.db.execution import Read, Write, on_driver, run
from tollgate.db.tables import CUSTOMERS, STRIPE_EVENTS

DONE = ("succeeded", "ignored")

_BY_ID = STRIPE_EVENTS.c.id == bindparam("event_id")
_STATUS = select(STRIPE_EVENTS.c.status).where(_BY_ID)
# The ids as one JSON array: built and compiled once, run on the driver's cursor (an expanding
# IN goes through SQLAlchemy, which renders and binds a parameter per id on every call).
_STATUSES = among_json_array(
    select(STRIPE_EVENTS.c.id, STRIPE_EVENTS.c.status),
    STRIPE_EVENTS,
    STRIPE_EVENTS.c.id,
    "event_ids",
)
_ROW = select(STRIPE_EVENTS).where(_BY_ID)
_ROW_FOR_UPDATE = _ROW.with_for_update()
_ROW_FOR_UPDATE_SKIP_LOCKED = _ROW.with_for_update(skip_locked=True)
# SQLite: a write that changes nothing, to take the database's write lock before reading.
_TAKE_WRITE_LOCK = update(STRIPE_EVENTS).where(_BY_ID).values(attempts=STRIPE_EVENTS.c.attempts)
_FINISHED = (
    update(STRIPE_EVENTS)
    .where(_BY_ID)
    .values(
        status=bindparam("status"),
        attempts=STRIPE_EVENTS.c.attempts + 1,
        processed_at=bindparam("now"),
        last_error=None,
        next_attempt_at=None,
    )
)
# Claimed and marked finished in one statement: the row lock is taken (waiting for a holder, as
# `FOR UPDATE` waits), an event applied meanwhile is left alone, and the mark commits only with
# the handler's effects. Compared with literals, not `not_in`: the statement runs on the
# driver's cursor, compiled once (`execution.run`), where an expanding list cannot go.
_CLAIMED_FINISHED = _FINISHED.where(
    STRIPE_EVENTS.c.status != DONE[0], STRIPE_EVENTS.c.status != DONE[1]
).returning(STRIPE_EVENTS.c.id)
_LEASED = (
    update(STRIPE_EVENTS)
    .where(_BY_ID)
    .values(status="processing", next_attempt_at=bindparam("lease_until"))
)
# Leased as stored, not applied: the row was inserted marked done in the same transaction.
_PARKED_ON_DRIVER = on_driver(_LEASED.values(attempts=0, processed_at=None))
_MARK_FAILED = (
    update(STRIPE_EVENTS)
    .where(_BY_ID, STRIPE_EVENTS.c.status.not_in(DONE))
    .values(status="failed", attempts=STRIPE_EVENTS.c.attempts + 1, last_error=bindparam("message"))
    .returning(STRIPE_EVENTS.c.attempts)
)
_BACK_OFF = update(STRIPE_EVENTS).where(_BY_ID).values(next_attempt_at=bindparam("retry_at"))

# The inbox's columns, in the order of the PostgreSQL insert below.
COLUMNS = (
    "id",
    "type",
    "object_type",
    "object_id",
    "stripe_account",
    "api_version",
    "created",
    "received_at",
    "status",
    "attempts",
    "last_error",
    "next_attempt_at",
    "processed_at",
    "payload",
)
# PostgreSQL: a group's rows as one array per column. The statement's text is the same for any
# number of rows, so psycopg parses it once and the server prepares it; a multi-row VALUES list
# would be a new statement for every group size, parsed each time (about 1 ms for a group of 8
# events). Arrays in binary (%b): text arrays in text form are escaped character by character.
_PG_INSERT_MANY_NEW = (
    "INSERT INTO stripe_events (id, type, object_type, object_id, stripe_account, api_version,"
    " created, received_at, status, attempts, last_error, next_attempt_at, processed_at, payload)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::integer[], %b::text[],"
    " %b::timestamptz[], %b::timestamptz[], %b::text[])"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)


_INSERT = on_driver(STRIPE_EVENTS.insert())


def _insert_if_new(connection: Connection) -> Any:
    return insert_if_new(connection, STRIPE_EVENTS, index_elements=("id",), returning=("id",))


def insert_new(connection: Connection, row: Mapping[str, Any]) -> bool:
    """Insert an inbox row unless its event id is stored; return whether it was inserted."""
    # On the driver's cursor (see db.execution): SQLite inserts each group's first row so.
    (inserted,) = run(connection, [], [insert_new_read(connection, row)])
    return bool(inserted)


def insert_new_read(connection: Connection, row: Mapping[str, Any]) -> Read:
    """`insert_new`'s statement as a read (a row when it inserted), to send with other reads."""
    return (_insert_if_new(connection), row)


def insert_many_new(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert inbox rows whose event ids are not stored; return the ids inserted.

    Of rows with the same id, the first is inserted.
    """
    if connection.dialect.name != "postgresql":
        return _sqlite_insert_many_new(connection, rows)
    # (A lone delivery on PostgreSQL is not inserted here: `insert_new_read` sends its plain row
    # with the reads its handler makes first.)
    columns = tuple([row[name] for row in rows] for name in COLUMNS)
    return {found for (found,) in connection.exec_driver_sql(_PG_INSERT_MANY_NEW, columns)}


def _sqlite_insert_many_new(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """SQLite: the first row alone, then the others that are not stored, in one executemany.

    A multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` costs SQLite about twice what an
    executemany of a plain insert does (measured: 35 against 15 µs a row). The first insert is
    a write, so the transaction holds the database's write lock from then on: the ids read
    next stay unstored until it commits, and the others are inserted without a conflict clause
    (should one be stored all the same, the insert raises and the transaction runs again).
    """
    first: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        first.setdefault(row["id"], row)
    head, *rest = first.values()
    inserted = {head["id"]} if insert_new(connection, head) else set()
    stored = statuses_of(connection, [row["id"] for row in rest])
    new = [row for row in rest if row["id"] not in stored]
    if new:
        run(connection, [(_INSERT, new)])
        inserted.update(row["id"] for row in new)
    return inserted


def status_of(connection: Connection, event_id: str) -> str | None:
    """Return a stored event's status (None when it is not stored)."""
    return connection.scalar(_STATUS, {"event_id": event_id})


def statuses_of(connection: Connection, event_ids: Sequence[str]) -> dict[str, str]:
    """Return the status of each of these events that is stored."""
    if not event_ids:
        return {}
    statement = _STATUSES[connection.dialect.name]
    (rows,) = run(connection, [], [(statement, {"event_ids": json_array(event_ids)})])
    return {row["id"]: row["status"] for row in rows}


def claim(connection: Connection, event_id: str, *, wait: bool) -> Mapping[str, Any] | None:
    """Lock the inbox row for this transaction; None if another worker holds it and not `wait`.

    Also None when no such event is stored (`status_of` tells the two apart).
    """
    key = {"event_id": event_id}
    if connection.dialect.name == "postgresql":
        query = _ROW_FOR_UPDATE if wait else _ROW_FOR_UPDATE_SKIP_LOCKED
        return _mapping(connection.execute(query, key).mappings().first())
    # SQLite: writing first takes the database's write lock before the status is read, so
    # two transactions never both see "pending" (a read-then-write transaction could).
    connection.execute(_TAKE_WRITE_LOCK, key)
    return _mapping(connection.execute(_ROW, key).mappings().first())


def _mapping(row: Any) -> Mapping[str, Any] | None:
    return None if row is None else dict(row)


def mark_finished(connection: Connection, event_id: str, *, status: str, now: datetime) -> None:
    """Mark an event applied (`succeeded`) or `ignored`, counting the attempt."""
    connection.execute(_FINISHED, {"event_id": event_id, "status": status, "now": now})


def claim_finished(connection: Connection, event_id: str, *, status: str, now: datetime) -> bool:
    """Lock a stored event's row and mark it `status` (succeeded or ignored) in this
    transaction, counting the attempt, unless it was applied already; return whether it was
    marked (False: applied already, or not stored; `status_of` tells them apart).

    One statement on the driver's cursor where `claim` and `mark_finished` are two through
    SQLAlchemy: for an event whose worker holds its lease (nothing to refuse but "done").
    """
    parameters = {"event_id": event_id, "status": status, "now": now}
    (rows,) = run(connection, [], [(_CLAIMED_FINISHED, parameters)])
    return bool(rows)


def lease(connection: Connection, event_id: str, *, until: datetime) -> None:
    """Mark an event processing by this worker until `until`."""
    connection.execute(_LEASED, {"event_id": event_id, "lease_until": until})


def parked(event_id: str, *, until: datetime) -> Write:
    """The write that marks an event stored as applied in this transaction processing by this
    worker until `until`, not applied: it needs an object from Stripe first. Queued with a
    group's writes (on the driver's cursor, in their round trip on PostgreSQL)."""
    return (_PARKED_ON_DRIVER, {"event_id": event_id, "lease_until": until})


def mark_failed(connection: Connection, event_id: str, *, message: str) -> int | None:
    """Mark an event failed (unless it was applied meanwhile); return its attempts, or None."""
    return connection.scalar(_MARK_FAILED, {"event_id": event_id, "message": message})


def back_off(connection: Connection, event_id: str, *, retry_at: datetime) -> None:
    """Set when a failed event is tried again."""
    connection.execute(_BACK_OFF, {"event_id": event_id, "retry_at": retry_at})


def due(connection: Connection, *, now: datetime, stuck_after: timedelta, limit: int) -> list[str]:
    """Return the ids of events to try again: failed and due, leases run out, pending too long."""
    events = STRIPE_EVENTS.c
    query = (
        select(events.id)
        .where(
            or_(
                and_(events.status == "failed", events.next_attempt_at <= now),
                and_(events.status == "processing", events.next_attempt_at <= now),
                and_(events.status == "pending", events.received_at <= now - stuck_after),
            )
        )
        .order_by(events.created, events.id)
        .limit(limit)
    )
    return list(connection.scalars(query))


def newest(connection: Connection, *, status: str | None, limit: int) -> list[Mapping[str, Any]]:
    """Return stored events, newest first, optionally only those with `status`."""
    events = STRIPE_EVENTS.c
    query = select(STRIPE_EVENTS).order_by(
        events.created.desc(), events.received_at.desc(), events.id.desc()
    )
    if status is not None:
        query = query.where(events.status == status)
    return [dict(row) for row in connection.execute(query.limit(limit)).mappings()]


def customers_by_stripe_id(connection: Connection, stripe_ids: Sequence[str]) -> dict[str, str]:
    """Return the app's customer id of each of these Stripe customer ids Tollgate knows."""
    if not stripe_ids:
        return {}
    rows = connection.execute(
        select(CUSTOMERS.c.stripe_customer_id, CUSTOMERS.c.id).where(
            CUSTOMERS.c.stripe_customer_id.in_(sorted(set(stripe_ids)))
        )
    )
    return {stripe_id: customer_id for stripe_id, customer_id in rows}
