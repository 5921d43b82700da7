"""Keep the database's counters and Redis's in step.

`flush_usage` folds the pending rows batches counted in Redis wrote into usage_counters and
queues the overage they add, from the database's own numbers (so a Redis that over-counts after
a crash never bills a unit that was not recorded). `resync_usage` corrects Redis counters a
crash left over-counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import usage as queries
from tollgate.db.queries.usage import CounterId, PendingRow
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Aggregation, Catalog
from tollgate.domain.metering import Period
from tollgate.services.entitlements import BillingCustomer, load_billing_customers
from tollgate.services.usage.counters import GrantMemo, Tally, granted
from tollgate.services.usage.database_counters import lock_tallies, write_tallies
from tollgate.services.usage.redis_counters import (
    CounterKey,
    RedisCounters,
    Stored,
    stored_counters,
)
from tollgate.services.usage.thresholds import record_thresholds
from tollgate.tracing import span

log = logging.getLogger("tollgate.usage")


@dataclass
class FlushReport:
    """What one flush did: pending rows folded into how many counters."""

    rows: int = 0
    counters: int = 0
    overage: int = 0  # meter outbox rows written


def flush_usage(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    grace: timedelta = timedelta(days=7),
    batch: int = 5000,
) -> FlushReport:
    """Fold pending usage into usage_counters and queue the overage it adds, in one transaction.

    Pending rows are written with their events when Redis counts usage; until folded, readers
    add them to the counters. Safe to run at any time, on several replicas at once.
    """
    report = FlushReport()
    now = clock.now()
    with span("usage flush") as current:
        while True:
            folded = _flush_once(db, catalog, now, grace, batch)
            report.rows += folded.rows
            report.counters += folded.counters
            report.overage += folded.overage
            if folded.rows < batch:
                if current is not None:
                    current.set_attribute("tollgate.rows", report.rows)
                return report


def _flush_once(
    db: Database, catalog: Catalog, now: datetime, grace: timedelta, batch: int
) -> FlushReport:
    with db.write_connection() as connection:
        rows = queries.oldest_pending(connection, batch)
        if not rows:
            return FlushReport()
        tallies = _tallies(connection, catalog, rows, now, grace)
        lock_tallies(connection, list(tallies.values()), now)
        for row in rows:
            _fold(tallies[(row.customer_id, row.meter, row.period_start)], row, now)
        _, overage = write_tallies(connection, list(tallies.values()), now)
        record_thresholds(connection, catalog, tallies.values(), now)
        queries.delete_pending(connection, [row.id for row in rows])
    return FlushReport(len(rows), len(tallies), overage)


def _tallies(
    connection: Connection,
    catalog: Catalog,
    rows: list[PendingRow],
    now: datetime,
    grace: timedelta,
) -> dict[CounterId, Tally]:
    """Return a tally of each counter the pending rows fold into, in key order."""
    customers = load_billing_customers(connection, catalog, {row.customer_id for row in rows}, now)
    periods = {(row.customer_id, row.meter, row.period_start): row.period_end for row in rows}
    grants = GrantMemo()
    tallies: dict[CounterId, Tally] = {}
    for (customer_id, meter, start), end in sorted(periods.items()):
        customer = customers.get(customer_id) or _gone_customer(catalog, customer_id)
        if customer.period.start != start:
            # A period that has ended since (or a customer gone): its own period, same plan.
            customer = replace(customer, period=Period(start, end))
        tallies[(customer_id, meter, start)] = Tally(
            customer=customer,
            period=customer.period,
            meter=meter,
            aggregation=catalog.features[meter].aggregation,
            grant=granted(catalog, customer, now, grace, grants)[meter],
            limit=None,
        )
    return tallies


def _fold(tally: Tally, row: PendingRow, now: datetime) -> None:
    """Count a pending row into its counter, as its batch's events would have been."""
    at = row.last_at if row.last_at is not None else now
    tally.counter.add(Aggregation(row.aggregation), row.value, at, row.last_event_id or "")
    tally.held += row.held
    if tally.latest is None or at > tally.latest:
        tally.latest = at


def _gone_customer(catalog: Catalog, customer_id: str) -> BillingCustomer:
    # A deleted customer's usage still folds into its counters; nothing is billed or warned.
    never = Period(datetime.min.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC))
    return BillingCustomer(
        id=customer_id,
        plan=None,
        status="none",
        period=never,
        interval=None,
        currency=catalog.currency,
        seats=None,
        stripe_customer_id=None,
        stripe_account=None,
        offline=True,
        dunning_access=None,
        past_due_since=None,
    )


@dataclass
class ResyncReport:
    """What one resync did: counters looked at, found right, corrected."""

    checked: int = 0
    matching: int = 0
    corrected: int = 0


def resync_usage(*, db: Database, counters: RedisCounters) -> ResyncReport:
    """Set Redis counters that differ from the database, and that nobody touched, to its value.

    A counter is corrected only when two runs in a row see the same difference with no batch in
    between, so a batch still in its transaction is never taken for a leftover of a crash.
    """
    report = ResyncReport()
    keys = list(counters.scan())
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        parsed = {key: counters.parse_key(key) for key in chunk}
        seen = counters.snapshot(chunk)
        wanted = [
            CounterKey(found[0], found[1], found[2], found[2])
            for found in parsed.values()
            if found is not None
        ]
        with db.engine.connect() as connection:
            stored = stored_counters(connection, wanted)
            connection.rollback()
        by_key = {
            (key.customer, key.meter, key.period_start): value for key, value in stored.items()
        }
        for key, snapshot in zip(chunk, seen, strict=True):
            found = parsed[key]
            if found is None or snapshot is None:
                continue
            report.checked += 1
            value = by_key.get(found, Stored(0)).value
            outcome = counters.resync_one(key, snapshot[0], snapshot[1], value)
            if outcome == 2:
                report.matching += 1
            elif outcome == 1:
                report.corrected += 1
                log.warning("usage counter %s corrected from %d to %d", key, snapshot[1], value)
    return report
