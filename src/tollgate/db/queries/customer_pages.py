"""What the billing page and its JSON read: a customer's usage in time buckets, its invoices.

The buckets are summed by the database over `ix_usage_events_customer_meter_time`, which holds
the value too, so a period of 100,000 events is read from the index alone. SQLite keeps
datetimes as `YYYY-MM-DD HH:MM:SS…` text, so a bucket is a prefix of it; PostgreSQL truncates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, func, or_, select

from tollgate.db.tables import CUSTOMERS, INVOICES, USAGE_EVENTS

Granularity = Literal["hour", "day"]
_PREFIX = {"hour": 13, "day": 10}


def usage_buckets(
    connection: Connection,
    *,
    customer_id: str,
    meter: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> list[tuple[datetime, int]]:
    """Return (bucket start, summed value) of the customer's events of `meter` in [start, end),
    oldest first, only for buckets that have events."""
    events = USAGE_EVENTS.c
    if connection.dialect.name == "sqlite":
        bucket: Any = func.substr(events.occurred_at, 1, _PREFIX[granularity])
    else:
        bucket = func.date_trunc(granularity, func.timezone("UTC", events.occurred_at))
    query = (
        select(bucket.label("bucket"), func.sum(events.value))
        .where(
            events.customer_id == customer_id,
            events.meter == meter,
            events.occurred_at >= start,
            events.occurred_at < end,
        )
        .group_by(bucket)
        .order_by(bucket)
    )
    return [(_bucket_start(raw), int(total)) for raw, total in connection.execute(query)]


def _bucket_start(raw: Any) -> datetime:
    if isinstance(raw, datetime):
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)
    text = str(raw)
    if len(text) == _PREFIX["day"]:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    return datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=UTC)


def invoices_page(
    connection: Connection,
    *,
    customer_id: str,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> Sequence[Any]:
    """Return up to `limit` of the customer's invoices, newest first, older than `before`
    (the created time and id of the last one of the previous page)."""
    invoices = INVOICES.c
    query = select(INVOICES).where(invoices.customer_id == customer_id)
    if before is not None:
        created, invoice_id = before
        query = query.where(
            or_(
                invoices.created_at < created,
                and_(invoices.created_at == created, invoices.id < invoice_id),
            )
        )
    query = query.order_by(invoices.created_at.desc(), invoices.id.desc()).limit(limit)
    return connection.execute(query).all()


def customer_exists(connection: Connection, customer_id: str) -> bool:
    """Return whether the customer exists and is not deleted."""
    query = select(CUSTOMERS.c.deleted).where(CUSTOMERS.c.id == customer_id)
    deleted = connection.execute(query).scalar_one_or_none()
    return deleted is not None and not deleted
