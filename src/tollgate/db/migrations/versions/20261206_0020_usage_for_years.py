"""Usage for years: hourly roll-ups, raw events prunable, monthly partitions on PostgreSQL

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from tollgate.db.queries.usage_storage import DEFAULT_PARTITION, make_partitions, month_partitions
from tollgate.db.types import UTCDateTime
from tollgate.domain.usage_retention import MONTHS_AHEAD

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

ID = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("peak", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "meter", "hour", name="pk_usage_hourly"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _partition_events()
    else:
        op.drop_index("ix_usage_events_customer_meter_time", table_name="usage_events")
        op.create_index("ix_usage_events_occurred_at", "usage_events", ["occurred_at"])
        # SQLite's times are `YYYY-MM-DD HH:MM:SS.ffffff` text: an hour is its first 13 characters.
        op.execute(
            "INSERT INTO usage_hourly (customer_id, meter, hour, quantity, events, peak)"
            " SELECT customer_id, meter, substr(occurred_at, 1, 13) || ':00:00.000000',"
            " sum(value), count(*), max(value) FROM usage_events GROUP BY 1, 2, 3"
        )


def _partition_events() -> None:
    """Move usage_events into a table partitioned by month, ids unique through usage_event_ids."""
    bind = op.get_bind()
    op.execute("ALTER TABLE usage_events RENAME TO usage_events_unpartitioned")
    op.execute("ALTER INDEX ix_usage_events_customer_meter_time RENAME TO ix_usage_events_old")
    op.execute(
        "ALTER TABLE usage_events_unpartitioned RENAME CONSTRAINT pk_usage_events"
        " TO pk_usage_events_unpartitioned"
    )
    # No primary key: it would have to hold occurred_at; usage_event_ids keeps ids unique.
    op.execute(
        "CREATE TABLE usage_events (id VARCHAR(255) NOT NULL, customer_id VARCHAR(255) NOT NULL,"
        " meter VARCHAR(64) NOT NULL, value BIGINT NOT NULL,"
        " occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,"
        " recorded_at TIMESTAMP WITH TIME ZONE NOT NULL) PARTITION BY RANGE (occurred_at)"
    )
    op.execute("CREATE INDEX ix_usage_events_occurred_at ON usage_events (occurred_at)")
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF usage_events DEFAULT")
    op.execute(
        "CREATE TABLE usage_event_ids (id VARCHAR(255) NOT NULL,"
        " occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,"
        " CONSTRAINT pk_usage_event_ids PRIMARY KEY (id))"
    )
    oldest = bind.exec_driver_sql(
        "SELECT min(occurred_at) FROM usage_events_unpartitioned"
    ).scalar()
    now = datetime.now(UTC)
    make_partitions(bind, first=oldest or now, last=now + timedelta(days=31 * MONTHS_AHEAD))
    op.execute(
        "INSERT INTO usage_events SELECT id, customer_id, meter, value, occurred_at, recorded_at"
        " FROM usage_events_unpartitioned"
    )
    op.execute(
        "INSERT INTO usage_event_ids (id, occurred_at) SELECT id, occurred_at"
        " FROM usage_events_unpartitioned"
    )
    # Rolled up a month (a partition) at a time: one GROUP BY over a large table sorts every
    # hour of every month through temporary files (100 million events: well over 12 minutes).
    months = [partition.name for partition in month_partitions(bind)]
    for name in [*months, DEFAULT_PARTITION]:
        op.execute(
            "INSERT INTO usage_hourly (customer_id, meter, hour, quantity, events, peak)"  # noqa: S608 (a partition's name)
            " SELECT customer_id, meter,"
            " date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',"
            f' sum(value), count(*), max(value) FROM "{name}" GROUP BY 1, 2, 3'
        )
    op.execute("DROP TABLE usage_events_unpartitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_events RENAME TO usage_events_partitioned")
        op.create_table(
            "usage_events",
            sa.Column("id", ID, nullable=False),
            sa.Column("customer_id", ID, nullable=False),
            sa.Column("meter", sa.String(64), nullable=False),
            sa.Column("value", sa.BigInteger(), nullable=False),
            sa.Column("occurred_at", UTCDateTime(), nullable=False),
            sa.Column("recorded_at", UTCDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id", name="pk_usage_events"),
        )
        op.execute(
            "INSERT INTO usage_events SELECT id, customer_id, meter, value, occurred_at,"
            " recorded_at FROM usage_events_partitioned"
        )
        op.execute("DROP TABLE usage_events_partitioned")  # and its partitions
        op.execute("DROP TABLE usage_event_ids")
    else:
        op.drop_index("ix_usage_events_occurred_at", table_name="usage_events")
    op.create_index(
        "ix_usage_events_customer_meter_time",
        "usage_events",
        ["customer_id", "meter", "occurred_at", "value"],
    )
    op.drop_table("usage_hourly")
