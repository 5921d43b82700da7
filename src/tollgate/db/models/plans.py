"""What Tollgate keeps of plans itself: pending plan changes, catalog and plan versions,
migrations between versions, per-customer overrides and grants."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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


class PlanChange(Base):
    """A plan, interval or seat change Tollgate applies to a subscription when its period ends.

    Stripe has no pending change without a subscription schedule, so Tollgate keeps the change
    and `apply_due_plan_changes` makes it in Stripe shortly before the renewal it takes effect at.
    """

    __tablename__ = "plan_changes"
    __table_args__ = (Index("ix_plan_changes_status_effective_at", "status", "effective_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    subscription_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    plan: Mapped[str] = mapped_column(String(64))
    interval: Mapped[str] = mapped_column(String(16))
    seats: Mapped[int | None] = mapped_column(Integer, nullable=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | applied | canceled
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CatalogVersion(Base):
    """A catalog as `catalog sync` made it in Stripe: every server process loads the newest."""

    __tablename__ = "catalog_versions"

    version: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    # The document as read (canonical JSON of the YAML) and its SHA-256.
    body: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Each plan's version in this catalog: {"pro": 2, "free": 1}.
    plan_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanVersionRow(Base):
    """A version of a plan: the digest of its terms and the catalog version that brought it."""

    __tablename__ = "plan_versions"

    plan: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    catalog_version: Mapped[int] = mapped_column(ForeignKey("catalog_versions.version"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanMigration(Base):
    """Moving a plan's subscribers from one version to another (`tollgate plans migrate`)."""

    __tablename__ = "plan_migrations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    plan: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    # now | renewal
    at: Mapped[str] = mapped_column(String(16))
    proration: Mapped[str] = mapped_column(String(32))
    notify: Mapped[bool] = mapped_column(Boolean, default=False)
    # running | done | failed
    status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanMigrationCustomer(Base):
    """One subscriber of a migration: its progress, so a resumed run changes nobody twice."""

    __tablename__ = "plan_migration_customers"
    __table_args__ = (Index("ix_plan_migration_customers_status", "migration_id", "status"),)

    migration_id: Mapped[str] = mapped_column(
        ForeignKey("plan_migrations.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    interval: Mapped[str | None] = mapped_column(String(16), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    old_amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    new_amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # pending | done | failed | skipped
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerOverride(Base):
    """One customer's own grant of one feature (a deal), optionally until `ends_at`."""

    __tablename__ = "customer_overrides"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    limit: Mapped[int | None] = mapped_column("limit_value", BigInteger, nullable=True)
    unlimited: Mapped[bool] = mapped_column(Boolean, default=False)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageGrant(Base):
    """Included usage given once, for the period it was given in (support's extra runs)."""

    __tablename__ = "usage_grants"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key"),
        Index("ix_usage_grants_customer_id_period_end", "customer_id", "period_end"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    feature: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
