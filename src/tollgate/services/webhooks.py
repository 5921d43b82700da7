"""Stripe webhooks: store each event once (persist first), then apply it exactly once.

`apply_stripe_delivery` is what a delivery runs. It checks the signature, then in ONE transaction
inserts the raw event into the inbox (`INSERT … ON CONFLICT DO NOTHING`, already marked
succeeded), runs the event's handler, and commits the mirror, the audit rows, the customers'
`state_version` and the inbox row together. So the row is stored before it is processed, and
the effects and the row's status commit at once: either both are there or neither is. If the
handler fails, that transaction rolls back and a second one stores the event as failed, with its
error and a backoff (or, if another delivery stored it meanwhile, marks that row failed unless
it was applied). A duplicate whose row is already applied changes nothing.

`apply_stripe_deliveries` does the same for deliveries that arrived together, verified first
(`verify_stripe_delivery`), in ONE transaction for all of them (group commit): one inbox insert,
each event's handler in turn, one insert of all their audit rows and change-feed rows, one
commit. If anything in it raises, it rolls back and each delivery runs alone, as above, so one
bad event fails no other.

An event that needs an object from Stripe, or a redelivery of a stored event that is not applied
yet, takes the slow path: the event is stored as pending, then `process_stripe_event` claims the
row, holds a lease while Stripe answers (outside any transaction), and applies it. The retry job
and `tollgate events replay` use the same slow path.

Claiming: on PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED`, so a second worker on the same event
moves on at once; a second delivery's inbox insert waits on the first's uncommitted row, then
sees it applied. On SQLite each transaction's first statement is a write, so it holds the
database's single write lock before it reads anything. Either way, only one transaction at a time
decides whether an event still needs applying.

Inbox statuses: pending (stored, not applied yet); processing (a worker is fetching an object
from Stripe for it, under a 5-minute lease); succeeded; failed (with last_error and
next_attempt_at); ignored (a type Tollgate has no handler for).

The hot path uses SQLAlchemy Core statements built once, not the ORM's unit of work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, ClassVar

import orjson
from sqlalchemy import Connection, and_, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from tollgate.clock import Clock
from tollgate.config import ConfigError, Settings
from tollgate.db.models import StripeEvent
from tollgate.db.tables import STRIPE_EVENTS
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import InvalidRequest, NotFound, TollgateError
from tollgate.domain.events import retry_delay
from tollgate.metrics import STRIPE_REFETCHES, WEBHOOK_EVENTS
from tollgate.services.webhook_handlers import (
    HANDLERS,
    Handler,
    HandlerContext,
    NeedsFetch,
    SharedWrites,
)
from tollgate.stripe.errors import StripeNotFound
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.signatures import parse_event, verify_signature
from tollgate.stripe.translate import timestamp

log = logging.getLogger("tollgate.webhooks")

LEASE = timedelta(minutes=5)
STUCK_AFTER = timedelta(minutes=5)
# Each round may ask Stripe for one object (the customer, then the subscription, …).
MAX_FETCH_ROUNDS = 6
MAX_CONFLICT_RETRIES = 3
MAX_ERROR_CHARS = 1000
STATUSES = ("pending", "processing", "succeeded", "failed", "ignored")
_DONE = ("succeeded", "ignored")
# PostgreSQL's serialization failure and deadlock: the transaction can simply run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
_SECRET_TEXT = re.compile(
    r"\b(?:(?:sk|rk|pk)_(?:test|live)_|whsec_|tg_(?:read|write)_)[A-Za-z0-9_\-]+"
)

_BY_ID = STRIPE_EVENTS.c.id == bindparam("event_id")
_STATUS = select(STRIPE_EVENTS.c.status).where(_BY_ID)
_STATUSES = select(STRIPE_EVENTS.c.id, STRIPE_EVENTS.c.status).where(
    STRIPE_EVENTS.c.id.in_(bindparam("event_ids", expanding=True))
)
_ROW = select(STRIPE_EVENTS).where(_BY_ID)
_ROW_FOR_UPDATE = _ROW.with_for_update()
_ROW_FOR_UPDATE_SKIP_LOCKED = _ROW.with_for_update(skip_locked=True)
# SQLite: a write that changes nothing, to take the database's write lock before reading.
_TAKE_WRITE_LOCK = update(STRIPE_EVENTS).where(_BY_ID).values(attempts=STRIPE_EVENTS.c.attempts)
_FINISHED = (
    update(STRIPE_EVENTS)
    .where(_BY_ID)
    .values(
        status=bindparam("status"),
        attempts=STRIPE_EVENTS.c.attempts + 1,
        processed_at=bindparam("now"),
        last_error=None,
        next_attempt_at=None,
    )
)
_LEASED = (
    update(STRIPE_EVENTS)
    .where(_BY_ID)
    .values(status="processing", next_attempt_at=bindparam("lease_until"))
)
_MARK_FAILED = (
    update(STRIPE_EVENTS)
    .where(_BY_ID, STRIPE_EVENTS.c.status.not_in(_DONE))
    .values(status="failed", attempts=STRIPE_EVENTS.c.attempts + 1, last_error=bindparam("message"))
    .returning(STRIPE_EVENTS.c.attempts)
)
_BACK_OFF = update(STRIPE_EVENTS).where(_BY_ID).values(next_attempt_at=bindparam("retry_at"))


class ProcessMode(StrEnum):
    """Who asks for an event to be applied: a delivery, the retry job, or an operator."""

    DELIVERY = "delivery"
    RETRY = "retry"
    REPLAY = "replay"


class WebhookProcessingFailed(TollgateError):
    """A stored event could not be applied; Stripe should deliver it again."""

    type: ClassVar[str] = "webhook_processing_error"
    status: ClassVar[int] = 500


@dataclass(frozen=True)
class ReceiveResult:
    """A verified event as stored: `duplicate` when its id was already in the inbox."""

    event_id: str
    type: str
    duplicate: bool
    status: str

    @property
    def needs_processing(self) -> bool:
        return self.status not in _DONE


@dataclass(frozen=True)
class ProcessResult:
    """How applying one event ended.

    `outcome` is succeeded, ignored, duplicate (already applied), in_progress (another worker
    has it), not_due (a failed event waiting for its next attempt), failed, or pending (stored,
    not applied yet: see `apply_stripe_delivery`).
    """

    event_id: str
    outcome: str
    error: str | None = None
    changes: int = 0
    # The customers whose state the event changed (whose cached entitlements are stale).
    customers: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    @property
    def pending(self) -> bool:
        return self.outcome == "pending"


@dataclass(frozen=True)
class StoredEvent:
    """One row of the inbox, as operators see it."""

    id: str
    type: str
    status: str
    attempts: int
    created: datetime
    received_at: datetime
    last_error: str | None
    next_attempt_at: datetime | None


# -- receiving -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A delivery whose signature is checked: the event, and its inbox row as first stored."""

    event: dict[str, Any]
    stored: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.stored["id"])

    @property
    def stripe_customer(self) -> str:
        """Return the Stripe customer the event is about ("" if it does not say)."""
        obj = self.event["data"]["object"]
        customer = obj.get("customer")
        if isinstance(customer, dict):  # expanded
            customer = customer.get("id")
        if isinstance(customer, str):
            return customer
        own_id = obj.get("id")
        return own_id if obj.get("object") == "customer" and isinstance(own_id, str) else ""


def verify_stripe_delivery(
    *, raw_body: bytes, signature_header: str | None, settings: Settings, clock: Clock
) -> Delivery:
    """Check a delivery's signature and parse its event; raise InvalidWebhook. Stores nothing."""
    now = clock.now()
    event = _verified_event(raw_body, signature_header, settings, now)
    return Delivery(event, _inbox_row(event, raw_body, now))


def apply_stripe_delivery(
    *,
    db: Database,
    raw_body: bytes,
    signature_header: str | None,
    settings: Settings,
    clock: Clock,
) -> ProcessResult:
    """Verify a delivery, then store and apply it in one transaction; raise InvalidWebhook.

    A bad delivery stores nothing. A duplicate of an applied event answers `duplicate` and
    changes nothing. A failure leaves the event stored as failed, for Stripe and the retry job.
    `pending` means stored but not applied: it needs an object from Stripe, or an earlier
    delivery left it unapplied; finish it with `process_stripe_event`, which never runs here
    because it may wait for Stripe.
    """
    delivery = verify_stripe_delivery(
        raw_body=raw_body, signature_header=signature_header, settings=settings, clock=clock
    )
    return _apply_alone(db, delivery, delivery.stored["received_at"])


def apply_stripe_deliveries(
    *, db: Database, deliveries: Sequence[Delivery], clock: Clock
) -> list[ProcessResult]:
    """Store and apply verified deliveries in one transaction (group commit); a result each.

    One commit for many events: what limits a database's write rate is its commits (PostgreSQL
    waits for the disk at each). The events apply in the order given, each behind its object's
    watermark and its customer's lock, exactly as if each had a transaction of its own, and
    their answers wait for the shared commit. If anything raises in that transaction (an event
    needing an object from Stripe, a failing handler, a conflict with another process), it rolls
    back and each delivery runs alone, as `apply_stripe_delivery` runs it: so one bad event fails
    only itself, stored failed with its error.
    """
    if len(deliveries) == 1:
        return [_apply_alone(db, deliveries[0], clock.now())]
    now = clock.now()
    try:
        with db.write_connection() as connection:
            results = _store_and_apply_many(connection, db.dialect, deliveries, now)
    except Exception as error:  # each delivery alone, so only the one at fault fails
        log.debug("group of %d events applied one by one: %s", len(deliveries), error)
        return [_apply_alone(db, delivery, now) for delivery in deliveries]
    for result in results:
        if result.outcome in _DONE:
            WEBHOOK_EVENTS.labels(result.outcome).inc()
    return results


def _apply_alone(db: Database, delivery: Delivery, now: datetime) -> ProcessResult:
    """Store and apply one delivery in a transaction of its own; keep a failure on its row."""
    event, stored = delivery.event, delivery.stored
    handler = HANDLERS.get(event["type"])
    conflicts = 0
    while True:
        try:
            with db.write_connection() as connection:
                result = _store_and_apply(connection, db.dialect, event, stored, handler, now)
        except NeedsFetch:
            # Stripe must be asked first, and never inside a transaction: store the event for
            # the path that holds a lease while Stripe answers.
            with db.write_connection() as connection:
                _insert_new(connection, db.dialect, stored)
            return ProcessResult(stored["id"], "pending")
        except DBAPIError as error:
            conflicts += 1
            if _is_conflict(error) and conflicts <= MAX_CONFLICT_RETRIES:
                # Another transaction inserted the same new row first, or a deadlock was broken:
                # run again, and this time see what it committed.
                continue
            return _store_failed(db, stored, now, error)
        except Exception as error:  # every failure is kept on the row for the retry job
            return _store_failed(db, stored, now, error)
        if result.outcome in _DONE:
            WEBHOOK_EVENTS.labels(result.outcome).inc()
        return result


def _store_and_apply_many(
    connection: Connection,
    dialect: str,
    deliveries: Sequence[Delivery],
    now: datetime,
    fetched: dict[tuple[str, str], Any] | None = None,
    results: list[ProcessResult] | None = None,
) -> list[ProcessResult]:
    """Insert the events already marked done, in one statement, then apply the new ones.

    The results are appended to `results` (a new list by default) as each event is applied, so
    when one raises, the caller knows how many came before it.
    """
    handlers = [HANDLERS.get(delivery.event["type"]) for delivery in deliveries]
    rows = [
        _marked_done(delivery.stored, handler, now)
        for delivery, handler in zip(deliveries, handlers, strict=True)
    ]
    # Of ids given twice, the first is inserted and applied; the other answers as a duplicate.
    inserted = _insert_many_new(connection, dialect, rows)
    stored_before = [row["id"] for row in rows if row["id"] not in inserted]
    statuses: dict[str, str] = {}
    if stored_before:
        statuses = dict(connection.execute(_STATUSES, {"event_ids": stored_before}).all())
    shared = SharedWrites()
    results = [] if results is None else results
    for delivery, handler in zip(deliveries, handlers, strict=True):
        event_id = delivery.event_id
        if event_id not in inserted:
            status = statuses.get(event_id)
            results.append(ProcessResult(event_id, "duplicate" if status in _DONE else "pending"))
            continue
        inserted.discard(event_id)
        statuses[event_id] = "succeeded"  # a later copy in this group is its duplicate
        if handler is None:
            results.append(ProcessResult(event_id, "ignored"))
            continue
        event = delivery.event
        context = HandlerContext(
            connection=connection,
            event=event,
            now=now,
            fetched={} if fetched is None else fetched,
            shared=shared,
        )
        handler(context, event["data"]["object"])
        context.finish()
        results.append(_applied(context))
    shared.write(connection)
    return results


def _marked_done(stored: dict[str, Any], handler: Handler | None, now: datetime) -> dict[str, Any]:
    # Marked done at once: the row commits only together with the handler's effects.
    return {
        **stored,
        "status": "succeeded" if handler else "ignored",
        "attempts": 1 if handler else 0,
        "processed_at": now,
    }


def _applied(context: HandlerContext) -> ProcessResult:
    return ProcessResult(
        context.event_id,
        "succeeded",
        changes=context.changes,
        customers=tuple(sorted(context.touched)),
    )


def _store_and_apply(
    connection: Connection,
    dialect: str,
    event: dict[str, Any],
    stored: dict[str, Any],
    handler: Handler | None,
    now: datetime,
    fetched: dict[tuple[str, str], Any] | None = None,
) -> ProcessResult:
    """Insert the event already marked done and apply it; `pending` if stored but not done."""
    event_id = stored["id"]
    if not _insert_new(connection, dialect, _marked_done(stored, handler, now)):
        status = connection.scalar(_STATUS, {"event_id": event_id})
        return ProcessResult(event_id, "duplicate" if status in _DONE else "pending")
    if handler is None:
        return ProcessResult(event_id, "ignored")
    context = HandlerContext(
        connection=connection, event=event, now=now, fetched={} if fetched is None else fetched
    )
    handler(context, event["data"]["object"])
    context.finish()
    return _applied(context)


def receive_stripe_event(
    *,
    db: Database,
    raw_body: bytes,
    signature_header: str | None,
    settings: Settings,
    clock: Clock,
) -> ReceiveResult:
    """Verify a delivery and store it in the inbox once, without applying it."""
    now = clock.now()
    event = _verified_event(raw_body, signature_header, settings, now)
    stored = _inbox_row(event, raw_body, now)
    known = event["type"] in HANDLERS
    if not known:
        stored.update(status="ignored", processed_at=now)
    with db.write_connection() as connection:
        inserted = _insert_new(connection, db.dialect, stored)
        status = stored["status"]
        if not inserted:
            status = connection.scalar(_STATUS, {"event_id": stored["id"]}) or status
    if not known and inserted:
        WEBHOOK_EVENTS.labels("ignored").inc()
    return ReceiveResult(stored["id"], event["type"], duplicate=not inserted, status=status)


def _verified_event(
    raw_body: bytes, signature_header: str | None, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Return the delivery's event once its signature is checked; raise InvalidWebhook."""
    secrets = settings.stripe_webhook_secrets
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS: required to accept Stripe webhooks (whsec_…)")
    verify_signature(
        payload=raw_body,
        header=signature_header,
        secrets=secrets,
        tolerance_seconds=settings.webhook_tolerance_seconds,
        now=now,
    )
    return parse_event(raw_body)


def _inbox_row(event: dict[str, Any], raw_body: bytes, now: datetime) -> dict[str, Any]:
    """Return the inbox row for a verified event, as stored before it is applied."""
    obj = event["data"]["object"]
    return {
        "id": event["id"],
        "type": event["type"],
        "object_type": _short(obj.get("object"), 64),
        "object_id": _short(obj.get("id"), 255),
        "stripe_account": _short(event.get("account"), 255),
        "api_version": _short(event.get("api_version"), 64),
        "created": timestamp(event["created"]),
        "received_at": now,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "processed_at": None,
        # orjson accepted the body, so it is valid UTF-8.
        "payload": raw_body.decode("utf-8"),
    }


@cache
def _insert_if_new(dialect: str) -> Any:
    insert: Callable[..., Any] = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING, not rowcount, tells whether the row is new: rowcount is not reliable everywhere.
    return (
        insert(STRIPE_EVENTS)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(STRIPE_EVENTS.c.id)
    )


# PostgreSQL: a group's inbox rows as one array per column. The statement's text is the same
# for any number of rows, so psycopg parses it once and the server prepares it; a multi-row
# VALUES list would be a new statement for every group size, parsed each time (about 1 ms for
# a group of 8 events).
_INBOX_COLUMNS = (
    "id",
    "type",
    "object_type",
    "object_id",
    "stripe_account",
    "api_version",
    "created",
    "received_at",
    "status",
    "attempts",
    "last_error",
    "next_attempt_at",
    "processed_at",
    "payload",
)
# Arrays in binary (%b): text arrays in text form are escaped character by character.
_PG_INSERT_MANY_NEW = (
    "INSERT INTO stripe_events (id, type, object_type, object_id, stripe_account, api_version,"
    " created, received_at, status, attempts, last_error, next_attempt_at, processed_at, payload)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::integer[], %b::text[],"
    " %b::timestamptz[], %b::timestamptz[], %b::text[])"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _insert_many_new(
    connection: Connection, dialect: str, rows: Sequence[dict[str, Any]]
) -> set[str]:
    """Insert inbox rows whose event ids are not stored; return the ids inserted."""
    if dialect != "postgresql":
        return set(connection.execute(_insert_if_new(dialect), rows).scalars())
    columns = tuple([row[name] for row in rows] for name in _INBOX_COLUMNS)
    return {found for (found,) in connection.exec_driver_sql(_PG_INSERT_MANY_NEW, columns)}


def _insert_new(connection: Connection, dialect: str, row: dict[str, Any]) -> bool:
    """Insert an inbox row unless its event id is stored; return whether it was inserted."""
    return connection.execute(_insert_if_new(dialect), row).first() is not None


def _short(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _store_failed(
    db: Database, stored: dict[str, Any], now: datetime, error: BaseException
) -> ProcessResult:
    """Store an event whose first application failed, as failed, in a transaction of its own."""
    event_id = stored["id"]
    message = describe_error(error)
    log.warning("stripe event %s failed: %s", event_id, message)
    failed = {
        **stored,
        "status": "failed",
        "attempts": 1,
        "last_error": message,
        "next_attempt_at": now + retry_delay(1),
    }
    with db.write_connection() as connection:
        if not _insert_new(connection, db.dialect, failed):
            # Another delivery stored it meanwhile: count this failure there, unless applied.
            _mark_failed(connection, event_id, message, now)
    WEBHOOK_EVENTS.labels("failed").inc()
    return ProcessResult(event_id, "failed", error=message)


# -- processing ------------------------------------------------------------------------------


def process_stripe_event(
    *,
    db: Database,
    gateway: StripeGateway | None,
    event_id: str,
    clock: Clock,
    mode: ProcessMode = ProcessMode.DELIVERY,
) -> ProcessResult:
    """Apply one stored event to the mirror exactly once, or leave it failed with its error."""
    fetched: dict[tuple[str, str], Any] = {}
    owned = False
    conflicts = 0
    rounds = 0
    while True:
        try:
            with db.write_connection() as connection:
                result = _process_once(
                    connection, db.dialect, event_id, clock.now(), fetched, mode, owned
                )
            WEBHOOK_EVENTS.labels(result.outcome).inc()
            return result
        except NeedsFetch as need:
            rounds += 1
            if rounds >= MAX_FETCH_ROUNDS:
                return _fail(
                    db, event_id, clock, RuntimeError("too many objects needed from Stripe")
                )
            # Hold a lease while Stripe answers, so another delivery does not fetch too.
            if not owned:
                refusal = _take_lease(db, event_id, clock.now(), mode)
                if refusal:
                    return ProcessResult(event_id, refusal)
            owned = True
            try:
                fetched[need.key] = _fetch(gateway, need)
            except Exception as error:  # a failure to reach Stripe fails the event, for a retry
                return _fail(db, event_id, clock, error)
        except NotFound:
            raise
        except DBAPIError as error:
            conflicts += 1
            if _is_conflict(error) and conflicts <= MAX_CONFLICT_RETRIES:
                continue
            return _fail(db, event_id, clock, error)
        except Exception as error:  # every failure is kept on the row for the retry job
            return _fail(db, event_id, clock, error)


def _process_once(
    connection: Connection,
    dialect: str,
    event_id: str,
    now: datetime,
    fetched: dict[tuple[str, str], Any],
    mode: ProcessMode,
    owned: bool,
) -> ProcessResult:
    # The lease holder waits: whoever holds the row now only reads it to refuse, and a holder
    # that skipped it would leave its own event processing until the lease ran out.
    row = _claim(connection, dialect, event_id, wait=owned)
    if row is None:
        if connection.scalar(_STATUS, {"event_id": event_id}) is None:
            raise NotFound(f"no stored Stripe event {event_id}")
        return ProcessResult(event_id, "in_progress")
    refusal = _refusal(row, now, mode, owned)
    if refusal:
        return ProcessResult(event_id, refusal)
    handler = HANDLERS.get(row["type"])
    result = ProcessResult(event_id, "ignored")
    if handler is not None:
        event = orjson.loads(row["payload"])
        context = HandlerContext(connection=connection, event=event, now=now, fetched=fetched)
        handler(context, event["data"]["object"])
        context.finish()
        result = _applied(context)
    connection.execute(_FINISHED, {"event_id": event_id, "status": result.outcome, "now": now})
    return result


def _claim(
    connection: Connection, dialect: str, event_id: str, *, wait: bool = False
) -> Mapping[Any, Any] | None:
    """Lock the inbox row for this transaction; None if another worker holds it and not `wait`."""
    key = {"event_id": event_id}
    if dialect == "postgresql":
        query = _ROW_FOR_UPDATE if wait else _ROW_FOR_UPDATE_SKIP_LOCKED
        return connection.execute(query, key).mappings().first()
    # SQLite: writing first takes the database's write lock before the status is read, so
    # two transactions never both see "pending" (a read-then-write transaction could).
    connection.execute(_TAKE_WRITE_LOCK, key)
    return connection.execute(_ROW, key).mappings().first()


def _refusal(row: Mapping[str, Any], now: datetime, mode: ProcessMode, owned: bool) -> str | None:
    """Return why this row is not to be applied now, or None to apply it."""
    status, next_attempt_at = row["status"], row["next_attempt_at"]
    if status in _DONE and mode is not ProcessMode.REPLAY:
        return "duplicate"
    leased = next_attempt_at is not None and next_attempt_at > now
    if status == "processing" and leased and not owned:
        return "in_progress"
    if status == "failed" and mode is ProcessMode.RETRY and leased:
        return "not_due"
    return None


def _take_lease(db: Database, event_id: str, now: datetime, mode: ProcessMode) -> str | None:
    """Mark the event processing for LEASE; return why not (e.g. another worker has it)."""
    with db.write_connection() as connection:
        # Wait for a worker holding the row rather than skip it: it may be rolling back to fetch
        # as this one is, and two workers that skipped each other would both walk away.
        row = _claim(connection, db.dialect, event_id, wait=True)
        if row is None:
            return "in_progress"
        refusal = _refusal(row, now, mode, owned=False)
        if refusal:
            return refusal
        connection.execute(_LEASED, {"event_id": event_id, "lease_until": now + LEASE})
        return None


_FETCHERS: dict[str, Callable[[StripeGateway, str], Any]] = {
    "customer": StripeGateway.retrieve_customer,
    "subscription": StripeGateway.retrieve_subscription,
    "invoice": StripeGateway.retrieve_invoice,
    "charge": StripeGateway.retrieve_charge,
    "dispute": StripeGateway.retrieve_dispute,
    "refunds": StripeGateway.list_refunds,
}


def _fetch(gateway: StripeGateway | None, need: NeedsFetch) -> Any:
    """Fetch what a handler asked for, outside any transaction; None if Stripe lacks it."""
    if gateway is None:
        raise ConfigError(
            f"STRIPE_SECRET_KEY: needed to fetch {need.object_type} {need.object_id} from Stripe"
        )
    target = gateway.for_account(need.account) if need.account else gateway
    STRIPE_REFETCHES.labels(need.object_type, need.reason).inc()
    try:
        return _FETCHERS[need.object_type](target, need.object_id)
    except StripeNotFound:
        return None


def _is_conflict(error: DBAPIError) -> bool:
    """Return whether running the transaction again may succeed."""
    if isinstance(error, IntegrityError) or error.connection_invalidated:
        # Another transaction inserted the same row first; or the connection died (say, the
        # database restarted) and the next transaction gets a fresh one.
        return True
    return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _fail(db: Database, event_id: str, clock: Clock, error: BaseException) -> ProcessResult:
    """Mark the event failed with its error and when to try again, in a transaction of its own."""
    message = describe_error(error)
    log.warning("stripe event %s failed: %s", event_id, message)
    with db.write_connection() as connection:
        _mark_failed(connection, event_id, message, clock.now())
    WEBHOOK_EVENTS.labels("failed").inc()
    return ProcessResult(event_id, "failed", error=message)


def _mark_failed(connection: Connection, event_id: str, message: str, now: datetime) -> None:
    """Mark a stored event failed (unless it was applied meanwhile) and set its next attempt."""
    attempts = connection.scalar(_MARK_FAILED, {"event_id": event_id, "message": message})
    if attempts is not None:
        retry_at = now + retry_delay(attempts)
        connection.execute(_BACK_OFF, {"event_id": event_id, "retry_at": retry_at})


def describe_error(error: BaseException) -> str:
    """Return one line about the error for `last_error`: no SQL, no parameters, no secrets."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        text = f"{type(error.orig).__name__}: {error.orig}"
    elif isinstance(error, TollgateError):
        text = f"{type(error).__name__}: {error.message}"
    else:
        text = f"{type(error).__name__}: {error}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return _SECRET_TEXT.sub("[redacted]", first_line)[:MAX_ERROR_CHARS]


# -- operators and the retry job ---------------------------------------------------------------


def due_stripe_events(*, db: Database, clock: Clock, limit: int = 100) -> list[str]:
    """Return the ids of events to try again: failed and due, or stuck for over 5 minutes."""
    now = clock.now()
    with db.transaction() as session:
        return list(
            session.scalars(
                select(StripeEvent.id)
                .where(
                    or_(
                        and_(StripeEvent.status == "failed", StripeEvent.next_attempt_at <= now),
                        and_(
                            StripeEvent.status == "processing",
                            StripeEvent.next_attempt_at <= now,
                        ),
                        and_(
                            StripeEvent.status == "pending",
                            StripeEvent.received_at <= now - STUCK_AFTER,
                        ),
                    )
                )
                .order_by(StripeEvent.created, StripeEvent.id)
                .limit(limit)
            )
        )


def list_stripe_events(
    *, db: Database, status: str | None = None, limit: int = 50
) -> list[StoredEvent]:
    """Return stored events, newest first, optionally only those with `status`."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    query = select(StripeEvent).order_by(
        StripeEvent.created.desc(), StripeEvent.received_at.desc(), StripeEvent.id.desc()
    )
    if status is not None:
        query = query.where(StripeEvent.status == status)
    with db.transaction() as session:
        return [
            StoredEvent(
                id=row.id,
                type=row.type,
                status=row.status,
                attempts=row.attempts,
                created=row.created,
                received_at=row.received_at,
                last_error=row.last_error,
                next_attempt_at=row.next_attempt_at,
            )
            for row in session.scalars(query.limit(max(1, limit)))
        ]


def replay_stripe_event(
    *, db: Database, gateway: StripeGateway | None, event_id: str, clock: Clock
) -> ProcessResult:
    """Apply a stored event again, whatever its status; the watermark keeps this harmless."""
    return process_stripe_event(
        db=db, gateway=gateway, event_id=event_id, clock=clock, mode=ProcessMode.REPLAY
    )


# -- events Tollgate builds itself (reconciliation) ---------------------------------------------


def apply_built_events(
    *,
    db: Database,
    gateway: StripeGateway | None,
    events: list[dict[str, Any]],
    clock: Clock,
    fetched: dict[tuple[str, str], Any] | None = None,
) -> list[ProcessResult]:
    """Store and apply events Tollgate built itself, many to a transaction; one result each.

    Each event is stored already applied in the transaction that applies it, as a delivery is.
    When one raises, the transaction rolls back and the events before it commit in one of their
    own. An event that needs an object from Stripe gets it fetched outside any transaction, then
    goes on with the rest; one that fails is left to `process_stripe_event` alone, so it keeps
    its error and its retries and fails no other event. `fetched` holds objects the caller
    read from Stripe already, keyed as `NeedsFetch.key`.
    """
    now = clock.now()
    fetched = {} if fetched is None else fetched
    results: list[ProcessResult] = []
    pending = [Delivery(event, _inbox_row(event, orjson.dumps(event), now)) for event in events]
    take = len(pending)
    rounds = conflicts = 0
    while pending:
        applied: list[ProcessResult] = []
        try:
            with db.write_connection() as connection:
                _store_and_apply_many(connection, db.dialect, pending[:take], now, fetched, applied)
        except Exception as error:
            if 0 < len(applied) < take:
                take = len(applied)  # the events before the one that raised go first
                continue
            retry = False
            if isinstance(error, NeedsFetch) and rounds < MAX_FETCH_ROUNDS:
                rounds += 1
                try:
                    fetched[error.key] = _fetch(gateway, error)
                except Exception:  # Stripe failed: the event's own path records why
                    retry = False
                else:
                    retry = True
            elif isinstance(error, DBAPIError) and _is_conflict(error):
                conflicts += 1
                retry = conflicts <= MAX_CONFLICT_RETRIES
            if not retry:
                results.append(_apply_built_alone(db, gateway, pending[0], clock))
                pending = pending[1:]
                take, rounds, conflicts = len(pending), 0, 0
            continue
        for result in applied:
            if result.pending:
                result = process_stripe_event(
                    db=db, gateway=gateway, event_id=result.event_id, clock=clock
                )
            elif result.outcome in _DONE:
                WEBHOOK_EVENTS.labels(result.outcome).inc()
            results.append(result)
        pending = pending[len(applied) :]
        take, rounds, conflicts = len(pending), 0, 0
    return results


def _apply_built_alone(
    db: Database, gateway: StripeGateway | None, delivery: Delivery, clock: Clock
) -> ProcessResult:
    """Store one event pending, then apply it on the path that keeps its failure for a retry."""
    with db.write_connection() as connection:
        _insert_new(connection, db.dialect, delivery.stored)
    return process_stripe_event(db=db, gateway=gateway, event_id=delivery.event_id, clock=clock)
