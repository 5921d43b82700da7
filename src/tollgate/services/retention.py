"""Keep the webhook inbox from growing for years: drop old payloads, then old ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.queries.retention import delete_inbox_rows, drop_inbox_payloads
from tollgate.db.unit_of_work import Database


@dataclass(frozen=True)
class InboxPruning:
    payloads_dropped: int
    rows_deleted: int


def prune_webhook_inbox(*, db: Database, clock: Clock, settings: Settings) -> InboxPruning:
    """Drop the payloads of applied events past the payload retention, and delete the rows past
    the id retention (never within Stripe's 3-day retry window: the setting is at least 4)."""
    now = clock.now()
    with db.write_connection() as connection:
        dropped = drop_inbox_payloads(
            connection,
            received_before=now - timedelta(days=settings.webhook_payload_retention_days),
        )
        deleted = delete_inbox_rows(
            connection, received_before=now - timedelta(days=settings.webhook_id_retention_days)
        )
    return InboxPruning(payloads_dropped=dropped, rows_deleted=deleted)
