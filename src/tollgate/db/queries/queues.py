"""How much work waits in each outbox and in the webhook inbox (for metrics and doctor)."""

from __future__ import annotations

from sqlalchemy import Connection, func, or_, select

from tollgate.db.tables import APP_EVENTS, METER_OUTBOX, NOTIFICATIONS, STRIPE_EVENTS

# Each queue: its table and the statuses that mean "still to do". Every one is indexed on
# (status, next_attempt_at), so each count reads an index range. The statuses are asked as
# equalities joined by OR: the inbox's index holds only its unfinished rows, and SQLite uses
# such a partial index for `status = ?` but not for `status IN (?)` (migration 0024).
QUEUES = {
    "emails": (NOTIFICATIONS, ("pending",)),
    "app_webhooks": (APP_EVENTS, ("pending",)),
    "meter_overage": (METER_OUTBOX, ("pending", "claimed")),
    "stripe_events_failed": (STRIPE_EVENTS, ("failed",)),
}


def queue_depths(connection: Connection) -> dict[str, int]:
    """Count what waits in each queue."""
    depths = {}
    for name, (table, statuses) in QUEUES.items():
        matching = or_(*(table.c.status == status for status in statuses))
        count = select(func.count()).select_from(table).where(matching)
        depths[name] = int(connection.execute(count).scalar_one())
    return depths
