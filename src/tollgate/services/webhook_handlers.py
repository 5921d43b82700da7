"""One handler per Stripe event type, keeping the local mirror of Stripe's objects.

Each handler runs inside the transaction its caller opened for the event (see
tollgate.services.webhooks), on a SQLAlchemy Core connection: webhooks are the hottest write path,
and plain statements cost a fraction of the ORM's unit of work. A handler applies the event's
snapshot behind the object's watermark (see tollgate.domain.events.decide) and never calls Stripe
itself. When it needs an object the event does not carry, it calls `ctx.fetch`. The first time
that raises NeedsFetch, which rolls the transaction back; the caller fetches outside any
transaction and runs the handler again with the object at hand. So no row lock or SQLite write
lock is held while Stripe answers.

Locks: every handler locks the customer row first (PostgreSQL `FOR UPDATE`), then the object's
row. All events of one customer therefore apply one at a time, always taking locks in the same
order. The object is read by a statement of its own after the customer's lock is granted: under
READ COMMITTED a statement sees what was committed when it started, so a join that waited for
the customer's lock could read the object as it was before the previous holder's commit. On
PostgreSQL that read is sent together with the lock (and the writes still queued) in one round
trip: the server runs it only once the lock is granted (see `_run`). On SQLite the transaction
already holds the database's write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    ClauseElement,
    Connection,
    CursorResult,
    DateTime,
    Executable,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from tollgate.db.tables import (
    AUDIT_LOG,
    CHARGES,
    CUSTOMER_CHANGES,
    CUSTOMERS,
    DISPUTES,
    INVOICE_PAYMENTS,
    INVOICES,
    REFUNDS,
    SUBSCRIPTION_ITEMS,
    SUBSCRIPTIONS,
)
from tollgate.db.types import UTCDateTime
from tollgate.db.unit_of_work import driver_error
from tollgate.domain.errors import TollgateError
from tollgate.domain.events import (
    ChargeSnapshot,
    CustomerSnapshot,
    Decision,
    InvoicePaymentSnapshot,
    InvoiceSnapshot,
    RefundSnapshot,
    SubscriptionSnapshot,
    changed_fields,
    charge_progress,
    compare_progress,
    customer_progress,
    decide,
    dispute_progress,
    invoice_progress,
    refund_is_behind,
    subscription_progress,
)
from tollgate.services import notifications
from tollgate.services.changes import feed_rows
from tollgate.services.credits import claw_back_refunds, grant_purchased_credits
from tollgate.stripe.translate import (
    charge_snapshot,
    checkout_session_snapshot,
    customer_snapshot,
    dispute_snapshot,
    invoice_payment_snapshot,
    invoice_snapshot,
    refund_snapshot,
    subscription_snapshot,
)

Row = Mapping[Any, Any]


class UnknownStripeObject(TollgateError):
    """An event refers to an object Stripe does not have (in this account)."""

    type = "unknown_stripe_object"


class NeedsFetch(Exception):
    """Raised inside a handler to have the caller fetch an object from Stripe, then rerun it."""

    def __init__(self, object_type: str, object_id: str, reason: str, account: str | None):
        super().__init__(f"{object_type} {object_id} needed from Stripe ({reason})")
        self.object_type = object_type
        self.object_id = object_id
        self.reason = reason
        self.account = account

    @property
    def key(self) -> tuple[str, str]:
        return (self.object_type, self.object_id)


# -- statements, built once -------------------------------------------------------------------


@cache
def _by_id(table: Table, *, lock: bool) -> Select[Any]:
    query = select(table).where(table.c.id == bindparam("row_id"))
    return query.with_for_update() if lock else query


@cache
def _insert(table: Table) -> Insert:
    # Inline: nothing is read back (no RETURNING of generated keys), so the insert can wait
    # with other writes (see HandlerContext.write).
    return table.insert().inline()


@cache
def _update_by_id(table: Table) -> Update:
    # The SET clause comes from the parameters each execution passes.
    statement = update(table).where(table.c.id == bindparam("row_id"))
    _BY_DRIVER.add(statement)
    return statement


# Queued writes that run on the driver's cursor (see _run): updates by id, which have no defaults
# for SQLAlchemy to fill in.
_BY_DRIVER: set[ClauseElement] = set()


_BY_STRIPE_CUSTOMER_ID = CUSTOMERS.c.stripe_customer_id == bindparam("stripe_customer_id")
_CUSTOMER_BY_STRIPE_ID = select(CUSTOMERS).where(_BY_STRIPE_CUSTOMER_ID).with_for_update()
_LOCK_CUSTOMER = select(CUSTOMERS.c.id).where(_BY_STRIPE_CUSTOMER_ID).with_for_update()
_SUBSCRIPTION_KEYS = (
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
    "interval",
    "seats",
    "latest_invoice",
    "watermark_created",
    "watermark_event_id",
)
_ITEM_KEYS = (
    "id",
    "price_id",
    "lookup_key",
    "usage_type",
    "quantity",
    "current_period_start",
    "current_period_end",
)
# The subscription and its items in one statement; the items are written only together with
# the subscription row, so locking that row covers them.
_SUBSCRIPTION_WITH_ITEMS = (
    select(
        *(SUBSCRIPTIONS.c[key] for key in _SUBSCRIPTION_KEYS),
        *(SUBSCRIPTION_ITEMS.c[key].label(f"item_{key}") for key in _ITEM_KEYS),
    )
    .outerjoin(SUBSCRIPTION_ITEMS, SUBSCRIPTION_ITEMS.c.subscription_id == SUBSCRIPTIONS.c.id)
    .where(SUBSCRIPTIONS.c.id == bindparam("row_id"))
    .order_by(SUBSCRIPTION_ITEMS.c.id)
    .with_for_update(of=SUBSCRIPTIONS)
)
# SQLite only: the transaction holds the database's write lock from its first statement, so the
# customer, the subscription and its items can come in one read. (PostgreSQL must have the
# customer's lock granted before it reads the subscription; see the module's docstring.)
_CUSTOMER_SUBSCRIPTION_WITH_ITEMS = (
    select(
        CUSTOMERS.c.id.label("locked_customer_id"),
        SUBSCRIPTIONS.c.id.label("subscription_id"),
        *(SUBSCRIPTIONS.c[key] for key in _SUBSCRIPTION_KEYS),
        *(SUBSCRIPTION_ITEMS.c[key].label(f"item_{key}") for key in _ITEM_KEYS),
    )
    .select_from(CUSTOMERS)
    .outerjoin(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == bindparam("row_id"))
    .outerjoin(SUBSCRIPTION_ITEMS, SUBSCRIPTION_ITEMS.c.subscription_id == SUBSCRIPTIONS.c.id)
    .where(_BY_STRIPE_CUSTOMER_ID)
    .order_by(SUBSCRIPTION_ITEMS.c.id)
)
_BUMP_STATE_VERSION = (
    update(CUSTOMERS)
    .where(CUSTOMERS.c.id == bindparam("row_id"))
    .values(state_version=CUSTOMERS.c.state_version + 1, updated_at=bindparam("now"))
)
# The group's writes after its last event: no column defaults for SQLAlchemy to fill in (the
# audit row's and the feed row's keys are the database's own autoincrement).
_BY_DRIVER.update((_BUMP_STATE_VERSION, _insert(AUDIT_LOG), _insert(CUSTOMER_CHANGES)))


# -- driver SQL for the hottest statements ------------------------------------------------------
#
# The subscription path (bench/webhooks.py's every event) reads the customer, the subscription
# and its items, and updates the subscription and its item. Through SQLAlchemy's execution layer
# each of those costs about 13 µs of CPU before the driver sees it (cache lookup, execution
# context, parameter and result processing), more than SQLite takes to run it. They run on the
# driver's cursor instead, compiled once per dialect, with the same type processing SQLAlchemy
# would apply (the columns' own bind and result processors) and errors raised as SQLAlchemy
# raises them, so callers and tests see no difference.


@dataclass(frozen=True)
class _DriverStatement:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the driver takes them
    binds: tuple[Callable[[Any], Any] | None, ...]
    # Per parameter: _GIVEN, or the value of a literal the statement carries (e.g. the 1 of
    # `state_version + 1`), already processed.
    fixed: tuple[Any, ...]
    positional: bool
    keys: tuple[str, ...]  # the result's columns
    results: tuple[Callable[[Any], Any] | None, ...]

    def arguments(self, parameters: Mapping[str, Any]) -> Any:
        values = [
            fixed
            if fixed is not _GIVEN
            else parameters[name]
            if process is None
            else process(parameters[name])
            for name, process, fixed in zip(self.names, self.binds, self.fixed, strict=True)
        ]
        return values if self.positional else dict(zip(self.names, values, strict=True))


_DRIVER_STATEMENTS: dict[tuple[Any, ...], _DriverStatement] = {}
_GIVEN = object()


def _driver_statement(
    statement: ClauseElement, dialect: Dialect, keys: frozenset[str]
) -> _DriverStatement:
    cache_key = (statement, dialect.name, keys)
    found = _DRIVER_STATEMENTS.get(cache_key)
    if found is not None:
        return found
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    binds = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    fixed = tuple(
        _GIVEN
        if name in keys
        else compiled.binds[name].value
        if process is None
        else process(compiled.binds[name].value)
        for name, process in zip(names, binds, strict=True)
    )
    columns = list(getattr(statement, "selected_columns", ()))
    made = _DriverStatement(
        sql=compiled.string,
        names=names,
        binds=binds,
        fixed=fixed,
        positional=bool(compiled.positional),
        keys=tuple(column.key for column in columns),
        results=tuple(_result_processor(column.type, dialect) for column in columns),
    )
    _DRIVER_STATEMENTS[cache_key] = made
    return made


def _result_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    process = column_type.dialect_impl(dialect).result_processor(dialect, None)
    if process is None or not isinstance(column_type, UTCDateTime | DateTime):
        return process
    # The same few instants (a subscription's periods, trial) are read again and again; an
    # aware datetime is immutable, so one parse of each stored value serves every later read.
    parsed: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        found = parsed.get(value)
        if found is None:
            if len(parsed) >= 4096:
                parsed.clear()
            found = parsed[value] = process(value)
        return found

    return remembered


def _run(
    connection: Connection,
    writes: Sequence[tuple[Executable, Any]],
    reads: Sequence[tuple[ClauseElement, Mapping[str, Any]]] = (),
) -> list[list[dict[str, Any]]]:
    """Run queued writes, then reads; return each read's rows (processed, as dicts).

    On PostgreSQL they go to the database together, in one round trip (psycopg's pipeline
    mode). The server still runs each statement after the one before it has finished, each
    with a snapshot of its own, so a read sent after a row lock sees what the lock's previous
    holder committed. Reads, and the writes in _BY_DRIVER, run on the driver's cursor (see
    _driver_statement); other writes through SQLAlchemy. Errors are raised as SQLAlchemy
    raises them, so callers see no difference.
    """
    dialect = connection.dialect
    dbapi_connection: Any = connection.connection.driver_connection
    pipelined = dialect.name == "postgresql" and len(writes) + len(reads) > 1
    cursors: list[Any] = []
    reading: list[tuple[Any, _DriverStatement]] = []
    sent: tuple[str, Any] | None = None  # the driver statement that ran last, for errors
    try:
        with dbapi_connection.pipeline() if pipelined else nullcontext():
            for statement, parameters in writes:
                if statement in _BY_DRIVER and _same_keys(parameters):
                    sets = [parameters] if isinstance(parameters, Mapping) else parameters
                    compiled = _driver_statement(
                        cast(ClauseElement, statement), dialect, frozenset(sets[0])
                    )
                    arguments: Any = [compiled.arguments(row) for row in sets]
                    sent = (compiled.sql, arguments)
                    cursors.append(cursor := dbapi_connection.cursor())
                    cursor.executemany(compiled.sql, arguments)
                else:
                    connection.execute(statement, parameters)
            for read, parameters in reads:
                compiled = _driver_statement(read, dialect, frozenset(parameters))
                arguments = compiled.arguments(parameters)
                sent = (compiled.sql, arguments)
                cursors.append(cursor := dbapi_connection.cursor())
                reading.append((cursor, compiled))
                cursor.execute(compiled.sql, arguments)
        # Each cursor keeps its own rows (in a pipeline, read when it ended).
        return [_fetched(cursor, compiled) for cursor, compiled in reading]
    except DBAPIError:  # from a write run through SQLAlchemy: raised as it is
        raise
    except dialect.loaded_dbapi.Error as error:
        # In a pipeline the failing statement is not known.
        statement_sql, arguments = sent if sent and not pipelined else (None, None)
        raise driver_error(connection, error, statement_sql, arguments) from error
    finally:
        for cursor in cursors:
            cursor.close()


def _fetched(cursor: Any, compiled: _DriverStatement) -> list[dict[str, Any]]:
    keys, processors = compiled.keys, compiled.results
    return [
        {
            key: value if process is None else process(value)
            for key, process, value in zip(keys, processors, row, strict=True)
        }
        for row in (cursor.fetchall() if keys else ())
    ]


@dataclass
class SharedWrites:
    """The writes of events applied together in one transaction (group commit).

    Their queued statements wait in one list, so one event's writes go to the database just
    before the next event's first read; their audit rows, `state_version` bumps and change-feed
    rows are written by one statement each when the last event is applied.
    """

    pending: list[tuple[Executable, Any]] = field(default_factory=list)
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    bumps: list[dict[str, Any]] = field(default_factory=list)
    feed: list[dict[str, Any]] = field(default_factory=list)

    def write(self, connection: Connection) -> None:
        """Run every write still waiting, in the transaction the events share."""
        _queue_changes(self.pending, self.audit_rows, self.bumps, self.feed)
        self.audit_rows, self.bumps, self.feed = [], [], []
        if self.pending:
            writes = list(self.pending)
            self.pending.clear()  # in place: the events' contexts hold this list
            _run(connection, writes)


def _same_keys(parameters: Any) -> bool:
    """Whether parameters are one set, or a list of sets with the same keys (one statement)."""
    if isinstance(parameters, dict):
        return True
    if not isinstance(parameters, list) or not parameters:
        return False
    keys = parameters[0].keys()
    return all(row.keys() == keys for row in parameters)


def _queue_changes(
    pending: list[tuple[Executable, Any]],
    audit_rows: list[dict[str, Any]],
    bumps: list[dict[str, Any]],
    feed: list[dict[str, Any]],
) -> None:
    if audit_rows:
        pending.append((_insert(AUDIT_LOG), audit_rows))
    if bumps:
        pending.append((_BUMP_STATE_VERSION, bumps))
    if feed:
        pending.append((_insert(CUSTOMER_CHANGES), feed))


@dataclass
class HandlerContext:
    """What a handler knows: the transaction, the event, and objects fetched from Stripe.

    With `shared`, the event is one of several applied in one transaction, and its writes
    wait with theirs (see SharedWrites).
    """

    connection: Connection
    event: dict[str, Any]
    now: datetime
    fetched: dict[tuple[str, str], Any]
    touched: set[str] = field(default_factory=set)
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    pending_writes: list[tuple[Executable, Any]] = field(default_factory=list)
    changes: int = 0
    shared: SharedWrites | None = None

    def __post_init__(self) -> None:
        if self.shared is not None:
            self.pending_writes = self.shared.pending

    @property
    def event_id(self) -> str:
        return str(self.event["id"])

    @property
    def created(self) -> int:
        return int(self.event["created"])

    @property
    def account(self) -> str | None:
        account = self.event.get("account")
        return account if isinstance(account, str) else None

    @property
    def actor(self) -> str:
        """Return who made the change: the Stripe event, or Tollgate's own (reconciliation)."""
        # Only Tollgate sets `tollgate_actor`, on events it builds itself; a delivery is signed.
        actor = self.event.get("tollgate_actor")
        return actor if isinstance(actor, str) else f"stripe:{self.event_id}"

    def fetch(self, object_type: str, object_id: str, reason: str) -> Any:
        """Return the object as Stripe has it now (None when Stripe has no such object)."""
        key = (object_type, object_id)
        if key in self.fetched:
            return self.fetched[key]
        raise NeedsFetch(object_type, object_id, reason, self.account)

    def read(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run a statement whose rows are needed now, after the writes still waiting."""
        self.flush()
        return self.connection.execute(statement, parameters)

    def rows(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Like `read`, on the driver's cursor (see _run): the rows, as dicts."""
        return self.rows_of([(statement, parameters)])[0]

    def rows_of(
        self, reads: Sequence[tuple[ClauseElement, Mapping[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        """Run the writes still waiting, then these reads: one round trip on PostgreSQL."""
        return _run(self.connection, self._take_writes(), reads)

    def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        """Return the first column of the first row a statement reads, or None."""
        return self.read(statement, parameters).scalar()

    def row(self, table: Table, object_id: str, *, lock: bool = False) -> Row | None:
        """Return the mirror row with this id (locked with `lock` on PostgreSQL), or None."""
        found = self.rows(_by_id(table, lock=lock), {"row_id": object_id})
        return found[0] if found else None

    def write(self, statement: Executable, parameters: Any = None) -> None:
        """Queue a statement that returns nothing; it runs before the next read, or at the end.

        On PostgreSQL the queued writes go to the database together, in one round trip.
        """
        self.pending_writes.append((statement, parameters))

    def flush(self) -> None:
        """Run the writes still waiting."""
        if self.pending_writes:
            _run(self.connection, self._take_writes())

    def _take_writes(self) -> list[tuple[Executable, Any]]:
        writes = list(self.pending_writes)
        # Emptied in place: the list may be the one the events of a group share.
        self.pending_writes.clear()
        return writes

    def audit(
        self,
        object_type: str,
        object_id: str,
        action: str,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        customer_id: str | None,
    ) -> None:
        """Record a change that was applied, and mark its customer's cached state stale."""
        old, new = changed_fields(before, after)
        if not new:
            return
        self.audit_rows.append(
            {
                "at": self.now,
                "actor": self.actor,
                "object_type": object_type,
                "object_id": object_id,
                "action": action,
                "before": _jsonable(old) if before is not None else None,
                "after": _jsonable(new),
                "event_id": self.event_id,
            }
        )
        self.changes += 1
        if customer_id is not None:
            self.touched.add(customer_id)

    def finish(self) -> None:
        """Write the audit rows, and bump `state_version` once per customer this event changed.

        With `shared`, they are handed to the group, which writes them after its last event.
        """
        # In id order, so two events touching the same customers lock them in one order.
        touched = sorted(self.touched)
        bumps = [{"row_id": customer_id, "now": self.now} for customer_id in touched]
        feed = feed_rows(touched, reason="subscription", now=self.now)
        if self.shared is not None:
            self.shared.audit_rows.extend(self.audit_rows)
            self.shared.bumps.extend(bumps)
            self.shared.feed.extend(feed)
            return
        _queue_changes(self.pending_writes, self.audit_rows, bumps, feed)
        self.flush()


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in values.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def _stored(row: Row, keys: Iterable[str]) -> dict[str, Any]:
    return {key: row[key] for key in keys}


def _decide(ctx: HandlerContext, row: Row | None, differs: bool, progress: int) -> Decision:
    if row is None:
        return Decision.APPLY
    return decide(
        stored_created=row["watermark_created"],
        stored_event_id=row["watermark_event_id"],
        incoming_created=ctx.created,
        incoming_event_id=ctx.event_id,
        differs=differs,
        progress=progress,
    )


def _write(
    ctx: HandlerContext,
    table: Table,
    object_type: str,
    object_id: str,
    row: Row | None,
    values: dict[str, Any],
    customer_id: str | None,
    *,
    audited: dict[str, Any] | None = None,
    before_extra: dict[str, Any] | None = None,
    action: str | None = None,
) -> dict[str, Any]:
    """Insert or update a watermarked mirror row, audit what changed; return the row as written."""
    before = None if row is None else {**_stored(row, values), **(before_extra or {})}
    after = {**values, **(audited or {})}
    watermark = {"watermark_created": ctx.created, "watermark_event_id": ctx.event_id}
    if row is None:
        written = {**values, **watermark, "id": object_id, "created_at": ctx.now}
        ctx.write(_insert(table), {**written, "updated_at": ctx.now})
    else:
        # Only what changed: fewer values to convert and send, the same row in the end.
        written = {key: value for key, value in values.items() if row[key] != value}
        written.update(watermark)
        if before != after:
            written["updated_at"] = ctx.now
        ctx.write(_update_by_id(table), {**written, "row_id": object_id})
        written = {**row, **values, **written}
    action = action or ("created" if before is None else "updated")
    ctx.audit(object_type, object_id, action, before, after, customer_id)
    return written


# -- customers ----------------------------------------------------------------------------


def _customer_values(snapshot: CustomerSnapshot, account: str | None) -> dict[str, Any]:
    return {
        "email": snapshot.email,
        "name": snapshot.name,
        "currency": snapshot.currency,
        "metadata": dict(snapshot.metadata),
        "deleted": snapshot.deleted,
        "stripe_account": account,
    }


def _customer_by_stripe_id(ctx: HandlerContext, stripe_customer_id: str) -> Row | None:
    found = ctx.rows(_CUSTOMER_BY_STRIPE_ID, {"stripe_customer_id": stripe_customer_id})
    return found[0] if found else None


def _new_customer(
    ctx: HandlerContext, snapshot: CustomerSnapshot, app_id_hint: str | None = None
) -> Row:
    """Create the mirror row of a customer seen for the first time, under the app's id."""
    app_id = snapshot.app_id if snapshot.app_id != snapshot.stripe_id else app_id_hint
    row = None
    if app_id:
        # The app may have made the customer (e.g. offline) before Stripe had it.
        row = ctx.row(CUSTOMERS, app_id, lock=True)
        if row is not None and row["stripe_customer_id"] not in (None, snapshot.stripe_id):
            row, app_id = None, None  # that id is another Stripe customer's: use the cus_ id
    values = _customer_values(snapshot, ctx.account)
    linked = {
        **values,
        "stripe_customer_id": snapshot.stripe_id,
        "watermark_created": ctx.created,
        "watermark_event_id": ctx.event_id,
    }
    if row is not None:
        before = {**_stored(row, values), "stripe_customer_id": row["stripe_customer_id"]}
        ctx.write(_update_by_id(CUSTOMERS), {**linked, "row_id": row["id"]})
        after = {**values, "stripe_customer_id": snapshot.stripe_id}
        ctx.audit("customer", row["id"], "linked", before, after, row["id"])
        return {**row, **linked}
    created = {
        **linked,
        "id": app_id or snapshot.stripe_id,
        "offline": False,
        "state_version": 0,
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    ctx.write(_insert(CUSTOMERS), created)
    after = {**values, "stripe_customer_id": snapshot.stripe_id}
    ctx.audit("customer", created["id"], "created", None, after, created["id"])
    return created


def _lock_customer(
    ctx: HandlerContext, stripe_customer_id: str, *, app_id_hint: str | None = None
) -> str:
    """Lock the customer's row and return its id; create it from Stripe's copy if first seen."""
    locked = ctx.rows(_LOCK_CUSTOMER, {"stripe_customer_id": stripe_customer_id})
    if locked:
        return str(locked[0]["id"])
    found = ctx.fetch("customer", stripe_customer_id, "first_seen")
    if not found:
        raise UnknownStripeObject(
            f"customer {stripe_customer_id} is not in Stripe"
            + (f" account {ctx.account}" if ctx.account else "")
        )
    return str(_new_customer(ctx, customer_snapshot(found), app_id_hint)["id"])


def _lock_customer_and_read(
    ctx: HandlerContext, stripe_customer_id: str, statement: ClauseElement, row_id: str
) -> tuple[str, list[dict[str, Any]]]:
    """Lock the customer, then read the object's rows behind that lock; return both.

    One round trip on PostgreSQL: the read is sent with the lock, and runs once it is granted.
    """
    locked, rows = ctx.rows_of(
        [
            (_LOCK_CUSTOMER, {"stripe_customer_id": stripe_customer_id}),
            (statement, {"row_id": row_id}),
        ]
    )
    if locked:
        return str(locked[0]["id"]), rows
    # First seen: made (or fetched) now, so the object is read again behind its lock.
    customer_id = _lock_customer(ctx, stripe_customer_id)
    return customer_id, ctx.rows(statement, {"row_id": row_id})


def _apply_customer(ctx: HandlerContext, obj: dict[str, Any], *, deleted: bool = False) -> None:
    snapshot = customer_snapshot(obj, deleted=deleted)
    row = _customer_by_stripe_id(ctx, snapshot.stripe_id)
    if row is None:
        _new_customer(ctx, snapshot)
        return
    values = _customer_values(snapshot, ctx.account)
    # Stripe cannot undelete a customer, so deletion stays whatever order events come in.
    values["deleted"] = snapshot.deleted or row["deleted"]
    differs = _stored(row, values) != values
    progress = compare_progress(
        customer_progress(values["deleted"]), customer_progress(row["deleted"])
    )
    decision = _decide(ctx, row, differs, progress)
    if decision is Decision.SKIP:
        return
    if decision is Decision.REFETCH:
        found = ctx.fetch("customer", snapshot.stripe_id, "same_second")
        if not found:
            return
        values = _customer_values(customer_snapshot(found), ctx.account)
        values["deleted"] = values["deleted"] or row["deleted"]
    action = "deleted" if values["deleted"] and not row["deleted"] else None
    _write(ctx, CUSTOMERS, "customer", row["id"], row, values, row["id"], action=action)


def on_customer_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new Stripe customer."""
    _apply_customer(ctx, obj)


def on_customer_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a changed Stripe customer (email, name, currency, metadata)."""
    _apply_customer(ctx, obj)


def on_customer_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mark the customer deleted; it stays deleted whatever arrives later."""
    _apply_customer(ctx, obj, deleted=True)


# -- subscriptions ------------------------------------------------------------------------


def _subscription_values(snapshot: SubscriptionSnapshot, customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "status": snapshot.status,
        "cancel_at_period_end": snapshot.cancel_at_period_end,
        "cancel_at": snapshot.cancel_at,
        "canceled_at": snapshot.canceled_at,
        "ended_at": snapshot.ended_at,
        "trial_start": snapshot.trial_start,
        "trial_end": snapshot.trial_end,
        "current_period_start": snapshot.current_period_start,
        "current_period_end": snapshot.current_period_end,
        "collection_method": snapshot.collection_method,
        "currency": snapshot.currency,
        "plan": snapshot.plan,
        "interval": snapshot.interval,
        "seats": snapshot.seats,
        "latest_invoice": snapshot.latest_invoice,
    }


def _item_values(snapshot: SubscriptionSnapshot) -> list[dict[str, Any]]:
    return [{key: getattr(item, key) for key in _ITEM_KEYS} for item in snapshot.items]


def _customer_and_subscription(
    ctx: HandlerContext, stripe_customer_id: str, subscription_id: str
) -> tuple[str, Row | None, list[dict[str, Any]]]:
    """Lock the customer; return its id, the stored subscription (locked) and its items."""
    if ctx.connection.dialect.name == "sqlite":
        rows = ctx.rows(
            _CUSTOMER_SUBSCRIPTION_WITH_ITEMS,
            {"stripe_customer_id": stripe_customer_id, "row_id": subscription_id},
        )
        if rows:
            stored = rows if rows[0]["subscription_id"] is not None else []
            return str(rows[0]["locked_customer_id"]), *_subscription_and_items(stored)
    customer_id, rows = _lock_customer_and_read(
        ctx, stripe_customer_id, _SUBSCRIPTION_WITH_ITEMS, subscription_id
    )
    return customer_id, *_subscription_and_items(rows)


def _subscription_and_items(rows: Sequence[Row]) -> tuple[Row | None, list[dict[str, Any]]]:
    if not rows:
        return None, []
    items = [
        {key: row[f"item_{key}"] for key in _ITEM_KEYS}
        for row in rows
        if row["item_id"] is not None
    ]
    return rows[0], items


def _apply_subscription(
    ctx: HandlerContext, obj: dict[str, Any]
) -> tuple[SubscriptionSnapshot, str]:
    """Apply the event's subscription; return its snapshot (as the event has it) and customer."""
    snapshot = event_snapshot = subscription_snapshot(obj)
    customer_id, row, stored_items = _customer_and_subscription(
        ctx, snapshot.stripe_customer_id, snapshot.id
    )
    values = _subscription_values(snapshot, customer_id)
    items = _item_values(snapshot)
    if row is not None:
        differs = _stored(row, values) != values or stored_items != items
        progress = compare_progress(
            subscription_progress(snapshot.status, snapshot.current_period_start),
            subscription_progress(row["status"], row["current_period_start"]),
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            return event_snapshot, customer_id
        if decision is Decision.REFETCH:
            found = ctx.fetch("subscription", snapshot.id, "same_second")
            if not found:
                return event_snapshot, customer_id
            snapshot = subscription_snapshot(found)
            values = _subscription_values(snapshot, customer_id)
            items = _item_values(snapshot)
    # The subscription row is written first: its items reference it.
    _write(
        ctx,
        SUBSCRIPTIONS,
        "subscription",
        snapshot.id,
        row,
        values,
        customer_id,
        audited={"items": _item_summary(items)},
        before_extra={"items": _item_summary(stored_items)} if row is not None else None,
    )
    if items != stored_items:
        _replace_items(ctx, snapshot.id, items, stored_items)
    return event_snapshot, customer_id


def _item_summary(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": item["id"], "price_id": item["price_id"], "quantity": item["quantity"]}
        for item in items
    ]


def _replace_items(
    ctx: HandlerContext,
    subscription_id: str,
    items: list[dict[str, Any]],
    stored: list[dict[str, Any]],
) -> None:
    wanted = {item["id"]: item for item in items}
    existing = {item["id"]: item for item in stored}
    gone = [item_id for item_id in existing if item_id not in wanted]
    if gone:
        ctx.write(delete(SUBSCRIPTION_ITEMS).where(SUBSCRIPTION_ITEMS.c.id.in_(gone)))
    added = [
        {**values, "subscription_id": subscription_id}
        for item_id, values in wanted.items()
        if item_id not in existing
    ]
    if added:
        ctx.write(_insert(SUBSCRIPTION_ITEMS), added)
    for item_id, values in wanted.items():
        stored_values = existing.get(item_id)
        if stored_values is not None and stored_values != values:
            changed = {key: value for key, value in values.items() if stored_values[key] != value}
            ctx.write(_update_by_id(SUBSCRIPTION_ITEMS), {**changed, "row_id": item_id})


def on_customer_subscription_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new subscription: status, plan, seats, periods, trial."""
    notifications.notice_subscription_event(ctx, obj, *_apply_subscription(ctx, obj))


def on_customer_subscription_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a changed subscription (status, plan, seats, cancel at period end, …)."""
    notifications.notice_subscription_event(ctx, obj, *_apply_subscription(ctx, obj))


def on_customer_subscription_deleted(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a subscription that ended (its snapshot says canceled)."""
    notifications.notice_subscription_event(ctx, obj, *_apply_subscription(ctx, obj))


def on_customer_subscription_paused(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a paused subscription."""
    notifications.notice_subscription_event(ctx, obj, *_apply_subscription(ctx, obj))


def on_customer_subscription_resumed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a resumed subscription."""
    notifications.notice_subscription_event(ctx, obj, *_apply_subscription(ctx, obj))


def on_customer_subscription_trial_will_end(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror the subscription whose trial ends in three days (its snapshot is current)."""
    notifications.notice_subscription_event(ctx, obj, *_apply_subscription(ctx, obj))


# -- invoices -------------------------------------------------------------------------------


def _invoice_values(snapshot: Any, customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "subscription_id": snapshot.subscription_id,
        "status": snapshot.status,
        "currency": snapshot.currency,
        "amount_due": snapshot.amount_due,
        "amount_paid": snapshot.amount_paid,
        "amount_remaining": snapshot.amount_remaining,
        "total": snapshot.total,
        "attempt_count": snapshot.attempt_count,
        "next_payment_attempt": snapshot.next_payment_attempt,
        "hosted_invoice_url": snapshot.hosted_invoice_url,
        "invoice_pdf": snapshot.invoice_pdf,
        "billing_reason": snapshot.billing_reason,
        "number": snapshot.number,
        "period_start": snapshot.period_start,
        "period_end": snapshot.period_end,
    }


def _apply_invoice(ctx: HandlerContext, obj: dict[str, Any]) -> tuple[InvoiceSnapshot, str]:
    """Apply the event's invoice; return its snapshot (as the event has it) and customer."""
    snapshot = event_snapshot = invoice_snapshot(obj)
    customer_id, rows = _lock_customer_and_read(
        ctx, snapshot.stripe_customer_id, _by_id(INVOICES, lock=True), snapshot.id
    )
    row = rows[0] if rows else None
    values = _invoice_values(snapshot, customer_id)
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            invoice_progress(snapshot.status, snapshot.attempt_count, snapshot.amount_paid),
            invoice_progress(row["status"], row["attempt_count"], row["amount_paid"]),
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            _record_invoice_payments(ctx, snapshot.payments, customer_id)
            return event_snapshot, customer_id
        if decision is Decision.REFETCH:
            found = ctx.fetch("invoice", snapshot.id, "same_second")
            if not found:
                return event_snapshot, customer_id
            snapshot = invoice_snapshot(found)
            values = _invoice_values(snapshot, customer_id)
    _write(ctx, INVOICES, "invoice", snapshot.id, row, values, customer_id)
    _record_invoice_payments(ctx, snapshot.payments, customer_id)
    return event_snapshot, customer_id


def _record_invoice_payments(
    ctx: HandlerContext, payments: Iterable[InvoicePaymentSnapshot], customer_id: str | None
) -> None:
    """Keep which PaymentIntent or charge paid which invoice, and link those charges."""
    for payment in payments:
        row = ctx.row(INVOICE_PAYMENTS, payment.id)
        values = {
            "invoice_id": payment.invoice_id,
            "payment_intent": payment.payment_intent,
            "charge_id": payment.charge_id,
            "status": payment.status,
        }
        if row is None:
            ctx.write(_insert(INVOICE_PAYMENTS), {**values, "id": payment.id})
        elif _stored(row, values) != values:
            ctx.write(_update_by_id(INVOICE_PAYMENTS), {**values, "row_id": payment.id})
        paid_by = []
        if payment.payment_intent:
            paid_by.append(CHARGES.c.payment_intent == payment.payment_intent)
        if payment.charge_id:
            paid_by.append(CHARGES.c.id == payment.charge_id)
        for condition in paid_by:
            linked = (
                ctx.read(
                    update(CHARGES)
                    .where(condition, CHARGES.c.invoice_id.is_(None))
                    .values(invoice_id=payment.invoice_id, updated_at=ctx.now)
                    .returning(CHARGES.c.id)
                )
                .scalars()
                .all()
            )
            for charge_id in linked:
                ctx.audit(
                    "charge",
                    charge_id,
                    "linked",
                    {"invoice_id": None},
                    {"invoice_id": payment.invoice_id},
                    customer_id,
                )


def on_invoice_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a new (draft) invoice."""
    _apply_invoice(ctx, obj)


def on_invoice_finalized(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a finalized invoice: its number, hosted page and PDF now exist."""
    _apply_invoice(ctx, obj)


def on_invoice_paid(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a paid invoice."""
    notifications.notice_invoice_paid(ctx, *_apply_invoice(ctx, obj))


def on_invoice_payment_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice whose payment succeeded."""
    notifications.notice_invoice_paid(ctx, *_apply_invoice(ctx, obj))


def on_invoice_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice whose payment failed: attempt count and next attempt."""
    notifications.notice_invoice_payment_failed(ctx, *_apply_invoice(ctx, obj))


def on_invoice_voided(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a voided invoice."""
    _apply_invoice(ctx, obj)


def on_invoice_marked_uncollectible(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror an invoice marked uncollectible."""
    _apply_invoice(ctx, obj)


def on_invoice_upcoming(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge a coming renewal; its invoice is a preview with no id, so nothing is kept."""


def on_invoice_payment_paid(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Record which PaymentIntent or charge paid an invoice, linking the charge to it."""
    invoice_id = obj.get("invoice")
    if not isinstance(invoice_id, str):
        return
    payment = invoice_payment_snapshot(obj, invoice_id)
    invoice = ctx.row(INVOICES, invoice_id)
    _record_invoice_payments(ctx, [payment], invoice["customer_id"] if invoice else None)


# -- payments -------------------------------------------------------------------------------


def on_payment_intent_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge; the money is mirrored from the `charge.*` events the payment also sends."""


def on_payment_intent_payment_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Acknowledge; the failed charge and the invoice's attempt come in their own events."""


def _charge_values(
    ctx: HandlerContext, snapshot: ChargeSnapshot, customer_id: str | None, row: Row | None
) -> dict[str, Any]:
    invoice_id = row["invoice_id"] if row is not None else None
    disputed = snapshot.disputed or (row is not None and bool(row["disputed"]))
    # What the mirror does not say yet, asked in one round trip: the invoice the charge paid (by
    # the charge, else by its PaymentIntent) and whether a dispute of it arrived first.
    reads: list[tuple[ClauseElement, Mapping[str, Any]]] = []
    if invoice_id is None:
        reads.append((_INVOICE_PAID_BY_CHARGE, {"charge_id": snapshot.id}))
        if snapshot.payment_intent:
            reads.append((_INVOICE_PAID_BY_INTENT, {"payment_intent": snapshot.payment_intent}))
    if not disputed:
        reads.append((_DISPUTE_OF_CHARGE, {"charge_id": snapshot.id}))
    found = iter(ctx.rows_of(reads) if reads else [])
    if invoice_id is None:
        candidates = [next(found)] + ([next(found)] if snapshot.payment_intent else [])
        invoice_id = next((rows[0]["invoice_id"] for rows in candidates if rows), None)
    if not disputed:
        disputed = bool(next(found))
    return {
        "customer_id": customer_id,
        "payment_intent": snapshot.payment_intent,
        "invoice_id": invoice_id,
        "amount": snapshot.amount,
        "amount_refunded": snapshot.amount_refunded,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "refunded": snapshot.refunded,
        "disputed": disputed,
    }


_INVOICE_PAID_BY_CHARGE = (
    select(INVOICE_PAYMENTS.c.invoice_id)
    .where(INVOICE_PAYMENTS.c.charge_id == bindparam("charge_id"))
    .limit(1)
)
_INVOICE_PAID_BY_INTENT = (
    select(INVOICE_PAYMENTS.c.invoice_id)
    .where(INVOICE_PAYMENTS.c.payment_intent == bindparam("payment_intent"))
    .limit(1)
)
_DISPUTE_OF_CHARGE = (
    select(DISPUTES.c.id).where(DISPUTES.c.charge_id == bindparam("charge_id")).limit(1)
)


def _apply_charge(ctx: HandlerContext, obj: dict[str, Any], *, refunds_wanted: bool) -> Row:
    snapshot = charge_snapshot(obj)
    customer_id: str | None = None
    row: Row | None
    if snapshot.stripe_customer_id:
        customer_id, rows = _lock_customer_and_read(
            ctx, snapshot.stripe_customer_id, _by_id(CHARGES, lock=True), snapshot.id
        )
        row = rows[0] if rows else None
    else:
        row = ctx.row(CHARGES, snapshot.id, lock=True)
    values = _charge_values(ctx, snapshot, customer_id, row)
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            charge_progress(
                snapshot.status, snapshot.amount_refunded, snapshot.refunded, snapshot.disputed
            ),
            charge_progress(
                row["status"], row["amount_refunded"], row["refunded"], row["disputed"]
            ),
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            return row
        if decision is Decision.REFETCH:
            found = ctx.fetch("charge", snapshot.id, "same_second")
            if not found:
                return row
            snapshot = charge_snapshot(found)
            values = _charge_values(ctx, snapshot, customer_id, row)
    written = _write(ctx, CHARGES, "charge", snapshot.id, row, values, customer_id)
    refunds = snapshot.refunds
    if refunds is None and refunds_wanted and snapshot.amount_refunded > 0:
        # The charge's refunds list is not in this API version's payload by default.
        fetched = ctx.fetch("refunds", snapshot.id, "thin")
        refunds = tuple(refund_snapshot(refund) for refund in fetched or [])
    for refund in refunds or ():
        _apply_refund_snapshot(ctx, refund, customer_id)
    return written


def _apply_refund_snapshot(
    ctx: HandlerContext, snapshot: RefundSnapshot, customer_id: str | None
) -> None:
    row = ctx.row(REFUNDS, snapshot.id, lock=True)
    if row is not None and refund_is_behind(snapshot.status, row["status"]):
        return
    values = {
        "charge_id": snapshot.charge_id,
        "amount": snapshot.amount,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "reason": snapshot.reason,
    }
    before = None if row is None else _stored(row, values)
    if row is None:
        ctx.write(
            _insert(REFUNDS),
            {**values, "id": snapshot.id, "created_at": ctx.now, "updated_at": ctx.now},
        )
    elif before != values:
        ctx.write(_update_by_id(REFUNDS), {**values, "updated_at": ctx.now, "row_id": snapshot.id})
    ctx.audit(
        "refund", snapshot.id, "created" if row is None else "updated", before, values, customer_id
    )


def on_charge_succeeded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a succeeded charge against its customer (and invoice, once known)."""
    _apply_charge(ctx, obj, refunds_wanted=False)


def on_charge_failed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a failed charge."""
    _apply_charge(ctx, obj, refunds_wanted=False)


def on_charge_refunded(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refunded charge and its refunds, against its invoice and customer."""
    _apply_charge(ctx, obj, refunds_wanted=True)
    ctx.flush()
    claw_back_refunds(ctx.connection, charge_id=obj["id"], now=ctx.now, actor=ctx.actor)


def on_refund_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refund."""
    snapshot = refund_snapshot(obj)
    charge = ctx.row(CHARGES, snapshot.charge_id) if snapshot.charge_id else None
    _apply_refund_snapshot(ctx, snapshot, charge["customer_id"] if charge else None)
    if charge is not None:
        ctx.flush()
        claw_back_refunds(ctx.connection, charge_id=charge["id"], now=ctx.now, actor=ctx.actor)


def on_refund_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a refund whose status changed."""
    on_refund_created(ctx, obj)


def _apply_dispute(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    snapshot = dispute_snapshot(obj)
    charge = ctx.row(CHARGES, snapshot.charge_id)
    if charge is None:
        # Record the dispute against the charge's customer and invoice: fetch the charge.
        found = ctx.fetch("charge", snapshot.charge_id, "first_seen")
        if not found:
            raise UnknownStripeObject(f"charge {snapshot.charge_id} is not in Stripe")
        charge = _apply_charge(ctx, found, refunds_wanted=False)
    customer_id = charge["customer_id"]
    if customer_id:
        ctx.row(CUSTOMERS, customer_id, lock=True)
    row = ctx.row(DISPUTES, snapshot.id, lock=True)
    values = {
        "charge_id": snapshot.charge_id,
        "payment_intent": snapshot.payment_intent,
        "amount": snapshot.amount,
        "currency": snapshot.currency,
        "status": snapshot.status,
        "reason": snapshot.reason,
    }
    if row is not None:
        differs = _stored(row, values) != values
        progress = compare_progress(
            dispute_progress(snapshot.status), dispute_progress(row["status"])
        )
        decision = _decide(ctx, row, differs, progress)
        if decision is Decision.SKIP:
            return
        if decision is Decision.REFETCH:
            found = ctx.fetch("dispute", snapshot.id, "same_second")
            if not found:
                return
            snapshot = dispute_snapshot(found)
            values = {**values, "status": snapshot.status, "reason": snapshot.reason}
    _write(ctx, DISPUTES, "dispute", snapshot.id, row, values, customer_id)
    if not charge["disputed"]:
        ctx.write(
            _update_by_id(CHARGES),
            {"disputed": True, "updated_at": ctx.now, "row_id": charge["id"]},
        )
        ctx.audit(
            "charge", charge["id"], "disputed", {"disputed": False}, {"disputed": True}, customer_id
        )


def on_charge_dispute_created(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Record a dispute against its charge, invoice and customer."""
    _apply_dispute(ctx, obj)


def on_charge_dispute_updated(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a dispute whose status changed."""
    _apply_dispute(ctx, obj)


def on_charge_dispute_closed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror a closed dispute (won, lost or warning closed)."""
    _apply_dispute(ctx, obj)


# -- checkout -------------------------------------------------------------------------------


def on_checkout_session_completed(ctx: HandlerContext, obj: dict[str, Any]) -> None:
    """Mirror the customer and the subscription a Checkout Session started, at once.

    The subscription's own events may arrive later; fetching it here grants access as soon as
    the buyer is back from Checkout. `client_reference_id` names the app's customer.
    """
    session = checkout_session_snapshot(obj)
    if not session.stripe_customer_id:
        return
    customer_id = _lock_customer(
        ctx, session.stripe_customer_id, app_id_hint=session.client_reference_id
    )
    if session.mode == "payment":
        ctx.flush()
        grant_purchased_credits(
            ctx.connection, customer_id=customer_id, session=obj, now=ctx.now, actor=ctx.actor
        )
        return
    if session.mode != "subscription" or not session.subscription_id:
        return
    if ctx.row(SUBSCRIPTIONS, session.subscription_id) is not None:
        return
    found = ctx.fetch("subscription", session.subscription_id, "thin")
    if not found:
        raise UnknownStripeObject(f"subscription {session.subscription_id} is not in Stripe")
    _apply_subscription(ctx, found)


Handler = Callable[[HandlerContext, dict[str, Any]], None]

HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_checkout_session_completed,
    "customer.created": on_customer_created,
    "customer.updated": on_customer_updated,
    "customer.deleted": on_customer_deleted,
    "customer.subscription.created": on_customer_subscription_created,
    "customer.subscription.updated": on_customer_subscription_updated,
    "customer.subscription.deleted": on_customer_subscription_deleted,
    "customer.subscription.paused": on_customer_subscription_paused,
    "customer.subscription.resumed": on_customer_subscription_resumed,
    "customer.subscription.trial_will_end": on_customer_subscription_trial_will_end,
    "invoice.created": on_invoice_created,
    "invoice.finalized": on_invoice_finalized,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_succeeded": on_invoice_payment_succeeded,
    "invoice.payment_failed": on_invoice_payment_failed,
    "invoice.upcoming": on_invoice_upcoming,
    "invoice.voided": on_invoice_voided,
    "invoice.marked_uncollectible": on_invoice_marked_uncollectible,
    "invoice_payment.paid": on_invoice_payment_paid,
    "payment_intent.succeeded": on_payment_intent_succeeded,
    "payment_intent.payment_failed": on_payment_intent_payment_failed,
    "charge.succeeded": on_charge_succeeded,
    "charge.failed": on_charge_failed,
    "charge.refunded": on_charge_refunded,
    "refund.created": on_refund_created,
    "refund.updated": on_refund_updated,
    "charge.refund.updated": on_refund_updated,
    "charge.dispute.created": on_charge_dispute_created,
    "charge.dispute.updated": on_charge_dispute_updated,
    "charge.dispute.closed": on_charge_dispute_closed,
}
