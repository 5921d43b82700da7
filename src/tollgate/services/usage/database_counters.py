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
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.db.queries import usage as queries
from tollgate.domain.catalog_sync import meter_event_name
from tollgate.domain.metering import over_limit, overage_units
from tollgate.services.entitlements import BillingCustomer
from tollgate.services.usage.counters import Tallies, Tally
from tollgate.services.usage.events import Event


class DatabaseCounters:
    """The counters in usage_counters, checked and moved under the batch's row locks."""

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
        return tally.limit is None or not over_limit(
            tally.counter, tally.aggregation, event.value, tally.limit, tally.held, event.hold
        )

    def count(self, tally: Tally, event: Event) -> None:
        tally.counter.add(tally.aggregation, event.value, event.occurred_at, event.id)
        tally.held += event.hold
        if tally.latest is None or event.occurred_at > tally.latest:
            tally.latest = event.occurred_at

    def refuse(self, tally: Tally, event: Event) -> None:
        pass  # refused before `count`: the counter never moved

    def write(self, connection: Connection, moved: Sequence[Tally], now: datetime) -> None:
        write_tallies(connection, moved, now)


def lock_tallies(connection: Connection, tallies: Sequence[Tally], now: datetime) -> None:
    """Lock the tallies' counters (given in key order), creating missing ones, and read them."""
    counters = [
        (tally.customer.id, tally.meter, tally.period.start, tally.period.end) for tally in tallies
    ]
    locked = queries.lock_counters(connection, counters, now)
    for tally, (value, last_at, last_id, reported, held) in zip(tallies, locked, strict=True):
        counter = tally.counter
        counter.value, counter.last_at, counter.last_id = value, last_at, last_id
        tally.before = value
        tally.reported = reported
        tally.held = held


def write_tallies(connection: Connection, moved: Sequence[Tally], now: datetime) -> int:
    """Write moved counters and queue the overage they add for Stripe; return how many meter
    outbox rows were written."""
    updates: list[queries.CounterUpdate] = []
    outbox: list[dict[str, Any]] = []
    for tally in moved:
        counter = tally.counter
        overage = overage_units(tally.grant, counter.value)
        reported = tally.reported
        if overage > reported and billed_in_stripe(tally.customer):
            outbox.append(_meter_event(tally, overage - reported, now))
            reported = overage
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
            )
        )
    if updates:
        queries.update_counters(connection, updates, now)
    if outbox:
        queries.queue_meter_events(connection, outbox)
    return len(outbox)


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


def billed_in_stripe(customer: BillingCustomer) -> bool:
    """Return whether the customer's overage goes to a Stripe meter (a live subscription)."""
    return (
        customer.stripe_customer_id is not None
        and not customer.offline
        and customer.status not in ("none", "unpaid", "canceled", "incomplete_expired")
    )
