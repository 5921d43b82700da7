"""Pruning what grows without bound: the webhook inbox's payloads, then its rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, delete, update

from tollgate.db.tables import STRIPE_EVENTS

# Only events whose processing is over; a failed or pending one keeps its payload for retries.
FINISHED = ("succeeded", "ignored")
PRUNED = ""  # the payload of an event whose body was dropped


def drop_inbox_payloads(connection: Connection, *, received_before: datetime) -> int:
    """Empty the payloads of finished events received before the time; return how many."""
    events = STRIPE_EVENTS.c
    dropped = connection.execute(
        update(STRIPE_EVENTS)
        .where(
            and_(
                events.received_at < received_before,
                events.status.in_(FINISHED),
                events.payload != PRUNED,
            )
        )
        .values(payload=PRUNED)
    )
    return int(dropped.rowcount or 0)


def delete_inbox_rows(connection: Connection, *, received_before: datetime) -> int:
    """Delete finished events received before the time (their ids no longer dedupe)."""
    events = STRIPE_EVENTS.c
    deleted = connection.execute(
        delete(STRIPE_EVENTS).where(
            and_(events.received_at < received_before, events.status.in_(FINISHED))
        )
    )
    return int(deleted.rowcount or 0)
