"""Record usage exactly once, enforce hard limits atomically, and queue overage for Stripe.

One batch is one transaction. Without Redis, the counters it touches are locked first
(PostgreSQL `FOR UPDATE`, in key order; on SQLite the write transaction holds the database),
then the event ids are checked against those already recorded, then each event is decided in
order against the counter as the batch has moved it. So the check and the increment are one
step: concurrent batches for one customer take turns, and a hard limit is never overshot.
Threshold crossings, their notifications and the overage outbox are written in the same
transaction.

With Redis (`TOLLGATE_REDIS_URL`), the check and the increment are one Lua script there (see
`usage_redis`), and the transaction writes the events, one pending row per counter, the credit
burns and the threshold crossings; `flush_usage` folds pending rows into the counters and queues
the overage they add, from the database's own numbers (so a Redis that over-counts after a
crash never bills a unit that was not recorded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any

import orjson
from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from tollgate.clock import Clock
from tollgate.db.queries.changes import feed_rows
from tollgate.db.tables import (
    CUSTOMER_CHANGES,
    METER_OUTBOX,
    USAGE_COUNTERS,
    USAGE_PENDING,
    USAGE_THRESHOLDS,
)
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Aggregation, Catalog, FeatureType, PlanFeature
from tollgate.domain.catalog_sync import meter_event_name
from tollgate.domain.entitlements import access_of, access_plan, entitlements
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.domain.metering import (
    MAX_BATCH,
    Counter,
    Period,
    crossed_thresholds,
    over_hard_limit,
    overage_minor,
    overage_units,
    percent_used,
    usage_timestamp_problem,
)
from tollgate.money import Money
from tollgate.services.credit_ledger import burn_for_usage
from tollgate.services.entitlements import (
    BillingCustomer,
    credit_prices,
    customer_state,
    load_billing_customers,
    period_usage,
)
from tollgate.services.usage_redis import CounterKey, Moved, RedisCounters, Stored

log = logging.getLogger("tollgate.usage")


MAX_ID_LENGTH = 255
_RETRIES = 3


@dataclass(frozen=True)
class Rejection:
    """Why one event of a batch was not counted."""

    index: int
    id: str | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "error": {"code": self.code, "message": self.message},
        }


@dataclass
class UsageReport:
    """What a batch did: counted, already counted before, and rejected with reasons."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)  # whose usage changed
    thresholds: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [rejection.to_json() for rejection in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class _Event:
    index: int
    id: str
    customer: str
    meter: str
    value: int
    occurred_at: datetime


# -- checking the input ----------------------------------------------------------------------


def parse_events(raw: Any, catalog: Catalog, now: datetime) -> tuple[list[_Event], list[Rejection]]:
    """Return the well-formed events of a batch and a rejection for each malformed one."""
    if not isinstance(raw, list):
        raise InvalidRequest("events must be a list of usage events", param="events")
    if not raw:
        raise InvalidRequest("events is empty; send 1 to 1,000 usage events", param="events")
    if len(raw) > MAX_BATCH:
        raise InvalidRequest(
            f"{len(raw):,} events in one call; send at most {MAX_BATCH:,}", param="events"
        )
    metered = {
        feature_id
        for feature_id, feature in catalog.features.items()
        if feature.type is FeatureType.METERED
    }
    events: list[_Event] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(raw):
        problem = _event_problem(item, metered)
        if problem is not None:
            event_id = item.get("id") if isinstance(item, dict) else None
            rejected.append(
                Rejection(index, event_id if isinstance(event_id, str) else None, *problem)
            )
            continue
        occurred_at = _timestamp(item.get("timestamp"), now)
        if occurred_at is None:
            rejected.append(
                Rejection(
                    index,
                    item["id"],
                    "invalid_timestamp",
                    "timestamp must be an ISO 8601 time or Unix seconds",
                )
            )
            continue
        value = item["value"]
        events.append(
            _Event(index, item["id"], item["customer"], item["meter"], int(value), occurred_at)
        )
    return events, rejected


def _event_problem(item: Any, metered: set[str]) -> tuple[str, str] | None:
    if not isinstance(item, dict):
        return "invalid_event", "each event must be an object {id, customer, meter, value}"
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LENGTH:
        return "invalid_id", f"id must be a string of 1 to {MAX_ID_LENGTH} characters"
    if not isinstance(item.get("customer"), str) or not item["customer"]:
        return "invalid_customer", "customer must be the customer's id"
    meter = item.get("meter")
    if not isinstance(meter, str) or meter not in metered:
        return "unknown_meter", (
            f"unknown meter {meter!r}; metered features are: {', '.join(sorted(metered))}"
        )
    value = item.get("value")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return "invalid_value", "value must be a whole number (Stripe meters count whole units)"
    if value < 0:
        return "invalid_value", "value must not be negative"
    if value >= 2**53:
        return "invalid_value", "value is too large"
    unknown = set(item) - {"id", "customer", "meter", "value", "timestamp"}
    if unknown:
        return "invalid_event", f"unknown field(s): {', '.join(sorted(unknown))}"
    return None


def _timestamp(raw: Any, now: datetime) -> datetime | None:
    if raw is None:
        return now
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        try:
            return datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


# -- recording -------------------------------------------------------------------------------


def record_usage(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    events: Any,
    enforce_limits: bool = True,
    grace: timedelta = timedelta(days=7),
    counters: RedisCounters | None = None,
) -> UsageReport:
    """Count each new event once; reject the malformed, the unknown and those over a limit.

    With `counters` (Redis), the limit check and the increment happen there and the database
    counters follow through `flush_usage`; without, both happen in the database.
    """
    now = clock.now()
    parsed, rejected = parse_events(events, catalog, now)
    record = _record if counters is None else partial(_record_in_redis, counters=counters)
    for attempt in range(_RETRIES):
        try:
            report = record(db, catalog, parsed, now, enforce_limits=enforce_limits, grace=grace)
        except IntegrityError:
            # Another batch recorded one of these ids for another counter between our look
            # and our insert; the whole batch is decided again against what it committed.
            if attempt == _RETRIES - 1:
                raise
            continue
        report.rejected = sorted(rejected + report.rejected, key=lambda r: r.index)
        return report
    raise AssertionError("unreachable")


@dataclass
class _Tally:
    """One counter as the batch moves it."""

    customer: BillingCustomer
    meter: str
    period: Period
    grant: PlanFeature
    counter: Counter
    before: int
    reported: int
    latest: datetime | None = None
    rejections: int = 0


# (customer id, meter, period start): one counter
_Key = tuple[str, str, datetime]


def _screen(
    connection: Connection,
    catalog: Catalog,
    events: list[_Event],
    now: datetime,
    report: UsageReport,
) -> tuple[dict[str, BillingCustomer], list[_Event]]:
    """Return the batch's customers and its events that may count (unknown or late ones out)."""
    customers = load_billing_customers(
        connection, catalog, {event.customer for event in events}, now
    )
    wanted: list[_Event] = []
    seen: set[str] = set()
    for event in events:
        if event.id in seen:
            report.duplicates += 1
            continue
        seen.add(event.id)
        customer = customers.get(event.customer)
        if customer is None:
            report.rejected.append(
                Rejection(
                    event.index, event.id, "unknown_customer", f"no customer {event.customer!r}"
                )
            )
            continue
        problem = usage_timestamp_problem(event.occurred_at, customer.period, now)
        if problem is not None:
            report.rejected.append(Rejection(event.index, event.id, "invalid_timestamp", problem))
            continue
        wanted.append(event)
    return customers, wanted


def _record(
    db: Database,
    catalog: Catalog,
    events: list[_Event],
    now: datetime,
    *,
    enforce_limits: bool,
    grace: timedelta,
) -> UsageReport:
    report = UsageReport()
    with db.write_connection() as connection:
        customers, wanted = _screen(connection, catalog, events, now, report)
        if not wanted:
            return report
        keys = {(event.customer, event.meter): None for event in wanted}
        tallies = _lock_counters(
            connection,
            catalog,
            {
                (customer_id, meter, customers[customer_id].period.start): customers[customer_id]
                for customer_id, meter in sorted(keys)
            },
            now,
            grace,
        )
        known = _recorded_ids(connection, [event.id for event in wanted])
        accepted_rows: list[tuple[Any, ...]] = []
        credit_cost = credit_prices(catalog)
        aggregations = {meter: catalog.features[meter].aggregation for _, meter in keys}
        reasons: dict[tuple[_Key, int, int], str] = {}
        for event in wanted:
            if event.id in known:
                report.duplicates += 1
                continue
            key = (event.customer, event.meter, customers[event.customer].period.start)
            tally = tallies[key]
            aggregation = aggregations[event.meter]
            if enforce_limits and over_hard_limit(
                tally.grant, tally.counter, aggregation, event.value
            ):
                tally.rejections += 1
                report.rejected.append(
                    _limit_rejection(catalog, tally, key, event, now, grace, reasons)
                )
                continue
            per_unit = credit_cost.get(event.meter)
            if per_unit and not _burn(connection, event, per_unit, now):
                report.rejected.append(_credit_rejection(catalog, event, per_unit))
                continue
            tally.counter.add(aggregation, event.value, event.occurred_at, event.id)
            if tally.latest is None or event.occurred_at > tally.latest:
                tally.latest = event.occurred_at
            accepted_rows.append(
                (event.id, event.customer, event.meter, event.value, event.occurred_at)
            )
        if accepted_rows:
            _insert_events(connection, accepted_rows, now)
        report.accepted = len(accepted_rows)
        _write_counters(connection, catalog, tallies, now, report)
    return report


def _limit_rejection(
    catalog: Catalog,
    tally: _Tally,
    key: _Key,
    event: _Event,
    now: datetime,
    grace: timedelta,
    reasons: dict[tuple[_Key, int, int], str],
) -> Rejection:
    # The reason is a whole entitlement decision: worked out once per counter, value and used.
    memo = (key, event.value, tally.counter.value)
    reason = reasons.get(memo)
    if reason is None:
        reason = reasons[memo] = _limit_reason(catalog, tally, event.value, now, grace)
    return Rejection(event.index, event.id, "limit_exceeded", reason)


def _credit_rejection(catalog: Catalog, event: _Event, per_unit: int) -> Rejection:
    return Rejection(
        event.index,
        event.id,
        "insufficient_credits",
        f"{catalog.features[event.meter].name} costs {per_unit:,} credits a unit "
        "and the customer's credits (with any overdraft allowance) are used up",
    )


# -- recording with Redis counters -----------------------------------------------------------


def _record_in_redis(
    db: Database,
    catalog: Catalog,
    events: list[_Event],
    now: datetime,
    *,
    enforce_limits: bool,
    grace: timedelta,
    counters: RedisCounters,
) -> UsageReport:
    report = UsageReport()
    held: list[tuple[Moved, int]] = []  # what Redis counted that this transaction must commit
    marks: dict[CounterKey, int] = {}
    try:
        with db.write_connection() as connection:
            customers, wanted = _screen(connection, catalog, events, now, report)
            if not wanted:
                return report
            known = _recorded_ids(connection, [event.id for event in wanted])
            fresh: list[_Event] = []
            for event in wanted:
                if event.id in known:
                    report.duplicates += 1
                else:
                    fresh.append(event)
            if not fresh:
                return report
            _count_in_redis(
                connection,
                catalog,
                customers,
                fresh,
                now,
                grace,
                enforce_limits,
                counters,
                report,
                held,
                marks,
            )
    except BaseException:
        if held:
            counters.give_back(held)
        raise
    if marks:
        counters.mark_warned(marks)
    return report


def _count_in_redis(
    connection: Connection,
    catalog: Catalog,
    customers: Mapping[str, BillingCustomer],
    fresh: list[_Event],
    now: datetime,
    grace: timedelta,
    enforce_limits: bool,
    counters: RedisCounters,
    report: UsageReport,
    held: list[tuple[Moved, int]],
    marks: dict[CounterKey, int],
) -> None:
    """Check and count `fresh` in Redis, then write what counted; `held` is what to give back."""
    positions: dict[tuple[str, str], int] = {}
    specs: list[tuple[CounterKey, Aggregation, int | None]] = []
    grants: _GrantMemo = {}
    tallies: list[_Tally] = []
    for customer_id, meter in sorted({(event.customer, event.meter) for event in fresh}):
        customer = customers[customer_id]
        grant = _grants(catalog, customer, now, grace, grants)[meter]
        period = customer.period
        positions[(customer_id, meter)] = len(specs)
        specs.append(
            (
                CounterKey(customer_id, meter, period.start, period.end),
                catalog.features[meter].aggregation,
                grant.limit if enforce_limits and grant.hard else None,
            )
        )
        tallies.append(_Tally(customer, meter, period, grant, Counter(0), 0, 0))
    indexed = [positions[(event.customer, event.meter)] for event in fresh]
    counted = counters.count(
        specs,
        [
            (index, event.value, event.occurred_at, event.id)
            for index, event in zip(indexed, fresh, strict=True)
        ],
        partial(_stored_counters, connection),
        now,
    )
    moves = [counted.moved[spec[0]] for spec in specs]
    # What Redis now holds for each counter on this transaction's behalf.
    amounts = [0] * len(specs)
    counts = [0] * len(specs)
    for index, event, accepted in zip(indexed, fresh, counted.accepted, strict=True):
        if accepted:
            amounts[index] += event.value
            counts[index] += 1
    held[:] = [(moves[i], amounts[i]) for i in range(len(specs)) if counts[i]]
    for tally, move in zip(tallies, moves, strict=True):
        tally.before, tally.counter.value = move.before, move.after

    credit_cost = credit_prices(catalog)
    refused: dict[int, int] = {}
    batches: dict[int, list[_Event]] = {}
    accepted_rows: list[tuple[Any, ...]] = []
    reasons: dict[tuple[_Key, int, int], str] = {}
    for index, event, accepted in zip(indexed, fresh, counted.accepted, strict=True):
        if not accepted:
            tally = tallies[index]
            key = (event.customer, event.meter, tally.period.start)
            report.rejected.append(
                _limit_rejection(catalog, tally, key, event, now, grace, reasons)
            )
            continue
        per_unit = credit_cost.get(event.meter)
        if per_unit and not _burn(connection, event, per_unit, now):
            report.rejected.append(_credit_rejection(catalog, event, per_unit))
            refused[index] = refused.get(index, 0) + event.value
            counts[index] -= 1
            continue
        batches.setdefault(index, []).append(event)
        accepted_rows.append(
            (event.id, event.customer, event.meter, event.value, event.occurred_at)
        )
    if refused:
        # Counted in Redis but refused for credits: given back now, not when the batch ends.
        counters.give_back([(moves[index], amount) for index, amount in refused.items()])
        for index, amount in refused.items():
            amounts[index] -= amount
        held[:] = [(moves[i], amounts[i]) for i in range(len(specs)) if counts[i]]
    report.accepted = len(accepted_rows)
    if not accepted_rows:
        return
    _insert_events(connection, accepted_rows, now)
    pending_rows = []
    crossed: list[tuple[_Tally, int]] = []
    for index, batch in batches.items():
        counter, aggregation, _ = specs[index]
        report.customers.add(counter.customer)
        pending_rows.append(_pending_row(counter, aggregation, batch, now))
        tally, move = tallies[index], moves[index]
        grant = tally.grant
        if not grant.included or not grant.warn_at:
            continue
        # Every warning level reached and not known to be recorded: a batch that crossed it
        # and then failed must not leave it unrecorded (the insert ignores a repeat).
        due = [
            percent
            for percent in grant.warn_at
            if percent > move.warned and percent * grant.included <= move.after * 100
        ]
        if due:
            crossed.extend((tally, percent) for percent in due)
            marks[move.key] = max(due)
    _insert_pending(connection, pending_rows)
    if crossed:
        _record_thresholds(connection, catalog, crossed, now, report)


def _pending_row(
    counter: CounterKey, aggregation: Aggregation, events: list[_Event], now: datetime
) -> tuple[Any, ...]:
    """Return the usage_pending row of one counter's events in a batch."""
    latest = max(events, key=lambda event: (event.occurred_at, event.id))
    if aggregation is Aggregation.SUM:
        value = sum(event.value for event in events)
    elif aggregation is Aggregation.MAX:
        value = max(event.value for event in events)
    else:
        value = latest.value
    return (
        counter.customer,
        counter.meter,
        counter.period_start,
        counter.period_end,
        aggregation.value,
        value,
        latest.occurred_at,
        latest.id,
        now,
    )


def _stored_counters(
    connection: Connection, keys: Sequence[CounterKey]
) -> dict[CounterKey, Stored]:
    """Return the database's value of counters: the folded counter plus pending rows."""
    wanted = {(key.customer, key.meter, key.period_start): key for key in keys}
    found: dict[CounterKey, Counter] = {}
    customers = sorted({key.customer for key in keys})
    rows = connection.execute(
        select(
            USAGE_COUNTERS.c.customer_id,
            USAGE_COUNTERS.c.meter,
            USAGE_COUNTERS.c.period_start,
            USAGE_COUNTERS.c.value,
            USAGE_COUNTERS.c.last_at,
            USAGE_COUNTERS.c.last_event_id,
        ).where(USAGE_COUNTERS.c.customer_id.in_(customers))
    )
    for row in rows:
        key = wanted.get((row.customer_id, row.meter, row.period_start))
        if key is not None:
            found[key] = Counter(int(row.value), row.last_at, row.last_event_id)
    rows = connection.execute(
        select(
            USAGE_PENDING.c.customer_id,
            USAGE_PENDING.c.meter,
            USAGE_PENDING.c.period_start,
            USAGE_PENDING.c.aggregation,
            USAGE_PENDING.c.value,
            USAGE_PENDING.c.last_at,
            USAGE_PENDING.c.last_event_id,
        )
        .where(USAGE_PENDING.c.customer_id.in_(customers))
        .order_by(USAGE_PENDING.c.id)
    )
    for row in rows:
        key = wanted.get((row.customer_id, row.meter, row.period_start))
        if key is not None:
            counter = found.setdefault(key, Counter(0))
            counter.add(
                Aggregation(row.aggregation), int(row.value), row.last_at, row.last_event_id
            )
    return {
        key: Stored(counter.value, counter.last_at, counter.last_id)
        for key, counter in found.items()
    }


# -- folding Redis-counted usage into the database counters ------------------------------------


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
    while True:
        folded = _flush_once(db, catalog, now, grace, batch)
        report.rows += folded.rows
        report.counters += folded.counters
        report.overage += folded.overage
        if folded.rows < batch:
            return report


def _flush_once(
    db: Database, catalog: Catalog, now: datetime, grace: timedelta, batch: int
) -> FlushReport:
    report = FlushReport()
    with db.write_connection() as connection:
        postgres = connection.dialect.name == "postgresql"
        rows = connection.exec_driver_sql(
            _PENDING_SQL[postgres], {"limit": batch} if postgres else (batch,)
        ).all()
        if not rows:
            return report
        customers = load_billing_customers(connection, catalog, {row[1] for row in rows}, now)
        wanted: dict[_Key, BillingCustomer] = {}
        for _, customer_id, meter, start, end, *_ in rows:
            start, end = _from_db(start), _from_db(end)
            customer = customers.get(customer_id) or _gone_customer(catalog, customer_id)
            if customer.period.start != start:
                # A period that has ended since (or a customer gone): its own period, same plan.
                customer = replace(customer, period=Period(start, end))
            wanted[(customer_id, meter, start)] = customer
        tallies = _lock_counters(connection, catalog, dict(sorted(wanted.items())), now, grace)
        for _, customer_id, meter, start, _, aggregation, value, last_at, last_id in rows:
            tally = tallies[(customer_id, meter, _from_db(start))]
            moment = _from_db(last_at) if last_at is not None else now
            tally.counter.add(Aggregation(aggregation), int(value), moment, last_id or "")
            if tally.latest is None or moment > tally.latest:
                tally.latest = moment
        ignored = UsageReport()
        outbox = _write_counters(connection, catalog, tallies, now, ignored)
        ids = [int(row[0]) for row in rows]
        if postgres:
            connection.exec_driver_sql(
                "DELETE FROM usage_pending WHERE id = ANY(%(ids)s)", {"ids": ids}
            )
        else:  # one writer at a time: the rows read are every row up to the last id
            connection.exec_driver_sql("DELETE FROM usage_pending WHERE id <= ?", (ids[-1],))
        report.rows, report.counters, report.overage = len(rows), len(tallies), outbox
    return report


_PENDING_COLUMNS = (
    "id, customer_id, meter, period_start, period_end, aggregation, value, last_at, last_event_id"
)
_PENDING_SQL = {
    True: f"SELECT {_PENDING_COLUMNS} FROM usage_pending ORDER BY id LIMIT %(limit)s"  # noqa: S608
    " FOR UPDATE SKIP LOCKED",
    False: f"SELECT {_PENDING_COLUMNS} FROM usage_pending ORDER BY id LIMIT ?",  # noqa: S608
}


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
            stored = _stored_counters(connection, wanted)
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


# -- the database counters --------------------------------------------------------------------


def _lock_counters(
    connection: Connection,
    catalog: Catalog,
    wanted: Mapping[_Key, BillingCustomer],
    now: datetime,
    grace: timedelta,
) -> dict[_Key, _Tally]:
    """Return the counters `wanted` (in key order), locked, creating missing ones."""
    postgres = connection.dialect.name == "postgresql"
    keys = list(wanted)
    ends = [customer.period.end for customer in wanted.values()]
    found: dict[_Key, tuple[int, Any, Any, int]] = {}
    if postgres:
        rows = _json([(*key, end) for key, end in zip(keys, ends, strict=True)])
        connection.exec_driver_sql(_PG_INSERT_COUNTERS, {"rows": rows, "now": now})
        for row in connection.exec_driver_sql(_PG_LOCK_COUNTERS, {"rows": rows}):
            found[(row[0], row[1], row[2].astimezone(UTC))] = (row[3], row[4], row[5], row[6])
    else:
        stamp = _sqlite_time(now)
        starts = [_sqlite_time(key[2]) for key in keys]
        connection.exec_driver_sql(
            "INSERT INTO usage_counters (customer_id, meter, period_start, period_end, value,"
            " reported, updated_at) VALUES (?, ?, ?, ?, 0, 0, ?) ON CONFLICT DO NOTHING",
            [
                (key[0], key[1], start, _sqlite_time(end), stamp)
                for key, start, end in zip(keys, starts, ends, strict=True)
            ],
        )
        by_text = {(key[0], key[1], start): key for key, start in zip(keys, starts, strict=True)}
        for first in range(0, len(keys), 300):
            chunk = [
                part
                for key, start in zip(
                    keys[first : first + 300], starts[first : first + 300], strict=True
                )
                for part in (key[0], key[1], start)
            ]
            marks = ",".join(["(?, ?, ?)"] * (len(chunk) // 3))
            selected = connection.exec_driver_sql(
                _SQLITE_LOCK_COUNTERS + f" IN (VALUES {marks})",  # placeholders only
                tuple(chunk),
            )
            for row in selected:
                found[by_text[(row[0], row[1], row[2])]] = (row[3], row[4], row[5], row[6])
    tallies: dict[_Key, _Tally] = {}
    grants: _GrantMemo = {}
    for key, customer in wanted.items():
        value, last_at, last_id, reported = found[key]
        tallies[key] = _Tally(
            customer=customer,
            meter=key[1],
            period=customer.period,
            grant=_grants(catalog, customer, now, grace, grants)[key[1]],
            counter=Counter(int(value), _from_db(last_at), last_id),
            before=int(value),
            reported=int(reported),
        )
    return tallies


_SQLITE_LOCK_COUNTERS = (
    "SELECT customer_id, meter, period_start, value, last_at, last_event_id, reported"
    " FROM usage_counters WHERE (customer_id, meter, period_start)"
)
# PostgreSQL statements take a batch's rows as one JSON array of arrays: orjson writes it in
# C, where psycopg would adapt each element of several arrays in Python.
_PG_INSERT_COUNTERS = (
    "INSERT INTO usage_counters (customer_id, meter, period_start, period_end, value, reported,"
    " updated_at) SELECT r->>0, r->>1, (r->>2)::timestamptz, (r->>3)::timestamptz, 0, 0,"
    " %(now)s FROM jsonb_array_elements(%(rows)s::jsonb) AS r ON CONFLICT DO NOTHING"
)
_PG_LOCK_COUNTERS = (
    "SELECT customer_id, meter, period_start, value, last_at, last_event_id, reported"
    " FROM usage_counters WHERE (customer_id, meter, period_start) IN (SELECT r->>0, r->>1,"
    " (r->>2)::timestamptz FROM jsonb_array_elements(%(rows)s::jsonb) AS r)"
    " ORDER BY customer_id, meter, period_start FOR UPDATE"
)
_PG_UPDATE_COUNTERS = (
    "UPDATE usage_counters AS c SET value = (r->>3)::bigint, last_at = (r->>4)::timestamptz,"
    " last_event_id = r->>5, reported = (r->>6)::bigint, updated_at = %(now)s"
    " FROM jsonb_array_elements(%(rows)s::jsonb) AS r"
    " WHERE c.customer_id = r->>0 AND c.meter = r->>1 AND c.period_start = (r->>2)::timestamptz"
)


def _json(rows: Any) -> str:
    return orjson.dumps(rows).decode()


def _insert_missing(connection: Connection, table: Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


# Grants by what decides them (plan, status, dunning access, past due since), for one batch.
_GrantMemo = dict[tuple[Any, ...], dict[str, PlanFeature]]


def _grants(
    catalog: Catalog,
    customer: BillingCustomer,
    now: datetime,
    grace: timedelta,
    memo: _GrantMemo | None = None,
) -> dict[str, PlanFeature]:
    """Return what the customer's access plan grants of each feature now."""
    if memo is not None:
        key = (customer.plan, customer.status, customer.dunning_access, customer.past_due_since)
        found = memo.get(key)
        if found is None:
            found = memo[key] = _grants(catalog, customer, now, grace)
        return found
    state = customer_state(customer, {})
    access, _ = access_of(state, grace, now)
    plan = access_plan(catalog, state, access)
    return {
        feature_id: (plan.features.get(feature_id) if plan else None) or PlanFeature.off(feature)
        for feature_id, feature in catalog.features.items()
    }


def _recorded_ids(connection: Connection, ids: list[str]) -> set[str]:
    """Return which of `ids` were recorded before."""
    if connection.dialect.name == "postgresql":
        rows = connection.exec_driver_sql(
            "SELECT id FROM usage_events WHERE id = ANY(ARRAY(SELECT"
            " jsonb_array_elements_text(%(ids)s::jsonb)))",
            {"ids": _json(ids)},
        )
        return {row[0] for row in rows}
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = connection.exec_driver_sql(
            f"SELECT id FROM usage_events WHERE id IN ({marks})",  # noqa: S608 (placeholders only)
            tuple(chunk),
        )
        found.update(row[0] for row in rows)
    return found


def _insert_events(connection: Connection, rows: list[tuple[Any, ...]], now: datetime) -> None:
    """Insert accepted events: (id, customer, meter, value, occurred_at) each."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_INSERT_EVENTS, {"rows": _json(rows), "now": now})
        return
    recorded = _sqlite_time(now)
    times = {now: recorded}  # events without a timestamp share the batch's time
    for row in rows:
        if row[4] not in times:
            times[row[4]] = _sqlite_time(row[4])
    connection.exec_driver_sql(
        "INSERT INTO usage_events (id, customer_id, meter, value, occurred_at, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(row[0], row[1], row[2], row[3], times[row[4]], recorded) for row in rows],
    )


_PG_INSERT_EVENTS = (
    "INSERT INTO usage_events (id, customer_id, meter, value, occurred_at, recorded_at)"
    " SELECT r->>0, r->>1, r->>2, (r->>3)::bigint, (r->>4)::timestamptz, %(now)s"
    " FROM jsonb_array_elements(%(rows)s::jsonb) AS r"
)


def _insert_pending(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert usage_pending rows (customer, meter, start, end, aggregation, value, last at, id,
    recorded at)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "INSERT INTO usage_pending (customer_id, meter, period_start, period_end,"
            " aggregation, value, last_at, last_event_id, recorded_at)"
            " SELECT r->>0, r->>1, (r->>2)::timestamptz, (r->>3)::timestamptz, r->>4,"
            " (r->>5)::bigint, (r->>6)::timestamptz, r->>7, (r->>8)::timestamptz"
            " FROM jsonb_array_elements(%(rows)s::jsonb) AS r",
            {"rows": _json(rows)},
        )
        return
    times: dict[datetime, str] = {}  # a batch's rows share their periods and times

    def text(moment: datetime) -> str:
        found = times.get(moment)
        if found is None:
            found = times[moment] = _sqlite_time(moment)
        return found

    connection.exec_driver_sql(
        "INSERT INTO usage_pending (customer_id, meter, period_start, period_end, aggregation,"
        " value, last_at, last_event_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (c, m, text(s), text(e), a, v, text(la), li, text(at))
            for c, m, s, e, a, v, la, li, at in rows
        ],
    )


@lru_cache(maxsize=4096)  # periods and batch times repeat across rows and batches
def _sqlite_time(moment: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME format, of the naive UTC time (see tollgate.db.types).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _from_db(value: Any) -> Any:
    """Return a time read through the driver as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _limit_reason(
    catalog: Catalog, tally: _Tally, value: int, now: datetime, grace: timedelta
) -> str:
    state = customer_state(tally.customer, {tally.meter: tally.counter.value})
    decision = entitlements(catalog, state, now=now, grace=grace).decide(tally.meter, value)
    return decision.reason


def _burn(connection: Connection, event: _Event, per_unit: int, now: datetime) -> bool:
    return bool(
        burn_for_usage(
            connection,
            customer_id=event.customer,
            feature=event.meter,
            units=event.value,
            credits_per_unit=per_unit,
            usage_key=f"usage:{event.id}",
            now=now,
        )
    )


def _write_counters(
    connection: Connection,
    catalog: Catalog,
    tallies: Mapping[_Key, _Tally],
    now: datetime,
    report: UsageReport,
) -> int:
    """Write moved counters, crossed thresholds (with their notices) and overage to report.

    Returns how many meter outbox rows were written.
    """
    updates: list[tuple[Any, ...]] = []
    outbox: list[dict[str, Any]] = []
    crossed: list[tuple[_Tally, int]] = []
    for tally in tallies.values():
        counter = tally.counter
        if counter.value == tally.before and tally.latest is None:
            continue
        report.customers.add(tally.customer.id)
        overage = overage_units(tally.grant, counter.value)
        reported = tally.reported
        customer = tally.customer
        if overage > reported and _billed_in_stripe(customer):
            assert customer.stripe_customer_id is not None
            outbox.append(
                {
                    "customer_id": customer.id,
                    "stripe_customer_id": customer.stripe_customer_id,
                    "stripe_account": customer.stripe_account,
                    "feature": tally.meter,
                    "event_name": meter_event_name(tally.meter),
                    "period_start": tally.period.start,
                    "period_end": tally.period.end,
                    "value": overage - reported,
                    "occurred_at": tally.latest or now,
                    "status": "pending",
                    "identifier": None,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
            reported = overage
        updates.append(
            (
                customer.id,
                tally.meter,
                tally.period.start,
                counter.value,
                counter.last_at,
                counter.last_id,
                reported,
            )
        )
        for percent in crossed_thresholds(tally.grant, tally.before, counter.value):
            crossed.append((tally, percent))
    if updates:
        _update_counters(connection, updates, now)
    if outbox:
        connection.execute(insert(METER_OUTBOX), outbox)
    if crossed:
        _record_thresholds(connection, catalog, crossed, now, report)
    return len(outbox)


def _update_counters(connection: Connection, updates: list[tuple[Any, ...]], now: datetime) -> None:
    """Set counters: (customer, meter, period start, value, last at, last id, reported) each."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_UPDATE_COUNTERS, {"rows": _json(updates), "now": now})
        return
    stamp = _sqlite_time(now)
    connection.exec_driver_sql(
        "UPDATE usage_counters SET value = ?, last_at = ?, last_event_id = ?, reported = ?,"
        " updated_at = ? WHERE customer_id = ? AND meter = ? AND period_start = ?",
        [
            (
                value,
                _sqlite_time(last_at) if last_at is not None else None,
                last_id,
                reported,
                stamp,
                customer_id,
                meter,
                _sqlite_time(start),
            )
            for customer_id, meter, start, value, last_at, last_id, reported in updates
        ],
    )


def _billed_in_stripe(customer: BillingCustomer) -> bool:
    """Return whether the customer's overage goes to a Stripe meter (a live subscription)."""
    return (
        customer.stripe_customer_id is not None
        and not customer.offline
        and customer.status not in ("none", "unpaid", "canceled", "incomplete_expired")
    )


def _record_thresholds(
    connection: Connection,
    catalog: Catalog,
    crossed: list[tuple[_Tally, int]],
    now: datetime,
    report: UsageReport,
) -> None:
    from tollgate.services import outbox  # notifications outbox (emails, app webhooks)

    changed: set[str] = set()
    for tally, percent in crossed:
        customer = tally.customer
        # RETURNING tells whether the row is new (PostgreSQL's rowcount does not, here).
        inserted = connection.execute(
            _insert_missing(connection, USAGE_THRESHOLDS).returning(USAGE_THRESHOLDS.c.percent),
            {
                "customer_id": customer.id,
                "meter": tally.meter,
                "period_start": tally.period.start,
                "percent": percent,
                "used": tally.counter.value,
                "crossed_at": now,
            },
        ).first()
        if inserted is None:
            continue  # crossed before in this period (a `last` meter going down and up again)
        report.thresholds += 1
        changed.add(customer.id)
        facts = threshold_facts(catalog, tally, percent)
        cause = f"{tally.meter}:{tally.period.start.isoformat()}:{percent}"
        outbox.queue_email(
            connection,
            customer_id=customer.id,
            template="usage_exceeded" if percent >= 100 else "usage_warning",
            cause=cause,
            facts=facts,
            now=now,
        )
        outbox.queue_app_event(
            connection,
            event_type="customer.usage_threshold_crossed",
            customer_id=customer.id,
            data=facts,
            cause=cause,
            now=now,
        )
    if changed:
        # A crossing can flip a decision (a hard limit reached): every process drops its cache.
        connection.execute(
            insert(CUSTOMER_CHANGES), feed_rows(sorted(changed), reason="threshold", now=now)
        )


def threshold_facts(catalog: Catalog, tally: _Tally, percent: int) -> dict[str, Any]:
    """Return what a usage warning says: the feature, how much is used of how much, the rate."""
    feature = catalog.features[tally.meter]
    grant = tally.grant
    customer = tally.customer
    facts: dict[str, Any] = {
        "feature": tally.meter,
        "feature_name": feature.name,
        "unit": feature.unit,
        "percent": percent,
        "used": tally.counter.value,
        "included": grant.included,
        "hard_limit": grant.hard,
        "plan": customer.plan,
        "period_start": tally.period.start.isoformat(),
        "period_end": tally.period.end.isoformat(),
    }
    if grant.overage is not None:
        try:
            amount = grant.overage.amount_in(customer.currency)
        except KeyError:
            amount = None
        if amount is not None:
            facts["overage_rate"] = {
                "amount_minor": str(amount),
                "currency": customer.currency,
                "per": grant.overage.per,
            }
            block = overage_minor(grant.overage, grant.overage.per, customer.currency)
            facts["overage_rate_text"] = (
                f"{Money(block, customer.currency).format()}"
                f" per {grant.overage.per:,} {feature.unit or 'units'}"
            )
    return facts


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterUsage:
    """One meter this period: used of included, and what the overage comes to so far."""

    meter: str
    name: str
    unit: str | None
    used: int
    included: int | None
    limit: int | None
    hard: bool
    percent: float | None
    overage: int
    estimated_overage: Money | None
    period: Period
    days_left: int

    def to_json(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "name": self.name,
            "unit": self.unit,
            "used": self.used,
            "included": self.included,
            "limit": self.limit,
            "hard": self.hard,
            "percentage": self.percent,
            "overage": self.overage,
            "estimated_overage": self.estimated_overage.to_json()
            if self.estimated_overage
            else None,
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "days_left": self.days_left,
        }


@dataclass(frozen=True)
class CustomerUsage:
    customer: str
    plan: str | None
    status: str
    period: Period
    meters: list[MeterUsage]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "plan": self.plan,
            "status": self.status,
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "meters": {meter.meter: meter.to_json() for meter in self.meters},
        }


def get_usage(
    *, db: Database, catalog: Catalog, clock: Clock, customer_id: str, grace: timedelta
) -> CustomerUsage:
    """Return the customer's usage this period per meter."""
    now = clock.now()
    with db.engine.connect() as connection:
        customer = load_billing_customers(connection, catalog, [customer_id], now).get(customer_id)
        if customer is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        used = period_usage(connection, customer_id, customer.period)
        connection.rollback()
    grants = _grants(catalog, customer, now, grace)
    meters = []
    for feature_id, feature in catalog.features.items():
        if feature.type is not FeatureType.METERED:
            continue
        grant = grants[feature_id]
        value = used.get(feature_id, 0)
        overage = overage_units(grant, value)
        estimate = None
        if grant.overage is not None and not grant.hard:
            try:
                estimate = Money(
                    overage_minor(grant.overage, overage, customer.currency), customer.currency
                )
            except KeyError:
                estimate = None
        meters.append(
            MeterUsage(
                meter=feature_id,
                name=feature.name,
                unit=feature.unit,
                used=value,
                included=grant.included,
                limit=grant.limit,
                hard=grant.hard,
                percent=percent_used(value, grant.included),
                overage=overage,
                estimated_overage=estimate,
                period=customer.period,
                days_left=customer.period.days_left(now),
            )
        )
    return CustomerUsage(customer.id, customer.plan, customer.status, customer.period, meters)
