"""Keep raw usage events from growing for years: partitions ahead, then pruning past retention.

Usage history reads the hourly roll-up (`usage_hourly`, written with the events), so pruning
raw events changes no answer: they stay only as long as dedupe, voids and audit need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.queries import usage_storage as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.usage_retention import MONTHS_AHEAD, OPEN_AFTER_END, raw_usage_cutoff


@dataclass(frozen=True)
class UsageStorageReport:
    """What a run did: monthly partitions made and dropped, events pruned, and the cutoff."""

    cutoff: datetime
    partitions_made: int
    partitions_dropped: int
    events_pruned: int


def maintain_usage_storage(*, db: Database, clock: Clock, settings: Settings) -> UsageStorageReport:
    """Make the coming months' partitions (PostgreSQL), then prune raw events past the
    retention that nothing still needs: whole months dropped, the rest deleted in slices."""
    now = clock.now()
    made = 0
    with db.write_connection() as connection:
        if queries.partitioned(connection):
            made = queries.make_partitions(
                connection, first=now, last=now + timedelta(days=31 * MONTHS_AHEAD)
            )
        still_needed = queries.oldest_still_needed(connection, open_after=now - OPEN_AFTER_END)
    cutoff = raw_usage_cutoff(
        now=now,
        retention=timedelta(days=settings.usage_raw_retention_days),
        still_needed=still_needed,
    )
    dropped = pruned = 0
    with db.engine.connect() as connection:
        months = queries.month_partitions(connection) if queries.partitioned(connection) else []
        connection.rollback()
    for partition in months:
        if partition.end > cutoff:
            break
        with db.write_connection() as connection:  # one month a transaction
            pruned += queries.drop_partition(connection, partition)
            dropped += 1
    while True:
        with db.write_connection() as connection:  # a slice a transaction: writers get turns
            deleted = queries.delete_events_before(connection, cutoff)
        pruned += deleted
        if deleted < queries.SQLITE_SLICE:
            break
    return UsageStorageReport(cutoff, made, dropped, pruned)
