"""What metering, entitlements, dunning and reminders read and set of customers and their
subscriptions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, func, or_, select, type_coerce, update
from sqlalchemy.types import NullType

from tollgate.db.dialects import DIALECTS, joined_to_json_array, json_array
from tollgate.db.execution import named_row, read_rows, result_processor
from tollgate.db.tables import BANK_TRANSFERS, CHARGES, CUSTOMERS, DISPUTES, SUBSCRIPTIONS
from tollgate.db.types import UTCDateTime
from tollgate.domain.events import DISPUTE_OPEN_STATUSES


class CustomerRow(NamedTuple):
    """A customer as metering reads it (the columns of `_CUSTOMERS_BY_ID`)."""

    id: str
    offline: bool
    plan: str | None
    currency: str | None
    requested_currency: str | None
    stripe_customer_id: str | None
    stripe_account: str | None
    dunning_access: str | None
    processing_access: str | None
    dispute_access: str | None


class SubscriptionRow(NamedTuple):
    """A mirrored subscription as metering reads it (the columns of `_SUBSCRIPTIONS_OF`)."""

    id: str
    status: str
    plan: str | None
    plan_version: int | None
    interval: str | None
    seats: int | None
    currency: str | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    created_at: datetime


# The statement selects the named tuples' fields, in their order: a customer's, then one of
# its subscriptions' (NULLs for a customer without one), a row per subscription; deleted
# customers are left out by the statement, and a subscription's customer is the row's (no
# column of either: each column value costs SQLite's driver some 740 instructions). The
# subscription's datetimes come as the driver gives them (type_coerce to NullType: no result
# processor), converted in `customer_of_rows` only when a customer is made from its rows: a
# consume writer reads the same customers group after group and keeps those whose rows are
# unchanged (services/entitlements.py), and on SQLite each datetime's conversion (text to
# datetime, then UTC attached, two Python calls) cost about 1 µs, three a customer.
_CUSTOMER_COLUMNS = tuple(CUSTOMERS.c[name] for name in CustomerRow._fields)
_SUBSCRIPTION_COLUMNS = tuple(SUBSCRIPTIONS.c[name] for name in SubscriptionRow._fields)
_SPLIT = len(_CUSTOMER_COLUMNS)
_DATETIMES = tuple(
    index
    for index, column in enumerate(_SUBSCRIPTION_COLUMNS)
    if isinstance(column.type, UTCDateTime)
)
_SELECTED = (
    *_CUSTOMER_COLUMNS,
    *(
        type_coerce(column, NullType()).label(f"subscription_{column.name}")
        if index in _DATETIMES
        else column
        for index, column in enumerate(_SUBSCRIPTION_COLUMNS)
    ),
)


def _customers_with_subscriptions(dialect: str) -> Any:
    customers, among = joined_to_json_array(dialect, CUSTOMERS, CUSTOMERS.c.id, "ids")
    return (
        select(*_SELECTED)
        .select_from(
            customers.outerjoin(SUBSCRIPTIONS, SUBSCRIPTIONS.c.customer_id == CUSTOMERS.c.id)
        )
        .where(*among, CUSTOMERS.c.deleted.is_(False))
    )


# Built once: every entitlement load and usage batch runs it, and building a statement and its
# cache key costs more than running it on SQLite.
_CUSTOMERS_WITH_SUBSCRIPTIONS = {
    dialect: _customers_with_subscriptions(dialect) for dialect in DIALECTS
}
# The datetimes' result processors by dialect: (position in a subscription's columns, processor).
_CONVERTERS: dict[str, tuple[tuple[int, Callable[[Any], Any]], ...]] = {}


def customer_rows(connection: Connection, customer_ids: Iterable[str]) -> Iterator[list[Any]]:
    """Yield the rows of each customer among `customer_ids` that is not deleted: one a
    subscription (or one with NULLs), as the driver gives them, the subscriptions' datetimes
    unconverted (one statement per 500 customers: a round trip, on PostgreSQL). Equal rows
    make an equal customer (`customer_of_rows`).

    The statement runs on the driver's cursor (`read_rows`), without SQLAlchemy's execution
    layer, and its rows are tuples: every usage batch reads its customers.
    """
    ids = sorted(set(customer_ids))
    statement = _CUSTOMERS_WITH_SUBSCRIPTIONS[connection.dialect.name]
    for chunk in _chunks(ids, 500):
        found: dict[str, list[Any]] = {}
        for row in read_rows(connection, statement, {"ids": json_array(chunk)}):
            rows = found.get(row[0])
            if rows is None:
                found[row[0]] = [row]
            else:
                rows.append(row)
        yield from found.values()


def customer_of_rows(
    dialect: Dialect, rows: Sequence[Any]
) -> tuple[CustomerRow, Sequence[SubscriptionRow]]:
    """Return the customer and its subscriptions as named tuples, from its `customer_rows`.

    Named tuples, not SQLAlchemy rows: every usage batch reads a dozen fields of each of its
    customers, and a Row's attribute costs a failed lookup on its class first (an
    AttributeError raised and caught), some 2,700 instructions, a tuple's 30.
    """
    converters = _CONVERTERS.get(dialect.name)
    if converters is None:
        converters = _CONVERTERS[dialect.name] = tuple(
            (index, process)
            for index in _DATETIMES
            if (process := result_processor(_SUBSCRIPTION_COLUMNS[index].type, dialect)) is not None
        )
    customer = named_row(CustomerRow, rows[0][:_SPLIT])
    subscriptions: list[SubscriptionRow] = []
    for row in rows:
        if row[_SPLIT] is None:  # a subscription's id: the customer has none
            continue
        values = list(row[_SPLIT:])
        for index, process in converters:
            values[index] = process(values[index])
        subscriptions.append(named_row(SubscriptionRow, values))
    return customer, subscriptions


def customers_with_subscriptions(
    connection: Connection, customer_ids: Iterable[str]
) -> Iterator[tuple[CustomerRow, Sequence[SubscriptionRow]]]:
    """Yield each customer among `customer_ids` that is not deleted, with all its
    subscriptions (`customer_rows`, made into named tuples)."""
    for rows in customer_rows(connection, customer_ids):
        yield customer_of_rows(connection.dialect, rows)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dunning_access(connection: Connection, customer_id: str) -> Any:
    """Return the access dunning holds the customer at (None: the subscription decides)."""
    return connection.execute(
        select(CUSTOMERS.c.dunning_access).where(CUSTOMERS.c.id == customer_id)
    ).scalar()


def set_dunning_access(
    connection: Connection, customer_id: str, access: str | None, now: datetime
) -> None:
    connection.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .values(dunning_access=access, updated_at=now)
    )


def set_processing_access(
    connection: Connection, customer_id: str, access: str | None, now: datetime
) -> bool:
    """Set the access a processing bank debit gives; True when it changed."""
    return _set_hold(connection, "processing_access", customer_id, access, now)


def set_dispute_access(
    connection: Connection, customer_id: str, access: str | None, now: datetime
) -> bool:
    """Set the access the customer's disputes leave; True when it changed."""
    return _set_hold(connection, "dispute_access", customer_id, access, now)


def _set_hold(
    connection: Connection, column: str, customer_id: str, access: str | None, now: datetime
) -> bool:
    changed = connection.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .where(CUSTOMERS.c[column].is_distinct_from(access))
        .values({column: access, "updated_at": now})
    )
    return bool(changed.rowcount)


def held_dispute_count(connection: Connection, customer_id: str) -> int:
    """Return how many of the customer's disputes hold its access: open (answered or not) or
    lost. An inquiry (`warning_*`) withdrew nothing and holds nothing."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(DISPUTES)
            .where(
                DISPUTES.c.customer_id == customer_id,
                DISPUTES.c.status.in_(("needs_response", "under_review", "lost")),
            )
        ).scalar_one()
    )


def customers_with_cash(connection: Connection) -> list[Any]:
    """Return the customers that have paid by bank transfer (a mirrored cash balance, or a
    payment waiting for transfers): id, Stripe id and account, the cash balance as mirrored."""
    waiting = select(BANK_TRANSFERS.c.customer_id).where(
        BANK_TRANSFERS.c.customer_id == CUSTOMERS.c.id
    )
    return list(
        connection.execute(
            select(
                CUSTOMERS.c.id,
                CUSTOMERS.c.stripe_customer_id,
                CUSTOMERS.c.stripe_account,
                CUSTOMERS.c.cash_balance,
            )
            .where(
                CUSTOMERS.c.stripe_customer_id.is_not(None),
                CUSTOMERS.c.deleted.is_(False),
                or_(CUSTOMERS.c.cash_balance.is_not(None), waiting.exists()),
            )
            .order_by(CUSTOMERS.c.id)
        )
    )


def pending_charge_count(connection: Connection, customer_id: str) -> int:
    """Return how many of the customer's charges are still pending (bank debits processing)."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(CHARGES)
            .where(CHARGES.c.customer_id == customer_id, CHARGES.c.status == "pending")
        ).scalar_one()
    )


def trials_ending(connection: Connection, now: datetime, within: timedelta) -> list[Any]:
    """Return the trialing subscriptions whose trial ends after `now` and within `within`."""
    return list(
        connection.execute(
            select(SUBSCRIPTIONS)
            .where(
                SUBSCRIPTIONS.c.status == "trialing",
                SUBSCRIPTIONS.c.trial_end > now,
                SUBSCRIPTIONS.c.trial_end <= now + within,
            )
            .order_by(SUBSCRIPTIONS.c.trial_end, SUBSCRIPTIONS.c.id)
        )
        .mappings()
        .all()
    )


def charged_subscriptions_on(connection: Connection, plans: Sequence[str]) -> list[Any]:
    """Return the live subscriptions on `plans` that Stripe charges itself (not sent invoices):
    their id, customer, the payment methods their invoices are offered and their latest event."""
    s = SUBSCRIPTIONS.c
    query = (
        select(s.id, s.customer_id, s.payment_method_types, s.watermark_event_id)
        .where(
            s.plan.in_(plans),
            s.status.in_(("trialing", "active", "past_due")),
            or_(s.collection_method.is_(None), s.collection_method == "charge_automatically"),
        )
        .order_by(s.id)
    )
    return list(connection.execute(query).mappings().all())


def disputes_due(connection: Connection, now: datetime, within: timedelta) -> list[Any]:
    """Return the open disputes of known customers whose evidence is due after `now` and within
    `within`."""
    return list(
        connection.execute(
            select(DISPUTES)
            .where(
                DISPUTES.c.status.in_(sorted(DISPUTE_OPEN_STATUSES)),
                DISPUTES.c.evidence_due_by > now,
                DISPUTES.c.evidence_due_by <= now + within,
                DISPUTES.c.customer_id.is_not(None),
            )
            .order_by(DISPUTES.c.evidence_due_by, DISPUTES.c.id)
        )
        .mappings()
        .all()
    )
