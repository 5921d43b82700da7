"""Usage controls: consumptions, reservations, voids and meter adjustments, spend caps, alerts
and auto top-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollgate.db.models.base import AUTO_ID, STRIPE_ID, Base
from tollgate.db.types import UTCDateTime


class UsageConsumption(Base):
    """The answer of one `consume` call, kept so a retry with its id gets the same answer."""

    __tablename__ = "usage_consumptions"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    feature: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    allowed: Mapped[bool] = mapped_column(Boolean)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageReservation(Base):
    """Units held against a customer's limit for long work, until committed, released or expired."""

    __tablename__ = "usage_reservations"
    __table_args__ = (Index("ix_usage_reservations_status_expires_at", "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    feature: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    quantity: Mapped[int] = mapped_column(BigInteger)  # units held
    status: Mapped[str] = mapped_column(String(16))  # held | committed | released | expired
    committed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsageVoid(Base):
    """A usage event taken back (`POST /v1/usage/void`): who, why, when; the audit of it."""

    __tablename__ = "usage_voids"

    event_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    meter: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    voided_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MeterAdjustment(Base):
    """A meter event to cancel in Stripe (a meter event adjustment), once: usage voided after
    its overage was reported. The units the cancelled event held beyond the correction are sent
    again as a new meter event (meter_outbox)."""

    __tablename__ = "meter_adjustments"

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    event_name: Mapped[str] = mapped_column(String(100))
    cancel_identifier: Mapped[str] = mapped_column(String(100), unique=True)
    units: Mapped[int] = mapped_column(BigInteger)  # what the cancelled event counted
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SpendCap(Base):
    """The most a customer's overage may cost in a billing period; past it, soft limits are hard."""

    __tablename__ = "spend_caps"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    set_by: Mapped[str] = mapped_column(String(255))  # operator (api:<key>) or customer
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageAlert(Base):
    """A threshold on one feature of one customer: units, percent of included, or money."""

    __tablename__ = "usage_alerts"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), index=True)
    feature: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # units | percent | money (minor units)
    threshold: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageAlertFiring(Base):
    """An alert that fired in a period: once each (its webhook and email queued with it)."""

    __tablename__ = "usage_alert_firings"

    alert_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AutoTopup(Base):
    """Buy `pack` with the saved card when the customer's credits fall below `below`."""

    __tablename__ = "auto_topups"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    below: Mapped[int] = mapped_column(BigInteger)
    pack: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TopupAttempt(Base):
    """One automatic purchase of a credit pack: queued at the crossing, paid off-session once."""

    __tablename__ = "topup_attempts"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    pack: Mapped[str] = mapped_column(String(64))
    credits: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | succeeded | failed
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
