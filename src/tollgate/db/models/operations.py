"""Notifications, app webhooks, job locks and reconciliation runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollgate.db.models.base import AUTO_ID, STRIPE_ID, Base
from tollgate.db.types import UTCDateTime
from tollgate.logs import current_request_id


class Notification(Base):
    """An email to send, once per (customer, template, cause): the outbox the worker delivers."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("customer_id", "template", "cause"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    # No foreign key: a notification outlives nothing, but must never block the change causing it.
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    template: Mapped[str] = mapped_column(String(64))
    cause: Mapped[str] = mapped_column(String(STRIPE_ID))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending | sent | skipped (no address) | failed (gave up)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The request that queued it (X-Request-Id), so the worker's lines about it carry it too.
    request_id: Mapped[str | None] = mapped_column(
        String(128), nullable=True, default=current_request_id
    )


class AppEvent(Base):
    """A webhook to the app, keyed by its event id (derived from its cause, so repeats are one)."""

    __tablename__ = "app_events"
    __table_args__ = (Index("ix_app_events_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    cause: Mapped[str] = mapped_column(String(STRIPE_ID))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending | delivered | failed (gave up)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    request_id: Mapped[str | None] = mapped_column(
        String(128), nullable=True, default=current_request_id
    )


class JobLock(Base):
    """Who runs a job until when, on SQLite (PostgreSQL uses an advisory lock instead)."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime())


class ReconciliationRun(Base):
    """One comparison of the mirror with Stripe over a window, and what it found."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    # cli | nightly | console
    trigger: Mapped[str] = mapped_column(String(16))
    # A run of one object (a drift checked again): which; None for a run over a window.
    object_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The nightly slot this run took; unique, so replicas racing for one night run it once.
    scheduled_for: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), nullable=True, unique=True
    )
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # running | succeeded | failed
    status: Mapped[str] = mapped_column(String(16))
    checked: Mapped[int] = mapped_column(Integer, default=0)
    # Drifts by kind: {"missing_locally": 3, …}
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    healed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReconciliationDrift(Base):
    """One object the mirror and Stripe disagree on, with both sides' differing values."""

    __tablename__ = "reconciliation_drifts"
    __table_args__ = (Index("ix_reconciliation_drifts_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        AUTO_ID, ForeignKey("reconciliation_runs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    local: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stripe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    healed: Mapped[bool] = mapped_column(Boolean, default=False)
