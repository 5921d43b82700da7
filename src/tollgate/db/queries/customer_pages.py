"""What the billing page and its JSON read: a customer's usage in time buckets, its invoices.

The buckets are summed from `usage_hourly` (one row per customer, meter and hour, added to as
events are recorded), not from raw events: a month is at most 744 rows whatever the event
count, and raw events may be pruned. SQLite keeps datetimes as `YYYY-MM-DD HH:MM:SS…` text, so a
bucket is a prefix of it; PostgreSQL truncates. Callers ask for whole buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from sqlalchemy import Connection, and_, bindparam, func, or_, select

from tollgate.db.tables import BANK_TRANSFERS, CUSTOMERS, INVOICES, TAX_RATES, USAGE_HOURLY

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
    aggregate: Literal["sum", "max"] = "sum",
) -> list[tuple[datetime, int]]:
    """Return (bucket start, summed or greatest value) of the customer's events of `meter` in
    [start, end) (whole hours), oldest first, only for buckets that have events."""
    query = _buckets_statement(connection.dialect.name, granularity, aggregate)
    found = connection.execute(
        query, {"customer_id": customer_id, "meter": meter, "start": start, "end": end}
    )
    return [(_bucket_start(raw), int(total)) for raw, total in found]


@cache
def _buckets_statement(dialect: str, granularity: Granularity, aggregate: str) -> Any:
    # Built once per shape: the billing page asks for several meters on every view, and
    # building a statement costs more than SQLite takes to answer today's part of it.
    hours = USAGE_HOURLY.c
    bucket = _bucket(dialect, granularity)
    total = func.sum(hours.quantity) if aggregate == "sum" else func.max(hours.peak)
    return (
        select(bucket.label("bucket"), total)
        .where(
            hours.customer_id == bindparam("customer_id"),
            hours.meter == bindparam("meter"),
            hours.hour >= bindparam("start", type_=hours.hour.type),
            hours.hour < bindparam("end", type_=hours.hour.type),
        )
        .group_by(bucket)
        .order_by(bucket)
    )


def daily_usage_by_meter(
    connection: Connection,
    *,
    customer_id: str,
    meters: Sequence[str],
    start: datetime,
    end: datetime,
) -> dict[tuple[str, datetime], tuple[int, int]]:
    """Return {(meter, day start): (sum, greatest value)} of the customer's events of `meters`
    in [start, end) (whole hours), for days that have events: every meter of a page in one
    statement."""
    query = _daily_by_meter_statement(connection.dialect.name)
    found = connection.execute(
        query, {"customer_id": customer_id, "meters": list(meters), "start": start, "end": end}
    )
    return {(meter, _bucket_start(raw)): (int(total), int(top)) for meter, raw, total, top in found}


@cache
def _daily_by_meter_statement(dialect: str) -> Any:
    hours = USAGE_HOURLY.c
    bucket = _bucket(dialect, "day")
    return (
        select(hours.meter, bucket.label("bucket"), func.sum(hours.quantity), func.max(hours.peak))
        .where(
            hours.customer_id == bindparam("customer_id"),
            hours.meter.in_(bindparam("meters", expanding=True)),
            hours.hour >= bindparam("start", type_=hours.hour.type),
            hours.hour < bindparam("end", type_=hours.hour.type),
        )
        .group_by(hours.meter, bucket)
    )


def _bucket(dialect: str, granularity: Granularity) -> Any:
    hour = USAGE_HOURLY.c.hour
    if dialect == "sqlite":
        return func.substr(hour, 1, _PREFIX[granularity])
    return func.date_trunc(granularity, func.timezone("UTC", hour))


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
    (the created time and id of the last one of the previous page). Drafts are left out: their
    amounts may still change, and Stripe shows customers none either."""
    invoices = INVOICES.c
    query = select(INVOICES).where(
        invoices.customer_id == customer_id,
        or_(invoices.status.is_(None), invoices.status != "draft"),
    )
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


def bank_transfers_of(connection: Connection, customer_id: str) -> tuple[Any, Sequence[Any]]:
    """Return the customer's cash balance at Stripe as last seen (None: no such customer) and its
    payments by bank transfer still waiting for money, oldest first."""
    balance = connection.execute(
        select(CUSTOMERS.c.cash_balance).where(
            CUSTOMERS.c.id == customer_id, CUSTOMERS.c.deleted.is_(False)
        )
    ).one_or_none()
    transfers = connection.execute(
        select(BANK_TRANSFERS)
        .where(
            BANK_TRANSFERS.c.customer_id == customer_id,
            BANK_TRANSFERS.c.status == "requires_action",
        )
        .order_by(BANK_TRANSFERS.c.created_at, BANK_TRANSFERS.c.id)
    ).all()
    return balance, transfers


def customer_exists(connection: Connection, customer_id: str) -> bool:
    """Return whether the customer exists and is not deleted."""
    query = select(CUSTOMERS.c.deleted).where(CUSTOMERS.c.id == customer_id)
    deleted = connection.execute(query).scalar_one_or_none()
    return deleted is not None and not deleted


def tax_rate_terms(connection: Connection, rate_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Return the mirrored terms (name, jurisdiction, percentage, inclusive) of these rates."""
    rates = TAX_RATES.c
    rows = connection.execute(
        select(
            rates.id, rates.display_name, rates.jurisdiction, rates.percentage, rates.inclusive
        ).where(rates.id.in_(list(rate_ids)))
    ).all()
    return {
        row.id: {
            "display_name": row.display_name,
            "jurisdiction": row.jurisdiction,
            "percentage": row.percentage,
            "inclusive": row.inclusive,
        }
        for row in rows
    }
