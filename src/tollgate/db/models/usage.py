"""Usage metering: events, counters, thresholds, the meter outbox, hourly roll-ups, and the
changes feed that invalidates entitlement caches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollgate.db.models.base import AUTO_ID, STRIPE_ID, Base
from tollgate.db.types import UTCDateTime


class CustomerChange(Base):
    """A change to what a customer may do, in commit order: the feed that invalidates caches.

    Written in the same transaction as the change (with the customer's `state_version` bump);
    servers and clients poll or stream it to drop cached entitlement decisions.
    """

    __tablename__ = "customer_changes"

    seq: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    # subscription | plan | usage | threshold | credits | dunning | customer
    reason: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageEvent(Base):
    """A usage event as accepted: its id is the app's, so a repeat is recognised as long as the
    event is kept (TOLLGATE_USAGE_RAW_RETENTION_DAYS).

    Readers of usage over time read `usage_hourly`; raw events serve dedupe, voids and audit,
    and are pruned past the retention (the index on `occurred_at` finds them). On PostgreSQL
    the table is partitioned by month and ids are unique through `usage_event_ids` (see
    `tollgate.db.queries.usage_storage`; migration 0020).
    """

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_occurred_at", "occurred_at"),)

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    meter: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageCounter(Base):
    """A customer's aggregate of one meter in one billing period [period_start, period_end)."""

    __tablename__ = "usage_counters"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    # The latest event so far, for `last` aggregation (ordered by the events' own time).
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    # Overage units already written to the meter outbox for this period.
    reported: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Units reserved and not yet committed or released (usage_reservations); they count against
    # the hard limit like used units (migration 0011).
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The current fixed window of a plan's `rate` limit (per minute, hour or day): its start
    # and what was counted in it.
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageThreshold(Base):
    """A warning level (percent of the included quantity) that usage crossed, once a period."""

    __tablename__ = "usage_thresholds"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    percent: Mapped[int] = mapped_column(Integer, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger)
    crossed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MeterOutbox(Base):
    """Overage to report to a Stripe billing meter, written with the usage that caused it.

    The sync job groups pending rows and stamps the group with an `identifier` before calling
    Stripe, so a resend after a crash or timeout carries the same identifier and counts once.
    """

    __tablename__ = "meter_outbox"
    __table_args__ = (
        Index("ix_meter_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_meter_outbox_identifier", "identifier"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    feature: Mapped[str] = mapped_column(String(64))
    event_name: Mapped[str] = mapped_column(String(100))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | claimed (identifier stamped, being sent) | sent | failed (Stripe refused it)
    status: Mapped[str] = mapped_column(String(16))
    identifier: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsagePending(Base):
    """Usage counted in Redis and committed with its events, not yet folded into usage_counters.

    One row per counter per batch (the batch's sum, max or latest reading). The flush job folds
    rows into their counters and deletes them in one transaction (migration 0008).
    """

    __tablename__ = "usage_pending"
    __table_args__ = (
        Index("ix_usage_pending_customer_id_period_start", "customer_id", "period_start"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    meter: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    aggregation: Mapped[str] = mapped_column(String(8))  # sum | max | last
    value: Mapped[int] = mapped_column(BigInteger)
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # change in held


class UsageHourly(Base):
    """A customer's usage of one meter in one hour, rolled up as its events are recorded: what
    usage history, the billing page's chart and the console read, so raw events can be pruned.

    `quantity` is the sum of the events' values (voids count down), `events` how many were
    recorded, `peak` the greatest value (for `max` and `last` meters).
    """

    __tablename__ = "usage_hourly"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    peak: Mapped[int] = mapped_column(BigInteger)
