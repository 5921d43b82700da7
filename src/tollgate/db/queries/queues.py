"""How much work waits in each outbox and in the webhook inbox (for metrics and doctor)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from tollgate.db.tables import APP_EVENTS, METER_OUTBOX, NOTIFICATIONS, STRIPE_EVENTS

# Each queue: its table and the statuses that mean "still to do". Every one is indexed on
# (status, next_attempt_at), so each count reads an index range.
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
        count = select(func.count()).select_from(table).where(table.c.status.in_(statuses))
        depths[name] = int(connection.execute(count).scalar_one())
    return depths
