"""Record usage exactly once, enforce hard limits atomically, and queue overage for Stripe.

One batch is one transaction. The counters it touches are locked first (PostgreSQL
`FOR UPDATE`, in key order; on SQLite the write transaction holds the database), then the event
ids are checked against those already recorded, then each event is decided in order against the
counter as the batch has moved it. So the check and the increment are one step: concurrent
batches for one customer take turns, and a hard limit is never overshot. Threshold crossings,
their notifications and the overage outbox are written in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from tollgate.clock import Clock
from tollgate.db.models import MeterOutbox, UsageCounter, UsageEvent, UsageThreshold
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, FeatureType, PlanFeature
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
from tollgate.services.changes import CHANGES, feed_rows
from tollgate.services.entitlements import (
    BillingCustomer,
    credit_prices,
    customer_state,
    load_billing_customers,
    period_usage,
)

log = logging.getLogger("tollgate.usage")

EVENTS: Table = UsageEvent.__table__  # type: ignore[assignment]
COUNTERS: Table = UsageCounter.__table__  # type: ignore[assignment]
THRESHOLDS: Table = UsageThreshold.__table__  # type: ignore[assignment]
OUTBOX: Table = MeterOutbox.__table__  # type: ignore[assignment]

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
) -> UsageReport:
    """Count each new event once; reject the malformed, the unknown and those over a limit."""
    now = clock.now()
    parsed, rejected = parse_events(events, catalog, now)
    for attempt in range(_RETRIES):
        try:
            report = _record(db, catalog, parsed, now, enforce_limits=enforce_limits, grace=grace)
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
    grant: PlanFeature
    counter: Counter
    before: int
    reported: int
    latest: datetime | None = None
    rejections: int = 0


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
                report.rejected.append(
                    Rejection(event.index, event.id, "invalid_timestamp", problem)
                )
                continue
            wanted.append(event)
        if not wanted:
            return report

        tallies = _lock_counters(connection, catalog, customers, wanted, now, grace)
        known = _recorded_ids(connection, [event.id for event in wanted])
        accepted_rows: list[dict[str, Any]] = []
        credit_cost = credit_prices(catalog)
        for event in wanted:
            if event.id in known:
                report.duplicates += 1
                continue
            tally = tallies[(event.customer, event.meter)]
            aggregation = catalog.features[event.meter].aggregation
            if enforce_limits and over_hard_limit(
                tally.grant, tally.counter, aggregation, event.value
            ):
                tally.rejections += 1
                report.rejected.append(
                    Rejection(
                        event.index,
                        event.id,
                        "limit_exceeded",
                        _limit_reason(catalog, tally, event.value, now, grace),
                    )
                )
                continue
            per_unit = credit_cost.get(event.meter)
            if per_unit and not _burn(connection, tally, event, per_unit, now):
                report.rejected.append(
                    Rejection(
                        event.index,
                        event.id,
                        "insufficient_credits",
                        f"{catalog.features[event.meter].name} costs {per_unit:,} credits a unit "
                        "and the customer's credits (with any overdraft allowance) are used up",
                    )
                )
                continue
            tally.counter.add(aggregation, event.value, event.occurred_at, event.id)
            if tally.latest is None or event.occurred_at > tally.latest:
                tally.latest = event.occurred_at
            accepted_rows.append(
                {
                    "id": event.id,
                    "customer_id": event.customer,
                    "meter": event.meter,
                    "value": event.value,
                    "occurred_at": event.occurred_at,
                    "recorded_at": now,
                }
            )
        if accepted_rows:
            _insert_events(connection, accepted_rows)
        report.accepted = len(accepted_rows)
        _write_counters(connection, catalog, tallies, now, report)
    return report


def _lock_counters(
    connection: Connection,
    catalog: Catalog,
    customers: Mapping[str, BillingCustomer],
    events: Sequence[_Event],
    now: datetime,
    grace: timedelta,
) -> dict[tuple[str, str], _Tally]:
    """Return each (customer, meter) counter of the open period, locked, creating missing ones."""
    keys = sorted({(event.customer, event.meter) for event in events})
    rows = [
        {
            "customer_id": customer_id,
            "meter": meter,
            "period_start": customers[customer_id].period.start,
            "period_end": customers[customer_id].period.end,
            "value": 0,
            "reported": 0,
            "updated_at": now,
        }
        for customer_id, meter in keys
    ]
    connection.execute(_insert_missing(connection, COUNTERS), rows)
    query = (
        select(COUNTERS)
        .where(
            tuple_(COUNTERS.c.customer_id, COUNTERS.c.meter, COUNTERS.c.period_start).in_(
                [(row["customer_id"], row["meter"], row["period_start"]) for row in rows]
            )
        )
        .order_by(COUNTERS.c.customer_id, COUNTERS.c.meter, COUNTERS.c.period_start)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    tallies: dict[tuple[str, str], _Tally] = {}
    grants: dict[str, dict[str, PlanFeature]] = {}
    for row in connection.execute(query):
        customer = customers[row.customer_id]
        if customer.id not in grants:
            grants[customer.id] = _grants(catalog, customer, now, grace)
        grant = grants[customer.id][row.meter]
        tallies[(row.customer_id, row.meter)] = _Tally(
            customer=customer,
            meter=row.meter,
            grant=grant,
            counter=Counter(int(row.value), row.last_at, row.last_event_id),
            before=int(row.value),
            reported=int(row.reported),
        )
    return tallies


def _insert_missing(connection: Connection, table: Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _grants(
    catalog: Catalog, customer: BillingCustomer, now: datetime, grace: timedelta
) -> dict[str, PlanFeature]:
    """Return what the customer's access plan grants of each feature now."""
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
            "SELECT id FROM usage_events WHERE id = ANY(%(ids)s)", {"ids": ids}
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


def _insert_events(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert accepted events (the same values UTCDateTime would store)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "INSERT INTO usage_events (id, customer_id, meter, value, occurred_at, recorded_at)"
            " VALUES (%(id)s, %(customer_id)s, %(meter)s, %(value)s, %(occurred_at)s,"
            " %(recorded_at)s)",
            rows,
        )
        return
    recorded = _sqlite_time(rows[0]["recorded_at"])
    connection.exec_driver_sql(
        "INSERT INTO usage_events (id, customer_id, meter, value, occurred_at, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                row["id"],
                row["customer_id"],
                row["meter"],
                row["value"],
                _sqlite_time(row["occurred_at"]),
                recorded,
            )
            for row in rows
        ],
    )


def _sqlite_time(moment: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME format, of the naive UTC time (see tollgate.db.types).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _limit_reason(
    catalog: Catalog, tally: _Tally, value: int, now: datetime, grace: timedelta
) -> str:
    state = customer_state(tally.customer, {tally.meter: tally.counter.value})
    decision = entitlements(catalog, state, now=now, grace=grace).decide(tally.meter, value)
    return decision.reason


def _burn(
    connection: Connection, tally: _Tally, event: _Event, per_unit: int, now: datetime
) -> bool:
    from tollgate.services import credits  # the credits capability; imported where used

    return bool(
        credits.burn_for_usage(
            connection,
            customer_id=event.customer,
            feature=event.meter,
            units=event.value,
            credits_per_unit=per_unit,
            usage_key=f"usage:{event.id}",
            now=now,
        )
    )


_UPDATE_COUNTER = (
    update(COUNTERS)
    .where(
        COUNTERS.c.customer_id == bindparam("k_customer"),
        COUNTERS.c.meter == bindparam("k_meter"),
        COUNTERS.c.period_start == bindparam("k_start"),
    )
    .values(
        value=bindparam("value"),
        last_at=bindparam("last_at"),
        last_event_id=bindparam("last_event_id"),
        reported=bindparam("reported"),
        updated_at=bindparam("now"),
    )
)


def _write_counters(
    connection: Connection,
    catalog: Catalog,
    tallies: Mapping[tuple[str, str], _Tally],
    now: datetime,
    report: UsageReport,
) -> None:
    """Write moved counters, crossed thresholds (with their notices) and overage to report."""
    updates: list[dict[str, Any]] = []
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
                    "period_start": customer.period.start,
                    "period_end": customer.period.end,
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
            {
                "k_customer": customer.id,
                "k_meter": tally.meter,
                "k_start": customer.period.start,
                "value": counter.value,
                "last_at": counter.last_at,
                "last_event_id": counter.last_id,
                "reported": reported,
                "now": now,
            }
        )
        for percent in crossed_thresholds(tally.grant, tally.before, counter.value):
            crossed.append((tally, percent))
    if updates:
        connection.execute(_UPDATE_COUNTER, updates)
    if outbox:
        connection.execute(insert(OUTBOX), outbox)
    if crossed:
        _record_thresholds(connection, catalog, crossed, now, report)


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
            _insert_missing(connection, THRESHOLDS).returning(THRESHOLDS.c.percent),
            {
                "customer_id": customer.id,
                "meter": tally.meter,
                "period_start": customer.period.start,
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
        cause = f"{tally.meter}:{customer.period.start.isoformat()}:{percent}"
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
        connection.execute(insert(CHANGES), feed_rows(sorted(changed), reason="threshold", now=now))


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
        "period_start": customer.period.start.isoformat(),
        "period_end": customer.period.end.isoformat(),
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
