"""Record a batch of usage: each new event counted once, within its hard limit and its credits.

One batch is one transaction, and one decision loop whichever store counts (see `counters`):
the batch's customers are read and late or unknown events set aside; the counters are taken;
events recorded before are dropped; then each event in order is checked against its hard limit,
pays its credits and is counted. The accepted events are stored, the store writes its part, and
the warning levels the counters reached are recorded with their notices, all in the transaction.
When some event was refused and nothing made the batch wait for others counting the same
events (Redis counters), it waits for any still committing them and is decided again if one
did: a batch sent again during its first send's commit answers duplicates, not refusals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from tollgate.clock import Clock
from tollgate.db.queries import usage as queries
from tollgate.db.queries.usage import CounterId
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.entitlements import entitlements
from tollgate.domain.metering import aggregate, enforced_limit, usage_timestamp_problem
from tollgate.domain.wording import UnitName
from tollgate.services import credit_ledger, topups
from tollgate.services.entitlements import (
    BillingCustomer,
    CustomersMade,
    credit_prices,
    customer_state,
    load_billing_customers,
)
from tollgate.services.usage.alerts import record_alerts
from tollgate.services.usage.counters import (
    CounterBatch,
    CounterStore,
    GrantMemo,
    Tallies,
    Tally,
    capped_limits,
    granted,
)
from tollgate.services.usage.database_counters import DatabaseCounters
from tollgate.services.usage.events import (
    Event,
    Rejection,
    UsageReport,
    parse_events,
    parse_uses,
)
from tollgate.services.usage.thresholds import record_thresholds

# A batch is decided again when another one recorded some of its ids first; each retry sees
# what the other committed, so it takes at most one retry per concurrent batch.
_RETRIES = 10
# PostgreSQL's serialization failure and deadlock: the transaction can simply run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


class _Raced(Exception):
    """Another transaction recorded one of the batch's ids while this one decided it."""


DATABASE_COUNTERS = DatabaseCounters()

# Called in the batch's transaction once its new events are decided (and not when none was
# new): what the caller records with them (a consume answer, a reservation's state).
Decided = Callable[[Connection, Tallies, UsageReport, datetime], None]


def record_usage(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    events: Any,
    enforce_limits: bool = True,
    grace: timedelta = timedelta(days=7),
    counters: CounterStore | None = None,
    decided: Decided | None = None,
    holds: dict[str, int] | None = None,
    taken_back: frozenset[str] = frozenset(),
    new_ids: bool = False,
    made: CustomersMade | None = None,
    grants: GrantMemo | None = None,
    uses: Sequence[tuple[str, str, str, int]] | None = None,
) -> UsageReport:
    """Count each new event once; reject the malformed, the unknown and those over a limit.

    `counters` is where usage is counted: the container's `usage_counters` (Redis, when
    TOLLGATE_REDIS_URL is set), or by default the database. `holds` (by event id) changes the
    units a reservation holds with an event (see `reservations`); `decided` runs in the batch's
    transaction after its new events are decided. Events in `taken_back` (ids) count their
    value down: a void's corrections. `new_ids`: the caller expects its ids to be new (each
    consume call has its own), so the batch is decided without first looking which ids were
    recorded (a query saved); one that was is found by the insert, and the batch is decided
    again, with the look. `made`, `grants`: the customers and their grants a caller
    recording batch after batch keeps (see `load_billing_customers`, `GrantMemo`). `uses`:
    the events as (id, customer, meter, value), each happening now, in place of `events`.
    """
    now = clock.now()
    if uses is not None:
        parsed, rejected = parse_uses(uses, catalog, now)
    else:
        parsed, rejected = parse_events(events, catalog, now, holds, taken_back)
    store = DATABASE_COUNTERS if counters is None else counters
    for attempt in range(_RETRIES):
        try:
            report = _record(
                db,
                catalog,
                parsed,
                now,
                store=store,
                enforce_limits=enforce_limits,
                grace=grace,
                decided=decided,
                look=attempt > 0 or not new_ids,
                made=made,
                grants=GrantMemo() if grants is None else grants,
            )
        except (IntegrityError, _Raced, OperationalError) as error:
            # Another batch recorded one of these ids between our look and our insert; the
            # whole batch is decided again against what it committed (its counts given back).
            retryable = not isinstance(error, OperationalError) or _transient(error)
            if not retryable or attempt == _RETRIES - 1:
                raise
            continue
        report.rejected = sorted(rejected + report.rejected, key=lambda r: r.index)
        return report
    raise AssertionError("unreachable")


def _record(
    db: Database,
    catalog: Catalog,
    events: list[Event],
    now: datetime,
    *,
    store: CounterStore,
    enforce_limits: bool,
    grace: timedelta,
    decided: Decided | None = None,
    look: bool = True,
    made: CustomersMade | None = None,
    grants: GrantMemo,
) -> UsageReport:
    report = UsageReport()
    reasons = _LimitReasons(catalog, now, grace)
    prices = credit_prices(catalog)
    with store.batch() as counters, db.write_connection() as connection:
        caps: dict[str, int] = {}  # the customers' spend caps, read with them
        customers, wanted = _screen(connection, catalog, events, now, report, made, caps)
        if not wanted:
            return report
        tallies = _tallies(catalog, customers, wanted, now, grace, enforce_limits, grants)
        if enforce_limits:
            _cap(connection, catalog, tallies, now, grace, caps)
        counters.lock(connection, list(tallies.values()), now)  # the database's, in key order
        fresh = _unrecorded(connection, wanted, report) if look else wanted
        if not fresh:
            return report
        counters.check(connection, tallies, fresh, now)  # Redis's: every new event in one script
        accepted: list[Event] = []
        running: dict[Tally, int] = {}  # each counter's value as the events so far left it
        moves = report.moves
        # Counters with no hard or rate limit and no credit price have nothing to decide: every
        # event fits (in either store) and is counted without the questions.
        free = {
            tally
            for tally in tallies.values()
            if tally.limit is None and tally.window_limit is None and tally.meter not in prices
        }
        for event in fresh:
            tally = tallies[event.customer, event.meter]
            before = running.get(tally, tally.before)
            if tally not in free:
                moves[event.index] = (before, before)
                if not counters.fits(tally, event):
                    report.rejected.append(reasons.rejection(tally, event))
                    continue
                per_unit = prices.get(event.meter)
                if per_unit and not _burn_credits(connection, event, per_unit, now):
                    counters.refuse(tally, event)
                    report.rejected.append(_credit_rejection(catalog, event, per_unit))
                    continue
            counters.count(tally, event)
            tally.accepted += 1
            accepted.append(event)
            after = running[tally] = aggregate(tally.aggregation, before, event.value)
            moves[event.index] = (before, after)
        if len(accepted) < len(fresh) and _refused_recorded(
            connection, counters, fresh, accepted, look
        ):
            raise _Raced  # a refused event was recorded by another batch: decide with the look
        report.accepted = len(accepted)
        rows = [(e.id, e.customer, e.meter, e.value, e.occurred_at) for e in accepted]
        moved = [tally for tally in tallies.values() if tally.accepted]
        if counters.write(connection, moved, rows, now) != len(rows):
            raise _Raced
        report.customers.update([tally.customer.id for tally in moved])
        report.thresholds += record_thresholds(connection, catalog, moved, now)
        record_alerts(connection, catalog, moved, now)
        if decided is not None:
            decided(connection, tallies, report, now)
    return report


def _transient(error: OperationalError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _screen(
    connection: Connection,
    catalog: Catalog,
    events: list[Event],
    now: datetime,
    report: UsageReport,
    made: CustomersMade | None,
    caps: dict[str, int],
) -> tuple[dict[str, BillingCustomer], list[Event]]:
    """Return the batch's customers and its events that may count (unknown or late ones out);
    fill `caps` with the customers' spend caps."""
    customers = load_billing_customers(
        connection, catalog, {event.customer for event in events}, now, made, caps
    )
    wanted: list[Event] = []
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
        # An event without a timestamp happened `now`, in its customer's open period.
        period = customer.period
        if event.occurred_at is now and period.start <= now < period.end:
            problem = None
        else:
            problem = usage_timestamp_problem(event.occurred_at, customer.period, now)
        if problem is not None:
            report.rejected.append(Rejection(event.index, event.id, "invalid_timestamp", problem))
            continue
        wanted.append(event)
    return customers, wanted


def _tallies(
    catalog: Catalog,
    customers: dict[str, BillingCustomer],
    events: list[Event],
    now: datetime,
    grace: timedelta,
    enforce_limits: bool,
    grants: GrantMemo,
) -> dict[tuple[str, str], Tally]:
    """Return a tally of each counter the events count in, by (customer, meter), in key order."""
    tallies: dict[tuple[str, str], Tally] = {}
    for customer_id, meter in sorted({(event.customer, event.meter) for event in events}):
        customer = customers[customer_id]
        grant = granted(catalog, customer, now, grace, grants)[meter]
        tally = tallies[(customer_id, meter)] = Tally(
            customer=customer,
            period=customer.period,
            meter=meter,
            aggregation=catalog.features[meter].aggregation,
            grant=grant,
            limit=enforced_limit(grant, enforce_limits),
        )
        if enforce_limits and grant.rate is not None:
            tally.window_seconds, tally.window_limit = grant.rate.seconds, grant.rate.limit
    return tallies


def _cap(
    connection: Connection,
    catalog: Catalog,
    tallies: dict[tuple[str, str], Tally],
    now: datetime,
    grace: timedelta,
    caps: dict[str, int],
) -> None:
    """Hold soft features of customers with a spend cap (`caps`) to the limit the cap sets."""
    limits: dict[str, dict[str, int]] = {}
    for (customer_id, meter), tally in tallies.items():
        cap = caps.get(customer_id)
        if cap is None:
            continue
        if customer_id not in limits:
            limits[customer_id] = capped_limits(
                connection, catalog, tally.customer, cap, now, grace
            )
        limit = limits[customer_id].get(meter)
        if limit is not None:
            tally.limit, tally.spend_cap = limit, cap


def _unrecorded(connection: Connection, events: list[Event], report: UsageReport) -> list[Event]:
    """Return the events whose ids were never recorded; count the others as duplicates."""
    known = queries.recorded_ids(connection, [event.id for event in events])
    if not known:
        return events
    report.duplicates += sum(1 for event in events if event.id in known)
    return [event for event in events if event.id not in known]


def _refused_recorded(
    connection: Connection,
    counters: CounterBatch,
    fresh: list[Event],
    accepted: list[Event],
    look: bool,
) -> bool:
    """Return whether some refused event was recorded by another batch, one the look missed."""
    if counters.waits_for_recorders:
        # Its counters' locks made this batch wait for any other counting the same events:
        # what that one recorded has committed, and the look (if it looked) saw it.
        return not look and bool(queries.recorded_ids(connection, [e.id for e in fresh]))
    # Redis: another batch may have counted these events first (so they no longer fit) and be
    # committing them now, unseen by the look; wait for it and see. A retry sent while the
    # first is still committing is answered "duplicate", not "rejected" for counted events.
    taken = {event.id for event in accepted}
    refused = [event.id for event in fresh if event.id not in taken]
    return bool(queries.recorded_ids_awaited(connection, refused))


def _burn_credits(connection: Connection, event: Event, per_unit: int, now: datetime) -> bool:
    burned = credit_ledger.burn_for_usage(
        connection,
        customer_id=event.customer,
        feature=event.meter,
        units=event.value,
        credits_per_unit=per_unit,
        usage_key=f"usage:{event.id}",
        now=now,
    )
    if burned and event.value > 0:  # the wallet is locked: one burn sees the crossing
        topups.after_burn(
            connection, customer_id=event.customer, burned=event.value * per_unit, now=now
        )
    return bool(burned)


def _credit_rejection(catalog: Catalog, event: Event, per_unit: int) -> Rejection:
    return Rejection(
        event.index,
        event.id,
        "insufficient_credits",
        f"{catalog.features[event.meter].name} costs {per_unit:,} credits a unit "
        "and the customer's credits (with any overdraft allowance) are used up",
    )


class _LimitReasons:
    """Why events did not fit a hard limit, in the words of the entitlement decision."""

    def __init__(self, catalog: Catalog, now: datetime, grace: timedelta) -> None:
        self.catalog = catalog
        self.now = now
        self.grace = grace
        # A reason is a whole entitlement decision: worked out once per counter, value and used.
        self._reasons: dict[tuple[CounterId, int, int], str] = {}

    def rejection(self, tally: Tally, event: Event) -> Rejection:
        memo = (tally.key, event.value, tally.counter.value)
        reason = self._reasons.get(memo)
        if reason is None:
            state = customer_state(
                tally.customer,
                {tally.meter: tally.counter.value},
                held={tally.meter: tally.held} if tally.held else None,
                spend_cap=tally.spend_cap,
            )
            decision = entitlements(self.catalog, state, now=self.now, grace=self.grace)
            answer = decision.decide(tally.meter, event.value)
            reason = answer.reason if not answer.allowed else _rate_reason(self.catalog, tally)
            self._reasons[memo] = reason
        return Rejection(event.index, event.id, "limit_exceeded", reason)


def _rate_reason(catalog: Catalog, tally: Tally) -> str:
    """Say why an event within the period's limit was refused: its rate window is full."""
    feature = catalog.features[tally.meter]
    rate = tally.grant.rate
    if rate is None or tally.window_limit is None:  # the spend cap or a hold took the room
        return f"{feature.name}: no room left under the limit this period."
    unit = UnitName(feature.unit or feature.name.lower())
    return (
        f"{feature.name}: at most {tally.window_limit:,} {unit(tally.window_limit)} a "
        f"{rate.per}; try again in the next {rate.per}."
    )
