"""Stripe webhooks: store each event once (persist first), then apply it exactly once.

`receive_stripe_event` checks the signature and inserts the raw event into the inbox with
`INSERT … ON CONFLICT DO NOTHING`, so a concurrent duplicate never raises. `process_stripe_event`
claims the inbox row and runs the event's handler in one transaction. It writes the mirror, the
audit rows, the customers' `state_version` and the row's final status together. If the handler
fails, that transaction rolls back and a second one marks the row failed with its error and a
backoff.

Claiming: on PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED`, so a second worker on the same event
moves on at once. On SQLite the transaction's first statement is a write, so it holds the
database's single write lock before it reads the row's status. Either way, only one transaction
at a time decides whether an event still needs applying.

Inbox statuses: pending (stored, not applied yet); processing (a worker is fetching an object
from Stripe for it, under a 5-minute lease); succeeded; failed (with last_error and
next_attempt_at); ignored (a type Tollgate has no handler for).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

import orjson
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from tollgate.clock import Clock
from tollgate.config import ConfigError, Settings
from tollgate.db.models import StripeEvent
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import InvalidRequest, NotFound, TollgateError
from tollgate.domain.events import retry_delay
from tollgate.metrics import STRIPE_REFETCHES, WEBHOOK_EVENTS
from tollgate.services.webhook_handlers import HANDLERS, HandlerContext, NeedsFetch
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
    has it), not_due (a failed event waiting for its next attempt) or failed.
    """

    event_id: str
    outcome: str
    error: str | None = None
    changes: int = 0

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


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


def receive_stripe_event(
    *,
    db: Database,
    raw_body: bytes,
    signature_header: str | None,
    settings: Settings,
    clock: Clock,
) -> ReceiveResult:
    """Verify a delivery and store it in the inbox once; raise InvalidWebhook and store nothing."""
    secrets = settings.stripe_webhook_secrets
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS: required to accept Stripe webhooks (whsec_…)")
    now = clock.now()
    verify_signature(
        payload=raw_body,
        header=signature_header,
        secrets=secrets,
        tolerance_seconds=settings.webhook_tolerance_seconds,
        now=now,
    )
    event = parse_event(raw_body)
    obj = event["data"]["object"]
    known = event["type"] in HANDLERS
    status = "pending" if known else "ignored"
    values: dict[str, Any] = {
        "id": event["id"],
        "type": event["type"],
        "object_type": _short(obj.get("object"), 64),
        "object_id": _short(obj.get("id"), 255),
        "stripe_account": _short(event.get("account"), 255),
        "api_version": _short(event.get("api_version"), 64),
        "created": timestamp(event["created"]),
        "received_at": now,
        "status": status,
        "attempts": 0,
        "processed_at": None if known else now,
        # orjson accepted the body, so it is valid UTF-8.
        "payload": raw_body.decode("utf-8"),
    }
    insert = _insert(db.dialect)(StripeEvent).values(**values)
    with db.write_transaction() as session:
        # RETURNING, not rowcount: the ORM's insert does not report rowcount on every driver.
        inserted = (
            session.execute(
                insert.on_conflict_do_nothing(index_elements=["id"]).returning(StripeEvent.id)
            ).first()
            is not None
        )
        if not inserted:
            stored = session.scalar(select(StripeEvent.status).where(StripeEvent.id == event["id"]))
            status = stored or status
    if not known and inserted:
        WEBHOOK_EVENTS.labels("ignored").inc()
    return ReceiveResult(event["id"], event["type"], duplicate=not inserted, status=status)


def _insert(dialect: str) -> Callable[..., Any]:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _short(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


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
            with db.write_transaction() as session:
                result = _process_once(
                    session, db.dialect, event_id, clock.now(), fetched, mode, owned
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
                # Another transaction inserted the same new row first, or a deadlock was broken:
                # run again, and this time see what it committed.
                continue
            return _fail(db, event_id, clock, error)
        except Exception as error:  # every failure is kept on the row for the retry job
            return _fail(db, event_id, clock, error)


def _process_once(
    session: Session,
    dialect: str,
    event_id: str,
    now: datetime,
    fetched: dict[tuple[str, str], Any],
    mode: ProcessMode,
    owned: bool,
) -> ProcessResult:
    # The lease holder waits: whoever holds the row now only reads it to refuse, and a holder
    # that skipped it would leave its own event processing until the lease ran out.
    row = _claim(session, dialect, event_id, wait=owned)
    if row is None:
        exists = session.scalar(select(StripeEvent.id).where(StripeEvent.id == event_id))
        if exists is None:
            raise NotFound(f"no stored Stripe event {event_id}")
        return ProcessResult(event_id, "in_progress")
    refusal = _refusal(row, now, mode, owned)
    if refusal:
        return ProcessResult(event_id, refusal)
    handler = HANDLERS.get(row.type)
    row.attempts += 1
    row.processed_at = now
    row.last_error = None
    row.next_attempt_at = None
    if handler is None:
        row.status = "ignored"
        return ProcessResult(event_id, "ignored")
    event = orjson.loads(row.payload)
    context = HandlerContext(session=session, event=event, now=now, fetched=fetched)
    handler(context, event["data"]["object"])
    context.finish()
    row.status = "succeeded"
    return ProcessResult(event_id, "succeeded", changes=context.changes)


def _claim(
    session: Session, dialect: str, event_id: str, *, wait: bool = False
) -> StripeEvent | None:
    """Lock the inbox row for this transaction; None if another worker holds it and not `wait`."""
    if dialect == "postgresql":
        return session.scalars(
            select(StripeEvent)
            .where(StripeEvent.id == event_id)
            .with_for_update(skip_locked=not wait)
        ).first()
    # SQLite: writing first takes the database's write lock before the status is read, so
    # two transactions never both see "pending" (a read-then-write transaction could).
    session.execute(
        update(StripeEvent)
        .where(StripeEvent.id == event_id)
        .values(attempts=StripeEvent.attempts)
        .execution_options(synchronize_session=False)
    )
    return session.get(StripeEvent, event_id)


def _refusal(row: StripeEvent, now: datetime, mode: ProcessMode, owned: bool) -> str | None:
    """Return why this row is not to be applied now, or None to apply it."""
    if row.status in _DONE and mode is not ProcessMode.REPLAY:
        return "duplicate"
    leased = row.next_attempt_at is not None and row.next_attempt_at > now
    if row.status == "processing" and leased and not owned:
        return "in_progress"
    if row.status == "failed" and mode is ProcessMode.RETRY and leased:
        return "not_due"
    return None


def _take_lease(db: Database, event_id: str, now: datetime, mode: ProcessMode) -> str | None:
    """Mark the event processing for LEASE; return why not (e.g. another worker has it)."""
    with db.write_transaction() as session:
        # Wait for a worker holding the row rather than skip it: it may be rolling back to fetch
        # as this one is, and two workers that skipped each other would both walk away.
        row = _claim(session, db.dialect, event_id, wait=True)
        if row is None:
            return "in_progress"
        refusal = _refusal(row, now, mode, owned=False)
        if refusal:
            return refusal
        row.status = "processing"
        row.next_attempt_at = now + LEASE
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
    if isinstance(error, IntegrityError):
        return True
    return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _fail(db: Database, event_id: str, clock: Clock, error: BaseException) -> ProcessResult:
    """Mark the event failed with its error and when to try again, in a transaction of its own."""
    message = describe_error(error)
    now = clock.now()
    log.warning("stripe event %s failed: %s", event_id, message)
    with db.write_transaction() as session:
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id, StripeEvent.status.not_in(_DONE))
            .values(status="failed", attempts=StripeEvent.attempts + 1, last_error=message)
            .execution_options(synchronize_session=False)
        )
        row = session.get(StripeEvent, event_id)
        if row is not None and row.status == "failed":
            row.next_attempt_at = now + retry_delay(row.attempts)
    WEBHOOK_EVENTS.labels("failed").inc()
    return ProcessResult(event_id, "failed", error=message)


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
