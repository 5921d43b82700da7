"""Usage counted in the database: counters locked for the batch's transaction, decided in order.

The counters a batch touches are locked first (PostgreSQL `FOR UPDATE`, in key order; on SQLite
the write transaction holds the database), before the batch's ids are checked, and each event
is then decided against its counter as the batch has moved it. So the check and the increment
are one step: concurrent batches for one customer take turns and a hard limit is never
overshot. The moved counters and the overage they add for Stripe commit with the events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.db.queries import usage as queries
from tollgate.domain.catalog_sync import meter_event_name
from tollgate.domain.metering import over_limit, overage_units
from tollgate.services.entitlements import BillingCustomer
from tollgate.services.usage.counters import Tallies, Tally
from tollgate.services.usage.events import Event
from tollgate.services.usage.overage import take_back_overage


class DatabaseCounters:
    """The counters in usage_counters, checked and moved under the batch's row locks."""

    waits_for_recorders = True  # a counter's lock is held until its batch ends

    @contextmanager
    def batch(self) -> Iterator[DatabaseCounters]:
        yield self  # nothing to keep per batch: the transaction holds it all

    def lock(self, connection: Connection, tallies: Sequence[Tally], now: datetime) -> None:
        lock_tallies(connection, tallies, now)

    def check(
        self, connection: Connection, tallies: Tallies, events: Sequence[Event], now: datetime
    ) -> None:
        pass  # each event is decided in `fits`, against its counter as the batch moved it

    def fits(self, tally: Tally, event: Event) -> bool:
        if tally.window_limit is not None and event.value > 0:
            start, value = window_of(tally, event.occurred_at)
            if start is not None and value + event.value > tally.window_limit:
                return False
        return tally.limit is None or not over_limit(
            tally.counter, tally.aggregation, event.value, tally.limit, tally.held, event.hold
        )

    def count(self, tally: Tally, event: Event) -> None:
        tally.counter.add(tally.aggregation, event.value, event.occurred_at, event.id)
        tally.held += event.hold
        if tally.window_seconds:
            start, value = window_of(tally, event.occurred_at)
            if start is not None:
                tally.window_start, tally.window_value = start, value + event.value
        if tally.latest is None or event.occurred_at > tally.latest:
            tally.latest = event.occurred_at

    def refuse(self, tally: Tally, event: Event) -> None:
        pass  # refused before `count`: the counter never moved

    def write(
        self,
        connection: Connection,
        moved: Sequence[Tally],
        events: Sequence[queries.EventRow],
        now: datetime,
    ) -> int:
        return write_tallies(connection, moved, now, events)[0]


def lock_tallies(connection: Connection, tallies: Sequence[Tally], now: datetime) -> None:
    """Lock the tallies' counters (given in key order), creating missing ones, and read them."""
    counters = [
        (tally.customer.id, tally.meter, tally.period.start, tally.period.end) for tally in tallies
    ]
    locked = queries.lock_counters(connection, counters, now)
    for tally, row in zip(tallies, locked, strict=True):
        value, last_at, last_id, reported, held, window_start, window_value, alerts = row
        counter = tally.counter
        counter.value, counter.last_at, counter.last_id = value, last_at, last_id
        tally.before = value
        tally.reported = reported
        tally.held = held
        tally.window_start, tally.window_value = window_start, window_value
        tally.alerts = alerts


def write_tallies(
    connection: Connection,
    moved: Sequence[Tally],
    now: datetime,
    events: Sequence[queries.EventRow] = (),
) -> tuple[int, int]:
    """Store the batch's new `events` with the moved counters (`insert_events`: one statement
    on PostgreSQL) and queue the overage they add for Stripe; return how many events were new
    and how many meter outbox rows were written (none when some event was not new)."""
    updates: list[queries.CounterUpdate] = []
    outbox: list[dict[str, Any]] = []
    for tally in moved:
        counter = tally.counter
        overage = overage_units(tally.grant, counter.value)
        reported = tally.reported
        if overage > reported and billed_in_stripe(tally.customer):
            outbox.append(_meter_event(tally, overage - reported, now))
            reported = overage
        elif overage < reported and billed_in_stripe(tally.customer):
            # Usage taken back (voided) after its overage was queued or reported to Stripe.
            leftover, resend = take_back_overage(connection, tally, reported - overage, now)
            if resend:
                outbox.append(_meter_event(tally, resend, now))
            reported = overage + leftover
        updates.append(
            (
                tally.customer.id,
                tally.meter,
                tally.period.start,
                counter.value,
                counter.last_at,
                counter.last_id,
                reported,
                tally.held,
                tally.window_start,
                tally.window_value,
            )
        )
    if events:
        new = queries.insert_events(connection, events, now, updates)
        if new != len(events):
            return new, 0  # the transaction is rolled back and the batch decided again
    elif updates:
        queries.update_counters(connection, updates, now)
    if outbox:
        queries.queue_meter_events(connection, outbox)
    return len(events), len(outbox)


def _meter_event(tally: Tally, units: int, now: datetime) -> dict[str, Any]:
    customer = tally.customer
    assert customer.stripe_customer_id is not None
    return {
        "customer_id": customer.id,
        "stripe_customer_id": customer.stripe_customer_id,
        "stripe_account": customer.stripe_account,
        "feature": tally.meter,
        "event_name": meter_event_name(tally.meter),
        "period_start": tally.period.start,
        "period_end": tally.period.end,
        "value": units,
        "occurred_at": tally.latest or now,
        "status": "pending",
        "identifier": None,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def window_of(tally: Tally, moment: datetime) -> tuple[datetime | None, int]:
    """Return the fixed rate window holding `moment` and what it counted so far: the current
    one, or a new one at zero; (None, 0) for an earlier window (a late event: not checked)."""
    seconds = tally.window_seconds
    start = datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, UTC)
    if tally.window_start is None or start > tally.window_start:
        return start, 0
    if start == tally.window_start:
        return start, tally.window_value
    return None, 0


def billed_in_stripe(customer: BillingCustomer) -> bool:
    """Return whether the customer's overage goes to a Stripe meter (a live subscription)."""
    return (
        customer.stripe_customer_id is not None
        and not customer.offline
        and customer.status not in ("none", "unpaid", "canceled", "incomplete_expired")
    )
