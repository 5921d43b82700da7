"""Stripe events: stored once in the inbox (persist first), then applied exactly once.

Two ways in:

- `apply_stripe_deliveries` takes verified deliveries (one, or a group that arrived together)
  and applies them in as few transactions as it can. Each transaction inserts the events' inbox
  rows already marked done (`INSERT … ON CONFLICT DO NOTHING`), runs each new event's handler in
  turn, writes their audit rows, `state_version` bumps and change-feed rows once, and commits the
  mirror and the inbox rows together: either both are there or neither is. A duplicate whose row
  is already applied changes nothing. When an event raises, the transaction rolls back, the
  events before it commit in one of their own, and it goes on alone: a failure is stored failed
  with its error and a backoff (for Stripe's retry and the retry job), so one bad event fails no
  other. `apply_built_events` does the same for events Tollgate builds (reconciliation).
- `process_stripe_event` applies one stored event: an event that needs an object from Stripe, a
  redelivery of one stored but not applied, the retry job, `tollgate events replay`. It claims
  the row, holds a lease while Stripe answers (outside any transaction), and applies it.

An object a handler needs from Stripe is fetched once: the `NeedsFetch` that rolled the first
attempt back travels with the pending result into `process_stripe_event`, which fetches it
before applying the event again.

Inbox statuses: pending (stored, not applied yet); processing (a worker is fetching an object
from Stripe for it, under a 5-minute lease); succeeded; failed (with last_error and
next_attempt_at); ignored (a type Tollgate has no handler for).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from tollgate.clock import Clock
from tollgate.config import ConfigError, Settings
from tollgate.db.queries import mirror
from tollgate.db.queries import stripe_events as inbox
from tollgate.db.tables import SUBSCRIPTIONS
from tollgate.db.unit_of_work import Database
from tollgate.domain.dunning import DunningPolicy
from tollgate.domain.errors import InvalidRequest, NotFound, TollgateError
from tollgate.domain.events import retry_delay
from tollgate.metrics import STRIPE_REFETCHES, WEBHOOK_EVENTS
from tollgate.services.webhooks.context import (
    Fetched,
    GroupWrites,
    HandlerContext,
    NeedsFetch,
)
from tollgate.services.webhooks.handlers import HANDLERS, forget_read_ahead, read_ahead
from tollgate.stripe.errors import StripeNotFound
from tollgate.stripe.gateway import CURRENT_OBJECTS, PINNED_API_VERSION, StripeGateway
from tollgate.stripe.signatures import parse_event, verify_signature
from tollgate.stripe.translate import timestamp
from tollgate.tracing import span, tracing

log = logging.getLogger("tollgate.webhooks")

LEASE = timedelta(minutes=5)
STUCK_AFTER = timedelta(minutes=5)
# Each round may ask Stripe for one object (the customer, then the subscription, …).
MAX_FETCH_ROUNDS = 6
MAX_CONFLICT_RETRIES = 3
MAX_ERROR_CHARS = 1000
STATUSES = ("pending", "processing", "succeeded", "failed", "ignored")
_DONE = inbox.DONE
# PostgreSQL's serialization failure and deadlock: the transaction can simply run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
_SECRET_TEXT = re.compile(
    r"\b(?:(?:sk|rk|pk)_(?:test|live)_|whsec_|tg_(?:read|write)_)[A-Za-z0-9_\-]+"
)


# Each outcome's counter, kept: a label lookup takes a lock, and every event counts one.
_COUNTERS: dict[str, Any] = {}


def _count(outcome: str, events: int = 1) -> None:
    """Count events' outcome in tollgate_webhook_events_total."""
    counter = _COUNTERS.get(outcome)
    if counter is None:
        counter = _COUNTERS[outcome] = WEBHOOK_EVENTS.labels(outcome)
    counter.inc(events)


class ProcessMode(StrEnum):
    """Who asks for an event to be applied: a delivery, the retry job, or an operator."""

    DELIVERY = "delivery"
    RETRY = "retry"
    REPLAY = "replay"


class WebhookProcessingFailed(TollgateError):
    """A stored event could not be applied; Stripe should deliver it again."""

    type: ClassVar[str] = "webhook_processing_error"
    status: ClassVar[int] = 500


class ProcessResult(NamedTuple):
    """How applying one event ended (a named tuple: one is made for every event).

    `outcome` is succeeded, ignored, duplicate (already applied), in_progress (another worker
    has it), not_due (a failed event waiting for its next attempt), failed, or pending (stored,
    not applied yet: finish it with `process_stripe_event`, passing `need` when it is set).
    """

    event_id: str
    outcome: str
    error: str | None = None
    changes: int = 0
    # The customers whose state the event changed (whose cached entitlements are stale).
    customers: tuple[str, ...] = ()
    # What a pending event needs from Stripe before it can be applied, when that is known.
    need: NeedsFetch | None = None
    # A pending event stored under this process's lease (`process_stripe_event(leased=True)`).
    leased: bool = False
    # A pending event as parsed on arrival, for `process_stripe_event(event=...)`: its stored
    # payload need not be read back and parsed again.
    event: dict[str, Any] | None = None

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
    # Whose event it is: the app's customer id, or Stripe's `cus_` id for a customer Tollgate
    # does not know; None for an event about no customer.
    customer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "customer": self.customer,
            "status": self.status,
            "attempts": self.attempts,
            "created": self.created.isoformat(),
            "received_at": self.received_at.isoformat(),
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


# -- receiving -------------------------------------------------------------------------------


class Delivery(NamedTuple):
    """An event to store and apply, its inbox row as first stored, and its id (a named tuple:
    one is made for every delivery)."""

    event: dict[str, Any]
    stored: dict[str, Any]
    event_id: str


def _delivery(event: dict[str, Any], raw_body: bytes, now: datetime) -> Delivery:
    """Return the delivery of an event whose body is `raw_body`, received at `now`."""
    return Delivery(event, _inbox_row(event, raw_body, now), str(event["id"]))


def verify_stripe_delivery(
    *, raw_body: bytes, signature_header: str | None, settings: Settings, clock: Clock
) -> Delivery:
    """Check a delivery's signature and parse its event; raise InvalidWebhook. Stores nothing."""
    secrets = settings.stripe_webhook_secrets
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS: required to accept Stripe webhooks (whsec_…)")
    # Stripe signs with its real time, a test clock's events too: `tollgate dev` moves Tollgate's
    # clock ahead with the test clock, and every delivery after that would be "too old".
    verify_signature(
        payload=raw_body,
        header=signature_header,
        secrets=secrets,
        tolerance_seconds=settings.webhook_tolerance_seconds,
        now=clock.wall(),
    )
    now = clock.now()
    return _delivery(parse_event(raw_body), raw_body, now)


def _inbox_row(event: dict[str, Any], raw_body: bytes, now: datetime) -> dict[str, Any]:
    """Return the inbox row for an event, as stored before it is applied."""
    obj = event["data"]["object"]
    object_type, object_id = obj.get("object"), obj.get("id")
    account, api_version = event.get("account"), event.get("api_version")
    # Each kept only when text, and cut to its column (inline: one event a delivery).
    return {
        "id": event["id"],
        "type": event["type"],
        "object_type": object_type[:64] if type(object_type) is str else None,
        "object_id": object_id[:255] if type(object_id) is str else None,
        "stripe_account": account[:255] if type(account) is str else None,
        "api_version": api_version[:64] if type(api_version) is str else None,
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


# -- applying events as they arrive ------------------------------------------------------------

# Fetches what a handler needs from Stripe, outside any transaction.
Fetch = Callable[[NeedsFetch], Fetched]


def apply_stripe_deliveries(
    *, db: Database, deliveries: Sequence[Delivery], clock: Clock, dunning: DunningPolicy
) -> list[ProcessResult]:
    """Store and apply verified deliveries in as few transactions as possible; a result each.

    One commit for many events: what limits a database's write rate is its commits (PostgreSQL
    waits for the disk at each). The events apply in the order given, each behind its object's
    watermark and its customer's lock, exactly as if each had a transaction of its own, and
    their answers wait for the shared commit. This never calls Stripe: an event that needs an
    object from Stripe is stored pending, its result carrying what it needs.
    """
    with span("webhooks apply", {"tollgate.events": len(deliveries)}):
        return _apply_in_groups(db, deliveries, clock.now(), dunning, fetched={}, fetch=None)


def apply_built_events(
    *,
    db: Database,
    gateway: StripeGateway | None,
    events: list[dict[str, Any]],
    clock: Clock,
    dunning: DunningPolicy,
    fetched: dict[tuple[str, str], Any] | None = None,
) -> list[ProcessResult]:
    """Store and apply events Tollgate built itself (reconciliation), as deliveries are applied.

    An object one needs from Stripe is fetched at once and its event applied again. `fetched`
    holds objects the caller read from Stripe already, keyed as `NeedsFetch.key`.
    """
    now = clock.now()
    deliveries = [_delivery(event, orjson.dumps(event), now) for event in events]
    results = _apply_in_groups(
        db,
        deliveries,
        now,
        dunning,
        fetched={
            key: value if isinstance(value, Fetched) else Fetched(value)
            for key, value in (fetched or {}).items()
        },
        fetch=lambda need: _fetch(gateway, need),
    )
    return [
        process_stripe_event(
            db=db,
            gateway=gateway,
            event_id=result.event_id,
            clock=clock,
            dunning=dunning,
            need=result.need,
            leased=result.leased,
            event=result.event,
        )
        if result.pending
        else result
        for result in results
    ]


Watermark = tuple[int, str]  # a mirror row's watermark: the event's `created` second and id


def mirrored_watermark(db: Database, subscription_id: str) -> Watermark | None:
    """Return the watermark of the subscription's mirror row (None: no row), read before a
    write to Stripe, for `apply_stripe_answer`."""
    with db.engine.connect() as connection:
        return mirror.watermark_of(connection, SUBSCRIPTIONS, subscription_id)


def apply_stripe_answer(
    *,
    db: Database,
    gateway: StripeGateway,
    subscription: Mapping[str, Any],
    before: Watermark | None,
    account: str | None,
    clock: Clock,
    dunning: DunningPolicy,
) -> None:
    """Apply the subscription Stripe answered a write with (a new plan, seats, a cancel) to the
    mirror now, so the app's next check follows the change instead of waiting for the webhook.

    `before` is the mirror row's watermark as read before the write (None: no row then). The
    answer goes in as the `customer.subscription.updated` Tollgate builds for it (id
    `api:<subscription>:<random>`, `tollgate_actor` `api`), through the handlers, so the audit,
    `state_version` and the change feed follow as for a delivery. The event tells nobody
    anything: it has no `previous_attributes`, so no email or app webhook is queued. Stripe's own
    events for the change queue those when they arrive, applied or skipped as equal (a skipped
    snapshot still runs its notices).

    Its `created` is the second `before` holds (a new subscription's: the second Stripe made it),
    never later than Stripe's events for the change, so none of them is taken for older. Where
    the row is still the one read before the write, the answer is newer than it and replaces it
    without asking Stripe again; a row that moved past that second meanwhile wins; one that
    changed within the second is settled by reading the subscription from Stripe, as for any two
    events of one second.
    """
    subscription_id = str(subscription["id"])
    obj = dict(subscription)
    invoice = obj.get("latest_invoice")
    if isinstance(invoice, Mapping):  # expanded in the answer; an event names it by id
        obj["latest_invoice"] = invoice.get("id")
    event: dict[str, Any] = {
        "id": f"api:{subscription_id}:{secrets.token_hex(6)}",
        "object": "event",
        "type": "customer.subscription.updated",
        "created": before[0] if before is not None else int(obj.get("created") or 0),
        "api_version": PINNED_API_VERSION,
        "livemode": bool(obj.get("livemode")),
        "data": {"object": obj},
        "tollgate_actor": "api",
    }
    if account:
        event["account"] = account
    held = Fetched(obj, over=before[1] if before is not None else "")
    try:
        [result] = apply_built_events(
            db=db,
            gateway=gateway,
            events=[event],
            clock=clock,
            dunning=dunning,
            fetched={("subscription", subscription_id): held},
        )
        error = result.error if result.failed else None
    except Exception as raised:  # a Stripe read the event needed failed, say
        error = describe_error(raised)
    if error is not None:
        # Stripe made the change, so the request that made it succeeds; Stripe's webhook brings
        # the change to the mirror, as before the answer was applied (the event stays stored,
        # failed or pending, for the retry job).
        log.warning("could not apply Stripe's answer for %s: %s", subscription_id, error)


def _apply_in_groups(
    db: Database,
    deliveries: Sequence[Delivery],
    now: datetime,
    dunning: DunningPolicy,
    *,
    fetched: dict[tuple[str, str], Fetched],
    fetch: Fetch | None,
) -> list[ProcessResult]:
    """Apply the deliveries, a transaction for as many of them as go through together.

    When one raises, the events before it commit first; then it runs at the front of the rest,
    which is as good as alone: it fails by itself (stored failed), needs an object (fetched
    with `fetch`, or stored pending without), or meets a conflict (run again).
    """
    results: list[ProcessResult] = []
    pending = list(deliveries)
    take = len(pending)
    needs: dict[str, NeedsFetch] = {}  # what a delivery is known to need from Stripe
    conflicts = rounds = 0
    while pending:
        front = pending[0]
        need = needs.pop(front.event_id, None)
        if need is not None:
            if fetch is None or rounds >= MAX_FETCH_ROUNDS:
                results.append(_store_pending(db, front, need, now))
                pending, take = pending[1:], len(pending) - 1
                continue
            rounds += 1
            try:
                fetched[need.key] = fetch(need)
            except Exception:  # Stripe failed: the stored event's own path records why
                results.append(_store_pending(db, front, need, now))
                pending, take = pending[1:], len(pending) - 1
                continue
        applied: list[ProcessResult] = []
        try:
            with db.write_connection() as connection:
                _store_and_apply(
                    connection, pending[:take], now, dunning, fetched, applied, park=fetch is None
                )
        except Exception as error:
            raised_at = len(applied)  # `take` when it failed after its last event
            if isinstance(error, NeedsFetch):
                needs[pending[raised_at].event_id] = error
            if take > 1 and raised_at > 0:
                # Those before the one that raised go first; a group that failed after its
                # last event (at the shared writes or the commit) goes one event at a time.
                take = raised_at if raised_at < take else 1
                continue
            if isinstance(error, NeedsFetch):
                continue
            if isinstance(error, DBAPIError) and _is_conflict(error):
                conflicts += 1
                if conflicts <= MAX_CONFLICT_RETRIES:
                    # Another transaction inserted the same new row first, or a deadlock was
                    # broken: run again, and this time see what it committed.
                    continue
            results.append(_store_failed(db, front, now, error))
            pending, take, conflicts, rounds = pending[1:], len(pending) - 1, 0, 0
            continue
        # Counted once per outcome for the group: each count takes the counter's lock.
        done: dict[str, int] = {}
        for result in applied:
            if result.outcome in _DONE:
                done[result.outcome] = done.get(result.outcome, 0) + 1
        for outcome, events in done.items():
            _count(outcome, events)
        results.extend(applied)
        pending = pending[len(applied) :]
        take, conflicts, rounds = len(pending), 0, 0
    return results


def _store_and_apply(
    connection: Connection,
    deliveries: Sequence[Delivery],
    now: datetime,
    dunning: DunningPolicy,
    fetched: dict[tuple[str, str], Fetched],
    results: list[ProcessResult],
    *,
    park: bool = False,
) -> None:
    """Insert the events already marked done, in one statement, then apply the new ones.

    The results are appended to `results` as each event is applied, so when one raises, the
    caller knows how many came before it. With `park`, an event that needs an object from
    Stripe before anything of it reached the database is parked instead of raising: marked
    processing under this worker's lease, its result pending, and the group goes on.
    """
    rows = [_marked_done(delivery, now) for delivery in deliveries]
    group = GroupWrites()
    lone = len(rows) == 1 and connection.dialect.name == "postgresql"
    if lone:
        # A lone delivery on PostgreSQL: its inbox insert goes in the round trip of the reads
        # its handler makes first (with the BEGIN): one round trip before the writes, not three.
        # For a duplicate the rows read are not used.
        (row,) = rows
        found = read_ahead(
            connection,
            [deliveries[0].event],
            group,
            first=inbox.insert_new_read(connection, row),
        )
        new = bool(found) if found is not None else inbox.insert_new(connection, row)
        inserted = {row["id"]} if new else set()
    else:
        # Of ids given twice, the first is inserted and applied; the other is a duplicate.
        inserted = inbox.insert_many_new(connection, rows)
    statuses = inbox.statuses_of(
        connection, [row["id"] for row in rows if row["id"] not in inserted]
    )
    if not lone:
        read_ahead(
            connection,
            [delivery.event for delivery in deliveries if delivery.event_id in inserted],
            group,
        )
    outcomes: list[ProcessResult] = []
    traced = tracing()  # asked once for the group: it reads the environment
    for delivery in deliveries:
        event_id = delivery.event_id
        if event_id not in inserted:
            status = statuses.get(event_id)
            outcomes.append(ProcessResult(event_id, "duplicate" if status in _DONE else "pending"))
        else:
            inserted.discard(event_id)
            statuses[event_id] = "succeeded"  # a later copy in this group is its duplicate
            forget_read_ahead(delivery.event, group)
            outcome = _apply_event(
                connection, delivery.event, now, dunning, fetched, group, traced, park=park
            )
            if outcome.pending:  # parked with the group's writes (`_apply_event`)
                statuses[event_id] = "processing"  # a later copy is pending too
            outcomes.append(outcome)
        results.append(outcomes[-1])
    # The last statement of the transaction: on PostgreSQL its COMMIT goes with these writes.
    group.write(connection, commit=True)


def _marked_done(delivery: Delivery, now: datetime) -> dict[str, Any]:
    # Marked done at once: the row commits only together with the handler's effects.
    known = delivery.event["type"] in HANDLERS
    return {
        **delivery.stored,
        "status": "succeeded" if known else "ignored",
        "attempts": 1 if known else 0,
        "processed_at": now,
    }


def _apply_event(
    connection: Connection,
    event: dict[str, Any],
    now: datetime,
    dunning: DunningPolicy,
    fetched: dict[tuple[str, str], Fetched],
    group: GroupWrites,
    traced: bool = True,
    *,
    park: bool = False,
) -> ProcessResult:
    """Run the event's handler in the caller's transaction; its writes wait in `group`.

    `traced=False` (no tracer configured, as the caller found) skips asking again for a span.
    With `park`, an event that needs an object from Stripe, and wrote nothing to the database
    yet, answers pending (its queued writes dropped, its row's park queued) instead of raising
    NeedsFetch.
    """
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return ProcessResult(str(event["id"]), "ignored")
    context = HandlerContext(
        transaction=connection,
        event=event,
        now=now,
        dunning=dunning,
        fetched=fetched,
        group=group,
    )
    try:
        if traced:
            with span(f"webhook {event['type']}", {"stripe.event_id": context.event_id}):
                handler(context, event["data"]["object"])
        else:  # no span to enter and leave: most processes trace nothing
            handler(context, event["data"]["object"])
    except NeedsFetch as need:
        if not park or not context.undoable:
            raise
        context.drop_writes()
        # Its row, inserted marked done, is marked processing under this worker's lease, with
        # the group's writes: not applied, it needs an object from Stripe first.
        group.queued.append(inbox.parked(context.event_id, until=now + LEASE))
        return ProcessResult(context.event_id, "pending", need=need, leased=True, event=event)
    context.finish()
    return ProcessResult(
        context.event_id,
        "succeeded",
        changes=context.changes,
        customers=tuple(sorted(context.touched)),
    )


def _store_pending(
    db: Database, delivery: Delivery, need: NeedsFetch, now: datetime
) -> ProcessResult:
    """Store an event that needs an object from Stripe, for the path that may wait for Stripe.

    It is stored processing under a lease, as `process_stripe_event` would take one, so that
    path need not take it in a transaction of its own (unless the event was stored already).
    """
    leased = {**delivery.stored, "status": "processing", "next_attempt_at": now + LEASE}
    with db.write_connection() as connection:
        inserted = inbox.insert_new(connection, leased)
    return ProcessResult(
        delivery.event_id, "pending", need=need, leased=inserted, event=delivery.event
    )


def _store_failed(
    db: Database, delivery: Delivery, now: datetime, error: BaseException
) -> ProcessResult:
    """Store an event whose first application failed, as failed, in a transaction of its own."""
    message = describe_error(error)
    log.warning("stripe event %s failed: %s", delivery.event_id, message)
    failed = {
        **delivery.stored,
        "status": "failed",
        "attempts": 1,
        "last_error": message,
        "next_attempt_at": now + retry_delay(1),
    }
    with db.write_connection() as connection:
        if not inbox.insert_new(connection, failed):
            # Another delivery stored it meanwhile: count this failure there, unless applied.
            _mark_failed(connection, delivery.event_id, message, now)
    _count("failed")
    return ProcessResult(delivery.event_id, "failed", error=message)


# -- applying a stored event --------------------------------------------------------------------


def process_stripe_event(
    *,
    db: Database,
    gateway: StripeGateway | None,
    event_id: str,
    clock: Clock,
    dunning: DunningPolicy,
    mode: ProcessMode = ProcessMode.DELIVERY,
    need: NeedsFetch | None = None,
    leased: bool = False,
    event: dict[str, Any] | None = None,
) -> ProcessResult:
    """Apply one stored event to the mirror exactly once, or leave it failed with its error.

    `need` is an object the event is known to need from Stripe: fetched before it is applied.
    `leased`: the event was stored under this caller's lease (a pending result's `leased`).
    `event`: the stored event as parsed when it arrived (a pending result's `event`).
    """
    fetched: dict[tuple[str, str], Fetched] = {}
    owned = leased
    conflicts = rounds = 0
    while True:
        if need is not None:
            rounds += 1
            if rounds >= MAX_FETCH_ROUNDS:
                error = RuntimeError("too many objects needed from Stripe")
                return _fail(db, event_id, clock, error)
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
            need = None
        try:
            with db.write_connection() as connection:
                if event is not None and owned and mode is ProcessMode.DELIVERY:
                    result = _apply_leased(connection, event, clock.now(), dunning, fetched)
                else:
                    result = _apply_stored(
                        connection, event_id, clock.now(), dunning, fetched, mode, owned
                    )
            _count(result.outcome)
            return result
        except NeedsFetch as needed:
            need = needed
        except NotFound:
            raise
        except DBAPIError as error:
            conflicts += 1
            if _is_conflict(error) and conflicts <= MAX_CONFLICT_RETRIES:
                continue
            return _fail(db, event_id, clock, error)
        except Exception as error:  # every failure is kept on the row for the retry job
            return _fail(db, event_id, clock, error)


def _apply_stored(
    connection: Connection,
    event_id: str,
    now: datetime,
    dunning: DunningPolicy,
    fetched: dict[tuple[str, str], Fetched],
    mode: ProcessMode,
    owned: bool,
) -> ProcessResult:
    # The lease holder waits: whoever holds the row now only reads it to refuse, and a holder
    # that skipped it would leave its own event processing until the lease ran out.
    row = inbox.claim(connection, event_id, wait=owned)
    if row is None:
        _raise_unless_stored(connection, event_id)
        return ProcessResult(event_id, "in_progress")
    refusal = _refusal(row, now, mode, owned)
    if refusal:
        return ProcessResult(event_id, refusal)
    group = GroupWrites()
    result = _apply_event(connection, orjson.loads(row["payload"]), now, dunning, fetched, group)
    group.write(connection)
    inbox.mark_finished(connection, event_id, status=result.outcome, now=now)
    return result


def _apply_leased(
    connection: Connection,
    event: dict[str, Any],
    now: datetime,
    dunning: DunningPolicy,
    fetched: dict[tuple[str, str], Fetched],
) -> ProcessResult:
    """`_apply_stored` for a delivery whose worker holds the event's lease and has the event
    parsed: the row is claimed and marked finished by one statement (an event applied
    meanwhile answers duplicate), and the commit goes with the handler's last writes (one
    round trip on PostgreSQL). Three round trips fewer, and no payload read back and parsed.
    """
    event_id = str(event["id"])
    outcome = "succeeded" if event["type"] in HANDLERS else "ignored"
    if not inbox.claim_finished(connection, event_id, status=outcome, now=now):
        _raise_unless_stored(connection, event_id)
        return ProcessResult(event_id, "duplicate")
    group = GroupWrites()
    result = _apply_event(connection, event, now, dunning, fetched, group)
    group.write(connection, commit=True)
    return result


def _raise_unless_stored(connection: Connection, event_id: str) -> None:
    """Raise NotFound when no event `event_id` is stored (why a claim may find no row)."""
    if inbox.status_of(connection, event_id) is None:
        raise NotFound(f"no stored Stripe event {event_id}")


def _refusal(row: Any, now: datetime, mode: ProcessMode, owned: bool) -> str | None:
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
        row = inbox.claim(connection, event_id, wait=True)
        if row is None:
            _raise_unless_stored(connection, event_id)
            return "in_progress"
        refusal = _refusal(row, now, mode, owned=False)
        if refusal:
            return refusal
        inbox.lease(connection, event_id, until=now + LEASE)
        return None


# What is fetched otherwise than as one object read back (`StripeGateway.retrieve_current`).
_FETCHERS: dict[str, Callable[[StripeGateway, str], Any]] = {
    "cash_balance": StripeGateway.retrieve_cash_balance,
    "refunds": StripeGateway.list_refunds,
    "discounts": StripeGateway.retrieve_discounts,
    "tax_rates": StripeGateway.retrieve_tax_rates,
}


def _fetch(gateway: StripeGateway | None, need: NeedsFetch) -> Fetched:
    """Fetch what a handler asked for, outside any transaction (None if Stripe lacks it), with
    Stripe's clock when it answered."""
    if gateway is None:
        raise ConfigError(
            f"STRIPE_SECRET_KEY: needed to fetch {need.object_type} {need.object_id} from Stripe"
        )
    target = gateway.for_account(need.account) if need.account else gateway
    STRIPE_REFETCHES.labels(need.object_type, need.reason).inc()
    try:
        if need.object_type in CURRENT_OBJECTS:
            current = target.retrieve_current(need.object_type, need.object_id)
            return Fetched(current.value, current.stripe_time)
        return Fetched(_FETCHERS[need.object_type](target, need.object_id))
    except StripeNotFound:
        return Fetched(None)


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
    _count("failed")
    return ProcessResult(event_id, "failed", error=message)


def _mark_failed(connection: Connection, event_id: str, message: str, now: datetime) -> None:
    """Mark a stored event failed (unless it was applied meanwhile) and set its next attempt."""
    attempts = inbox.mark_failed(connection, event_id, message=message)
    if attempts is not None:
        inbox.back_off(connection, event_id, retry_at=now + retry_delay(attempts))


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
    with db.engine.connect() as connection:
        return inbox.due(connection, now=clock.now(), stuck_after=STUCK_AFTER, limit=limit)


def list_stripe_events(
    *, db: Database, status: str | None = None, limit: int = 50
) -> list[StoredEvent]:
    """Return stored events, newest first, optionally only those with `status`."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    with db.engine.connect() as connection:
        return stored_events(
            connection, inbox.newest(connection, status=status, limit=max(1, limit))
        )


def stored_events(connection: Connection, rows: Sequence[Mapping[Any, Any]]) -> list[StoredEvent]:
    """The inbox rows as operators see them, each with its customer: Tollgate's id when the
    Stripe customer is known, else Stripe's, None when the event names no customer."""
    stripe_ids = [stripe_customer_of(row["payload"]) for row in rows]
    known = inbox.customers_by_stripe_id(connection, [sid for sid in stripe_ids if sid])
    return [
        StoredEvent(
            **{name: row[name] for name in _STORED_COLUMNS},
            customer=known.get(stripe_id, stripe_id) if stripe_id else None,
        )
        for row, stripe_id in zip(rows, stripe_ids, strict=True)
    ]


_STORED_COLUMNS = [field.name for field in fields(StoredEvent) if field.name != "customer"]


def stripe_customer_of(payload: str) -> str | None:
    """Return the Stripe customer an event is about (its object's, or the customer itself)."""
    obj = (orjson.loads(payload).get("data") or {}).get("object") or {}
    customer = obj.get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    if isinstance(customer, str):
        return customer
    own_id = obj.get("id")
    return own_id if obj.get("object") == "customer" and isinstance(own_id, str) else None


def replay_stripe_event(
    *,
    db: Database,
    gateway: StripeGateway | None,
    event_id: str,
    clock: Clock,
    dunning: DunningPolicy,
) -> ProcessResult:
    """Apply a stored event again, whatever its status; the watermark keeps this harmless."""
    return process_stripe_event(
        db=db,
        gateway=gateway,
        event_id=event_id,
        clock=clock,
        dunning=dunning,
        mode=ProcessMode.REPLAY,
    )
