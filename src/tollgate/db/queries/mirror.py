"""The mirror of Stripe's objects that the webhook handlers keep, as statements built once.

Handlers queue writes and send reads through their context (see tollgate.db.execution), so these
are statements and readers, not functions that run them: a handler's writes go to the database
together with its next read.

Locks: every handler locks the customer row first (PostgreSQL `FOR UPDATE`), then the object's
row, so the events of one customer apply one at a time, always taking locks in the same order.
The object is read by a statement of its own after the customer's lock is granted: under READ
COMMITTED a statement sees what was committed when it started, so a join that waited for the
customer's lock could read the object as it was before the previous holder's commit. On
PostgreSQL that read is sent together with the lock in one round trip and runs once the lock is
granted. On SQLite the transaction already holds the database's write lock, so the customer and
the object come in one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, delete, select, update
from sqlalchemy.engine import Dialect

from tollgate.db.dialects import DIALECTS, among_json_array, joined_to_json_array, json_array
from tollgate.db.execution import (
    DriverSQL,
    OnDriver,
    Read,
    Rows,
    Write,
    json_rows,
    on_driver,
)
from tollgate.db.tables import (
    AUDIT_LOG,
    BANK_TRANSFERS,
    CHARGES,
    CUSTOMER_CHANGES,
    CUSTOMER_TAX_IDS,
    CUSTOMERS,
    DISCOUNTS,
    DISPUTES,
    INVOICE_PAYMENTS,
    INVOICES,
    REFUNDS,
    SUBSCRIPTION_ITEMS,
    SUBSCRIPTIONS,
    TAX_RATES,
)

Row = Mapping[str, Any]
# Runs reads (after the writes still queued) and returns their rows: the handler context's.
Reader = Callable[[Sequence[Read]], list[Rows]]

MIRROR_TABLES = (
    CUSTOMERS,
    SUBSCRIPTIONS,
    SUBSCRIPTION_ITEMS,
    INVOICES,
    INVOICE_PAYMENTS,
    CHARGES,
    REFUNDS,
    DISPUTES,
    DISCOUNTS,
    TAX_RATES,
    CUSTOMER_TAX_IDS,
    BANK_TRANSFERS,
)


def _by_id(table: Table, *, lock: bool) -> Select[Any]:
    query = select(table).where(table.c.id == bindparam("row_id"))
    return query.with_for_update() if lock else query


# Per table: the row by id, the row by id locked, an insert and an update by id. Inserts are
# inline (nothing is read back), so they can wait with other writes. Both run on the driver
# (tollgate.db.execution fills in constant column defaults as SQLAlchemy would), their columns
# coming from each execution's parameters.
_ROW = {table.name: _by_id(table, lock=False) for table in MIRROR_TABLES}
_LOCKED_ROW = {table.name: _by_id(table, lock=True) for table in MIRROR_TABLES}
_INSERT = {table.name: on_driver(table.insert().inline()) for table in MIRROR_TABLES}
_UPDATE = {
    table.name: on_driver(update(table).where(table.c.id == bindparam("row_id")))
    for table in MIRROR_TABLES
}


def row_by_id(table: Table, *, lock: bool = False) -> Select[Any]:
    """The row with id `row_id` (locked on PostgreSQL with `lock`)."""
    return (_LOCKED_ROW if lock else _ROW)[table.name]


def watermark_of(connection: Connection, table: Table, object_id: str) -> tuple[int, str] | None:
    """Return the `created` second and id of the event whose snapshot the row holds (None: no
    row)."""
    c = table.c
    query = select(c.watermark_created, c.watermark_event_id).where(c.id == object_id)
    row = connection.execute(query).first()
    return None if row is None else (int(row[0] or 0), str(row[1] or ""))


def insert_row(table: Table) -> OnDriver:
    """An insert of a mirror row, from the parameters given."""
    return _INSERT[table.name]


def update_by_id(table: Table) -> OnDriver:
    """An update of the row with id `row_id`, setting the other parameters given."""
    return _UPDATE[table.name]


# -- customers ---------------------------------------------------------------------------------

_BY_STRIPE_CUSTOMER_ID = CUSTOMERS.c.stripe_customer_id == bindparam("stripe_customer_id")
CUSTOMER_BY_STRIPE_ID = select(CUSTOMERS).where(_BY_STRIPE_CUSTOMER_ID).with_for_update()
LOCK_CUSTOMER = select(CUSTOMERS.c.id).where(_BY_STRIPE_CUSTOMER_ID).with_for_update()
BUMP_STATE_VERSION = on_driver(
    update(CUSTOMERS)
    .where(CUSTOMERS.c.id == bindparam("row_id"))
    .values(state_version=CUSTOMERS.c.state_version + 1, updated_at=bindparam("now"))
)
# The group's writes after its last event: no column defaults for SQLAlchemy to fill in (the
# audit row's and the feed row's keys are the database's own autoincrement).
INSERT_AUDIT = on_driver(AUDIT_LOG.insert().inline())
INSERT_FEED = on_driver(CUSTOMER_CHANGES.insert().inline())
AUDIT_COLUMNS = ("at", "actor", "object_type", "object_id", "action", "before", "after", "event_id")
FEED_COLUMNS = ("customer_id", "reason", "at")
# PostgreSQL: the same three as one statement, the rows of each given as one JSON document (a
# text parameter, written by orjson in C). Statements cost the driver more than the rows they
# carry (an executemany queues one statement a row), and arrays (`unnest`) cost psycopg a
# Python dumper per parameter, more than they save for a lone event. The three touch three
# tables, none reading what another writes, so running them as parts of one statement (with
# one snapshot) changes nothing: rows are inserted in the documents' order, a JSON value
# column gets the very text SQLAlchemy would have bound. A customer bumped by several events
# of the group is bumped once by their number (an UPDATE … FROM changes a row once), with the
# last one's time, in id order (the order handlers lock customers in). The text is the same for
# any number of rows, so the server prepares it once. Measured (bench/webhooks_inprocess.py
# --only writer, under callgrind, with the COMMIT sent with it): 1,950k instructions an event
# down to 1,800k at groups of one, 1,088k to 937k at groups of 16.
_PG_GROUP_CHANGES = DriverSQL(
    "WITH audit AS (INSERT INTO audit_log"
    " (at, actor, object_type, object_id, action, before, after, event_id)"
    " SELECT (r->>0)::timestamptz, r->>1, r->>2, r->>3, r->>4, (r->>5)::json, (r->>6)::json,"
    " r->>7 FROM json_array_elements(%s::json) AS r),"
    " bump AS (UPDATE customers SET state_version = customers.state_version + (b->>1)::integer,"
    " updated_at = (b->>2)::timestamptz"
    " FROM json_array_elements(%s::json) AS b WHERE customers.id = b->>0)"
    " INSERT INTO customer_changes (customer_id, reason, at)"
    " SELECT f->>0, f->>1, (f->>2)::timestamptz FROM json_array_elements(%s::json) AS f"
)


def group_changes(
    dialect: Dialect,
    audit_rows: Sequence[Mapping[str, Any]],
    bumps: Sequence[Mapping[str, Any]],
    feed: Sequence[Mapping[str, Any]],
) -> list[Write]:
    """The writes of a group's audit rows (`AUDIT_COLUMNS`), `state_version` bumps (`row_id`,
    `now`) and feed rows (`FEED_COLUMNS`), after its last event: one statement on PostgreSQL,
    an executemany of each on SQLite."""
    if dialect.name != "postgresql" or not _has_columns(audit_rows, AUDIT_COLUMNS):
        writes: list[Write] = []
        if audit_rows:
            writes.append((INSERT_AUDIT, audit_rows))
        if bumps:
            writes.append((BUMP_STATE_VERSION, bumps))
        if feed:
            writes.append((INSERT_FEED, feed))
        return writes
    if not (audit_rows or bumps or feed):
        return []
    bumped: dict[str, list[Any]] = {}  # customer: [times, last time]
    for bump in bumps:
        found = bumped.get(bump["row_id"])
        if found is None:
            bumped[bump["row_id"]] = [bump["row_id"], 1, bump["now"]]
        else:
            found[1] += 1
            found[2] = bump["now"]
    return [
        (
            _PG_GROUP_CHANGES,
            [
                json_rows(AUDIT_LOG, AUDIT_COLUMNS, audit_rows, dialect),
                json_rows(
                    CUSTOMERS,
                    ("id", "state_version", "updated_at"),
                    [
                        dict(zip(("id", "state_version", "updated_at"), bumped[key], strict=True))
                        for key in sorted(bumped)
                    ],
                    dialect,
                ),
                json_rows(CUSTOMER_CHANGES, FEED_COLUMNS, feed, dialect),
            ],
        )
    ]


def _has_columns(rows: Sequence[Mapping[str, Any]], columns: tuple[str, ...]) -> bool:
    """Whether every row has exactly these keys (a row with others goes the general way)."""
    return all(len(row) == len(columns) and all(key in row for key in columns) for row in rows)


def lock_customer_and_read(
    read: Reader, stripe_customer_id: str, statement: Select[Any], row_id: str
) -> tuple[str | None, Rows]:
    """Lock the customer, then read the object's rows behind that lock; return both.

    The customer's id is None when the mirror does not have it yet. One round trip on
    PostgreSQL: the read is sent with the lock, and runs once it is granted.
    """
    locked, rows = read(
        [
            (LOCK_CUSTOMER, {"stripe_customer_id": stripe_customer_id}),
            (statement, {"row_id": row_id}),
        ]
    )
    return (str(locked[0]["id"]) if locked else None), rows


# -- subscriptions and their items ---------------------------------------------------------------

SUBSCRIPTION_KEYS = (
    "customer_id",
    "status",
    "cancel_at_period_end",
    "cancel_at",
    "canceled_at",
    "ended_at",
    "trial_start",
    "trial_end",
    "current_period_start",
    "current_period_end",
    "collection_method",
    "currency",
    "plan",
    "plan_version",
    "interval",
    "seats",
    "latest_invoice",
    "discount_ids",
    "payment_method_types",
    "watermark_created",
    "watermark_event_id",
)
ITEM_KEYS = (
    "id",
    "price_id",
    "lookup_key",
    "usage_type",
    "quantity",
    "current_period_start",
    "current_period_end",
)
# The subscription and its items in one statement; the items are written only together with
# the subscription row, so locking that row covers them. No ORDER BY: a subscription has a
# row or two, sorted in Python (`subscription_and_items`), where SQLite would build a sorter
# for each read.
_SUBSCRIPTION_WITH_ITEMS = (
    select(
        *(SUBSCRIPTIONS.c[key] for key in SUBSCRIPTION_KEYS),
        *(SUBSCRIPTION_ITEMS.c[key].label(f"item_{key}") for key in ITEM_KEYS),
    )
    .outerjoin(SUBSCRIPTION_ITEMS, SUBSCRIPTION_ITEMS.c.subscription_id == SUBSCRIPTIONS.c.id)
    .where(SUBSCRIPTIONS.c.id == bindparam("row_id"))
    .with_for_update(of=SUBSCRIPTIONS)
)
# SQLite only: the customer, the subscription and its items in one read (see the docstring).
_CUSTOMER_SUBSCRIPTION_WITH_ITEMS = (
    select(
        CUSTOMERS.c.id.label("locked_customer_id"),
        SUBSCRIPTIONS.c.id.label("subscription_id"),
        *(SUBSCRIPTIONS.c[key] for key in SUBSCRIPTION_KEYS),
        *(SUBSCRIPTION_ITEMS.c[key].label(f"item_{key}") for key in ITEM_KEYS),
    )
    .select_from(CUSTOMERS)
    .outerjoin(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == bindparam("row_id"))
    .outerjoin(SUBSCRIPTION_ITEMS, SUBSCRIPTION_ITEMS.c.subscription_id == SUBSCRIPTIONS.c.id)
    .where(_BY_STRIPE_CUSTOMER_ID)
)


def lock_customer_and_subscription(
    read: Reader, dialect: str, stripe_customer_id: str, subscription_id: str
) -> tuple[str | None, Row | None, list[dict[str, Any]]]:
    """Lock the customer; return its id (None if unknown), the subscription (locked), its items."""
    if dialect == "sqlite":
        (rows,) = read(
            [
                (
                    _CUSTOMER_SUBSCRIPTION_WITH_ITEMS,
                    {"stripe_customer_id": stripe_customer_id, "row_id": subscription_id},
                )
            ]
        )
        if not rows:
            return None, None, []
        stored = rows if rows[0]["subscription_id"] is not None else []
        return str(rows[0]["locked_customer_id"]), *subscription_and_items(stored)
    customer_id, rows = lock_customer_and_read(
        read, stripe_customer_id, _SUBSCRIPTION_WITH_ITEMS, subscription_id
    )
    return customer_id, *subscription_and_items(rows)


# A group's subscription events read ahead (see `lock_customers_and_subscriptions`): their
# customers locked in id order, then their subscriptions (locked) with their items. The ids go
# as one JSON array each, so the statements compile once and run on the driver's cursor.
def _locked_customers(*columns: Any) -> dict[str, Select[Any]]:
    """Per dialect: these columns of the customers of some Stripe ids (a JSON array),
    locked in id order (the one order a group locks customers in)."""
    return among_json_array(
        select(*columns).order_by(CUSTOMERS.c.id).with_for_update(),
        CUSTOMERS,
        CUSTOMERS.c.stripe_customer_id,
        "stripe_customer_ids",
    )


_GROUP_CUSTOMERS = _locked_customers(CUSTOMERS.c.id, CUSTOMERS.c.stripe_customer_id)


def _subscriptions_with_items(dialect: str) -> Select[Any]:
    source, terms = joined_to_json_array(
        dialect, SUBSCRIPTIONS, SUBSCRIPTIONS.c.id, "subscription_ids"
    )
    return (
        select(
            SUBSCRIPTIONS.c.id.label("subscription_id"),
            *(SUBSCRIPTIONS.c[key] for key in SUBSCRIPTION_KEYS),
            *(SUBSCRIPTION_ITEMS.c[key].label(f"item_{key}") for key in ITEM_KEYS),
        )
        .select_from(
            source.outerjoin(
                SUBSCRIPTION_ITEMS, SUBSCRIPTION_ITEMS.c.subscription_id == SUBSCRIPTIONS.c.id
            )
        )
        .where(*terms)
        .order_by(SUBSCRIPTIONS.c.id)
        .with_for_update(of=SUBSCRIPTIONS)
    )


_GROUP_SUBSCRIPTIONS_WITH_ITEMS = {
    dialect: _subscriptions_with_items(dialect) for dialect in DIALECTS
}
_GROUP_CUSTOMER_ROWS = _locked_customers(CUSTOMERS)


def lock_customer_rows(read: Reader, dialect: str, stripe_ids: Sequence[str]) -> dict[str, Row]:
    """Lock and read the customers of these Stripe ids (in id order); return them by Stripe id."""
    (rows,) = read(
        [
            (
                _GROUP_CUSTOMER_ROWS[dialect],
                {"stripe_customer_ids": json_array(sorted(set(stripe_ids)))},
            )
        ]
    )
    return {row["stripe_customer_id"]: row for row in rows}


# What `lock_customer_and_subscription` answers for one subscription: its customer's id, the
# subscription's row (None when not stored) and its items.
StoredSubscription = tuple[str, Row | None, list[dict[str, Any]]]


def lock_customers_and_subscriptions(
    read: Reader, dialect: str, pairs: Sequence[tuple[str, str]]
) -> dict[str, tuple[str, StoredSubscription]]:
    """Lock the customers of (Stripe customer id, subscription id) pairs, then read each
    subscription (locked) and its items; return by subscription id the Stripe customer id it
    was read for and what `lock_customer_and_subscription` answers for it.

    For a group of events applied together: two statements for the group (one round trip on
    PostgreSQL) instead of a read per event. The customers are locked in id order, so two
    groups (two replicas) locking some of the same customers cannot deadlock over them; the
    subscriptions are read once those locks are granted, as `lock_customer_and_subscription`
    reads them. A pair whose customer the mirror lacks (or has twice) is left out: its event
    reads as it would alone. A subscription named with two customers is kept for the first.
    """
    customers, rows = read(
        [
            (
                _GROUP_CUSTOMERS[dialect],
                {"stripe_customer_ids": json_array(sorted({pair[0] for pair in pairs}))},
            ),
            (
                _GROUP_SUBSCRIPTIONS_WITH_ITEMS[dialect],
                {"subscription_ids": json_array(sorted({pair[1] for pair in pairs}))},
            ),
        ]
    )
    by_stripe_id: dict[str, str | None] = {}
    for customer in customers:
        stripe_id = customer["stripe_customer_id"]
        # Twice: not expected (the column is unique), and then not guessed at.
        by_stripe_id[stripe_id] = None if stripe_id in by_stripe_id else str(customer["id"])
    stored: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        stored.setdefault(row["subscription_id"], []).append(row)
    found: dict[str, tuple[str, StoredSubscription]] = {}
    for stripe_customer_id, subscription_id in pairs:
        customer_id = by_stripe_id.get(stripe_customer_id)
        if customer_id is None or subscription_id in found:
            continue
        subscription = subscription_and_items(stored.get(subscription_id, ()))
        found[subscription_id] = (stripe_customer_id, (customer_id, *subscription))
    return found


def read_subscription(
    read: Reader, subscription_id: str
) -> tuple[Row | None, list[dict[str, Any]]]:
    """Return the subscription (locked) and its items, once its customer is locked."""
    (rows,) = read([(_SUBSCRIPTION_WITH_ITEMS, {"row_id": subscription_id})])
    return subscription_and_items(rows)


def subscription_and_items(rows: Sequence[Row]) -> tuple[Row | None, list[dict[str, Any]]]:
    """Split the joined rows of a subscription into the subscription and its items (by id)."""
    if not rows:
        return None, []
    items = [
        {key: row[label] for key, label in _ITEM_LABELS}
        for row in rows
        if row["item_id"] is not None
    ]
    if len(items) > 1:
        items.sort(key=_item_id)
    return rows[0], items


# Each item key with the label it is read under (made once, not an f-string a key and row).
_ITEM_LABELS = tuple((key, f"item_{key}") for key in ITEM_KEYS)


def _item_id(item: Mapping[str, Any]) -> str:
    return str(item["id"])


def delete_items(item_ids: Sequence[str]) -> Any:
    """Delete subscription items by id."""
    return delete(SUBSCRIPTION_ITEMS).where(SUBSCRIPTION_ITEMS.c.id.in_(item_ids))


# -- invoices, charges, disputes ---------------------------------------------------------------

INVOICE_PAID_BY_CHARGE = (
    select(INVOICE_PAYMENTS.c.invoice_id)
    .where(INVOICE_PAYMENTS.c.charge_id == bindparam("charge_id"))
    .limit(1)
)
INVOICE_PAID_BY_INTENT = (
    select(INVOICE_PAYMENTS.c.invoice_id)
    .where(INVOICE_PAYMENTS.c.payment_intent == bindparam("payment_intent"))
    .limit(1)
)
DISPUTE_OF_CHARGE = (
    select(DISPUTES.c.id).where(DISPUTES.c.charge_id == bindparam("charge_id")).limit(1)
)
INVOICE_PAYMENT_STATE = select(INVOICES.c.status, INVOICES.c.attempt_count).where(
    INVOICES.c.id == bindparam("row_id")
)
# Charges paid toward an invoice that do not name it yet: linked, their ids returned. (The
# parameters are not named as columns: SQLAlchemy keeps those names for the SET clause.)
_LINK = CHARGES.c.invoice_id.is_(None)
_LINK_VALUES: dict[str, Any] = {
    "invoice_id": bindparam("paid_invoice"),
    "updated_at": bindparam("now"),
}
LINK_CHARGES_BY_INTENT = (
    update(CHARGES)
    .where(CHARGES.c.payment_intent == bindparam("paid_by_intent"), _LINK)
    .values(**_LINK_VALUES)
    .returning(CHARGES.c.id)
)
LINK_CHARGE_BY_ID = (
    update(CHARGES)
    .where(CHARGES.c.id == bindparam("charge_id"), _LINK)
    .values(**_LINK_VALUES)
    .returning(CHARGES.c.id)
)
