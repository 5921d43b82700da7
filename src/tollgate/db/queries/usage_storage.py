"""Raw usage events for years: monthly partitions on PostgreSQL, pruning past the retention.

On PostgreSQL `usage_events` is partitioned by month of `occurred_at` (declarative range
partitioning, migration 0020): partitions `usage_events_pYYYYMM`, made ahead by the storage job,
and `usage_events_default` for anything outside them (empty while the job runs). Pruning a
month is dropping its table, not deleting rows. PostgreSQL cannot make `id` unique across
partitions (a unique index must hold the partition key), so `usage_event_ids` (id, occurred_at)
holds each id once; recording claims ids there, and finding an event by id goes through it to
the right partition. SQLite keeps one table and deletes in slices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, select

from tollgate.db.queries.usage import _sqlite_time
from tollgate.db.tables import (
    METER_OUTBOX,
    USAGE_COUNTERS,
    USAGE_EVENT_IDS,
    USAGE_EVENTS,
    USAGE_PENDING,
)

# PostgreSQL's storage of usage events that has no model: the id index and the partitions.
EVENT_IDS = "usage_event_ids"
DEFAULT_PARTITION = "usage_events_default"
_PARTITION = re.compile(r"^usage_events_p(\d{4})(\d{2})$")
# SQLite deletes this many events a transaction, so writers get their turns between slices.
SQLITE_SLICE = 20_000


class Partition(NamedTuple):
    """A month of usage events on PostgreSQL: its table and [start, end)."""

    name: str
    start: datetime
    end: datetime


def is_postgres_storage(name: str) -> bool:
    """Return whether a table is part of PostgreSQL's partitioned usage events (no model)."""
    return name in (EVENT_IDS, DEFAULT_PARTITION) or _PARTITION.match(name) is not None


def partitioned(connection: Connection) -> bool:
    """Return whether usage events are partitioned here (PostgreSQL)."""
    return connection.dialect.name == "postgresql"


def partition_of(month: datetime) -> Partition:
    """Return the partition that holds the month `month` starts."""
    start = month.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Partition(f"usage_events_p{start.year:04d}{start.month:02d}", start, end)


def month_partitions(connection: Connection) -> list[Partition]:
    """Return the monthly partitions of usage events, oldest first."""
    rows = connection.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'usage_events'::regclass"
    )
    found = []
    for (name,) in rows:
        matched = _PARTITION.match(name)
        if matched:
            found.append(partition_of(datetime(int(matched[1]), int(matched[2]), 1, tzinfo=UTC)))
    return sorted(found, key=lambda partition: partition.start)


def create_partition(connection: Connection, partition: Partition) -> None:
    """Make a month's partition, moving in any of its events the default partition holds.

    The table is made apart and attached, so events that arrived while no partition covered
    their month (in `usage_events_default`) move into it in the same transaction.
    """
    name, start, end = partition
    bounds = {"start": start, "end": end}
    connection.exec_driver_sql(
        f'CREATE TABLE "{name}" (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
    )
    connection.exec_driver_sql(
        f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE occurred_at >= %(start)s'  # noqa: S608 (a partition name)
        f' AND occurred_at < %(end)s RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
        bounds,
    )
    # The bounds are literals in DDL (no parameters there); both are times this code made.
    connection.exec_driver_sql(
        f'ALTER TABLE usage_events ATTACH PARTITION "{name}" FOR VALUES'
        f" FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def make_partitions(connection: Connection, *, first: datetime, last: datetime) -> int:
    """Make the monthly partitions from `first`'s month through `last`'s that are missing;
    return how many were made."""
    have = {partition.name for partition in month_partitions(connection)}
    month, made = partition_of(first), 0
    while month.start <= last:
        if month.name not in have:
            create_partition(connection, month)
            made += 1
        month = partition_of(month.end)
    return made


def drop_partition(connection: Connection, partition: Partition) -> int:
    """Drop a month of events and their ids; return how many events it held."""
    name = partition.name
    count = connection.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one()  # noqa: S608
    connection.exec_driver_sql(
        f"DELETE FROM {EVENT_IDS} WHERE occurred_at >= %(start)s AND occurred_at < %(end)s",  # noqa: S608
        {"start": partition.start, "end": partition.end},
    )
    connection.exec_driver_sql(f'DROP TABLE "{name}"')
    return int(count)


def delete_events_before(connection: Connection, cutoff: datetime) -> int:
    """Delete a slice of events older than `cutoff` outside the monthly partitions (all of them
    on SQLite, the default partition's on PostgreSQL); return how many (less than a slice:
    none left)."""
    if partitioned(connection):
        deleted = connection.exec_driver_sql(
            f"WITH gone AS (DELETE FROM {DEFAULT_PARTITION} WHERE occurred_at < %(cutoff)s"  # noqa: S608
            f" RETURNING id) DELETE FROM {EVENT_IDS} WHERE id IN (SELECT id FROM gone)",
            {"cutoff": cutoff},
        )
        return int(deleted.rowcount or 0)
    # The slice is found through ix_usage_events_occurred_at, oldest first.
    deleted = connection.exec_driver_sql(
        "DELETE FROM usage_events WHERE rowid IN (SELECT rowid FROM usage_events"
        " WHERE occurred_at < ? ORDER BY occurred_at LIMIT ?)",
        (_sqlite_time(cutoff), SQLITE_SLICE),
    )
    return int(deleted.rowcount or 0)


def oldest_still_needed(connection: Connection, *, open_after: datetime) -> datetime | None:
    """Return the start of the oldest period raw events may still be needed for: a counter's
    period that ends after `open_after` (voids and late events may still come), overage not yet
    reported to Stripe, usage counted in Redis not yet folded; None if nothing holds any."""
    counters = USAGE_COUNTERS.c
    outbox = METER_OUTBOX.c
    starts = [
        connection.execute(
            select(func.min(counters.period_start)).where(counters.period_end > open_after)
        ).scalar(),
        connection.execute(
            select(func.min(outbox.period_start)).where(outbox.status.in_(("pending", "claimed")))
        ).scalar(),
        connection.execute(select(func.min(USAGE_PENDING.c.period_start))).scalar(),
    ]
    found = [start for start in starts if start is not None]
    return min(found) if found else None


def events_of_ids(connection: Connection, event_ids: Sequence[str]) -> Any:
    """Return a condition that finds events by id quickly: on PostgreSQL by their times from
    `usage_event_ids`, so only the partitions that hold them are searched."""
    by_id = USAGE_EVENTS.c.id.in_(list(event_ids))
    if not partitioned(connection):
        return by_id
    times = select(USAGE_EVENT_IDS.c.occurred_at).where(USAGE_EVENT_IDS.c.id.in_(list(event_ids)))
    return by_id & USAGE_EVENTS.c.occurred_at.in_(times)
