"""The outbox: emails and app webhooks written in the transaction of the change that causes them.

Each row has a key (customer, template and cause for an email; an event id derived from type,
customer and cause for an app webhook), so writing it again, when a webhook is redelivered or
a handler re-runs, is a no-op. The worker delivers what is pending (`jobs/notifications.py`,
`jobs/app_webhooks.py`); a rolled-back transaction takes its outbox rows with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import httpx
from sqlalchemy import Connection, Table

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.queries import outbox
from tollgate.db.tables import APP_EVENTS, NOTIFICATIONS
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.logs import REQUEST_ID
from tollgate.notify.email import (
    OPERATOR_TEMPLATES,
    TEMPLATES,
    EmailError,
    EmailRenderer,
    Transport,
    build_message,
    transport_from_url,
)
from tollgate.notify.samples import sample_facts
from tollgate.services.deps import Deps
from tollgate_client.app_webhooks import SIGNATURE_HEADER, sign_app_webhook

log = logging.getLogger("tollgate.outbox")

APP_EVENT_TYPES = (
    "customer.entitlements_changed",
    "customer.usage_threshold_crossed",
    "customer.subscription_status_changed",
    "usage.alert",
)


def queue_email(
    connection: Connection,
    *,
    customer_id: str,
    template: str,
    cause: str,
    facts: Mapping[str, Any],
    now: datetime,
    same_notice: Collection[str] = (),
) -> None:
    """Queue the email `template` to the customer once for `cause`; a repeat is a no-op.

    `same_notice` names the templates that tell the same outcome of `cause` in other words
    (a payment's receipt, or its "payment recovered"): when one of them was queued for the
    cause, this one is not, so one payment never sends two emails whichever event applies
    first. Callers hold the customer's row lock (every webhook handler does), so two events
    cannot both find none.
    """
    if same_notice and outbox.notified(
        connection, customer_id=customer_id, cause=cause, templates={*same_notice, template}
    ):
        return
    row = {
        "customer_id": customer_id,
        "template": template,
        "cause": cause,
        "facts": to_json(facts),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    outbox.insert_new(connection, NOTIFICATIONS, row)


def queue_reminders(
    *,
    db: Database,
    clock: Clock,
    template: str,
    due: Callable[[Connection, datetime], Sequence[Mapping[str, Any]]],
    cause: Callable[[Mapping[str, Any]], str],
    facts: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> int:
    """Queue `template` for each row `due` finds now (a customer's), once per its `cause`;
    return how many rows were due (a reminder queued before is not queued again)."""
    now = clock.now()
    with db.write_connection() as connection:
        rows = due(connection, now)
        for row in rows:
            queue_email(
                connection,
                customer_id=row["customer_id"],
                template=template,
                cause=cause(row),
                facts=facts(row),
                now=now,
            )
    return len(rows)


def queue_app_event(
    connection: Connection,
    *,
    event_type: str,
    customer_id: str,
    data: Mapping[str, Any],
    cause: str,
    now: datetime,
) -> None:
    """Queue the app webhook `event_type` once for `cause`; a repeat is a no-op."""
    if event_type not in APP_EVENT_TYPES:
        raise ValueError(f"unknown app event type {event_type!r}")
    row = {
        "id": app_event_id(event_type, customer_id, cause),
        "type": event_type,
        "customer_id": customer_id,
        "cause": cause,
        "data": to_json(data),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    outbox.insert_new(connection, APP_EVENTS, row)


def app_event_id(event_type: str, customer_id: str, cause: str) -> str:
    """Return the event id of an app event: the same cause always gives the same id."""
    digest = hashlib.sha256(f"{event_type}\0{customer_id}\0{cause}".encode()).hexdigest()
    return f"tgevt_{digest[:40]}"


def to_json(value: Any) -> Any:
    """Return `value` with datetimes and dates as ISO strings, decimals and enums as text."""
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return to_json(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# -- delivery (the worker's side) --------------------------------------------------------------

# A claimed row is left alone this long: time enough to send it, short enough to retry soon
# after a worker died mid-send.
CLAIM_LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery run did."""

    sent: int = 0
    retrying: int = 0
    gave_up: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class RenderedEmail:
    """A mail as its customer gets it."""

    recipient: str | None
    subject: str
    text: str
    html: str
    sample: bool  # rendered from sample facts, not from a mail queued for the customer


def preview_email(
    deps: Deps,
    *,
    template: str,
    customer_id: str | None = None,
    notification_id: int | None = None,
) -> RenderedEmail:
    """Render `template` as the customer gets it: from the queued mail `notification_id`, else
    from its newest mail of that template, or, without one (or without a customer), from sample
    facts drawn from the catalog."""
    db, settings, catalog, clock = deps.db, deps.settings, deps.catalog, deps.clock
    if template not in TEMPLATES:
        raise InvalidRequest(
            f"unknown email template {template!r} (templates are: {', '.join(TEMPLATES)})",
            param="template",
        )
    row: dict[str, Any] = {"customer_id": customer_id or "sample", "name": "Acme Inc"}
    row.update(email="billing@acme.example", customer_metadata={}, facts=None)
    if customer_id is not None:
        with db.engine.connect() as connection:
            customer = outbox.recipient(connection, customer_id)
            if customer is None:
                raise NotFound(f"no customer {customer_id!r}", param="customer")
            row.update(email=customer.email, name=customer.name, customer_metadata=customer[2])
            row["facts"] = outbox.newest_facts(connection, customer_id, template, notification_id)
    sample = row["facts"] is None
    if sample:
        row["facts"] = to_json(sample_facts(template, catalog, clock.now()))
    subject, text, html = EmailRenderer(settings.templates_dir).render(
        template, _email_context(row, settings, catalog)
    )
    return RenderedEmail(row["email"], subject, text, html, sample)


def retry_delay(attempts: int) -> timedelta:
    """Return the wait after the `attempts`-th failure: 30 s, doubling, at most an hour."""
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), timedelta(hours=1))


def deliver_emails(
    *,
    db: Database,
    settings: Settings,
    catalog: Catalog,
    clock: Clock,
    transport: Transport | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """Send the due emails of the outbox; a failure is retried with backoff, then given up."""
    if transport is None:
        if settings.smtp_url is None:
            return DeliveryReport()  # nowhere to send: mails wait in the outbox
        transport = transport_from_url(settings.smtp_url.get_secret_value())
    renderer = EmailRenderer(settings.templates_dir)
    mailer = transport

    def send(row: Mapping[Any, Any]) -> tuple[str, str | None]:
        # The operator's mails (a customer's dispute) go to TOLLGATE_OPERATOR_EMAIL instead.
        operator = row["template"] in OPERATOR_TEMPLATES
        recipient = settings.operator_email if operator else row["email"]
        if not recipient:
            return "skipped", (
                "TOLLGATE_OPERATOR_EMAIL is not set"
                if operator
                else "the customer has no email address"
            )
        try:
            subject, text, html = renderer.render(
                row["template"], _email_context(row, settings, catalog)
            )
            mailer.send(
                build_message(
                    sender=settings.email_from,
                    recipient=recipient,
                    subject=subject,
                    text=text,
                    html=html,
                    message_id=f"<tollgate-notification-{row['id']}@tollgate>",
                    now=clock.now(),
                )
            )
        except Exception as error:  # a template or server error: keep the mail, try later
            return "retry", _describe(error)
        return "sent", None

    return _deliver_due(
        db, NOTIFICATIONS, outbox.email_with_recipient, send, settings, clock, limit
    )


def deliver_app_events(
    *,
    db: Database,
    settings: Settings,
    clock: Clock,
    post: Callable[[str, bytes, dict[str, str]], int] | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """POST the due app webhooks, signed; a non-2xx answer is retried with backoff."""
    url = settings.app_webhook_url
    secret = settings.app_webhook_secret.get_secret_value()
    if not url or not secret:
        return DeliveryReport()  # no app endpoint (or no secret to sign with): events wait
    http_post = post or _http_post

    def send(row: Mapping[Any, Any]) -> tuple[str, str | None]:
        body = json.dumps(
            {
                "id": row["id"],
                "type": row["type"],
                "created": int(row["created_at"].timestamp()),
                "data": row["data"],
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_app_webhook(body, secret, int(clock.now().timestamp())),
            "Tollgate-Event-Id": row["id"],
        }
        try:
            status = http_post(url, body, headers)
        except httpx.HTTPError as failure:
            return "retry", _describe(failure)
        if 200 <= status < 300:
            return "sent", None
        return "retry", f"the app answered {status}"

    return _deliver_due(db, APP_EVENTS, outbox.app_event, send, settings, clock, limit)


def _http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


def _deliver_due(
    db: Database,
    table: Table,
    load: Callable[[Connection, Any], Mapping[Any, Any]],
    send: Callable[[Mapping[Any, Any]], tuple[str, str | None]],
    settings: Settings,
    clock: Clock,
    limit: int,
) -> DeliveryReport:
    """Claim the table's due rows and `send` each: sent or skipped rows are done; a row whose
    send answers "retry" waits with backoff, and is given up after the last attempt."""
    counts = {"sent": 0, "retrying": 0, "gave_up": 0, "skipped": 0}
    for row_id in _claim_due(db, table, clock.now(), limit):
        with db.transaction() as session:
            row = load(session.connection(), row_id)
        # The lines about this row carry the id of the request that queued it.
        token = REQUEST_ID.set(row.get("request_id"))
        try:
            outcome, error = send(row)
            log.info(
                "%s %s to %s: %s",
                table.name,
                row_id,
                row.get("customer_id"),
                outcome,
                extra={"customer_id": row.get("customer_id")},
            )
        finally:
            REQUEST_ID.reset(token)
        if outcome == "retry":
            counts[_retry_later(db, table, row, error or "", settings, clock.now())] += 1
            continue
        status = outcome if outcome == "skipped" or table is NOTIFICATIONS else "delivered"
        with db.write_connection() as connection:
            outbox.finish(connection, table, row_id, status, error, clock.now())
        counts[outcome] += 1
    return DeliveryReport(**counts)


def _claim_due(db: Database, table: Table, now: datetime, limit: int) -> list[Any]:
    """Claim due pending rows for this worker: each is pushed a lease ahead, once."""
    with db.transaction() as session:
        due = outbox.due_ids(session.connection(), table, now, limit)
    claimed = []
    for row_id in due:
        with db.write_connection() as connection:
            if outbox.claim(connection, table, row_id, now, CLAIM_LEASE):
                claimed.append(row_id)
    return claimed


def _retry_later(
    db: Database,
    table: Table,
    row: Mapping[Any, Any],
    error: str,
    settings: Settings,
    now: datetime,
) -> str:
    attempts = int(row["attempts"]) + 1
    gave_up = attempts >= settings.notify_max_attempts
    log.warning("%s %s attempt %d failed: %s", table.name, row["id"], attempts, error)
    with db.write_connection() as connection:
        outbox.reschedule(
            connection,
            table,
            row["id"],
            attempts=attempts,
            error=error,
            next_attempt_at=None if gave_up else now + retry_delay(attempts),
        )
    return "gave_up" if gave_up else "retrying"


def _describe(error: BaseException) -> str:
    if isinstance(error, EmailError):
        return str(error)
    # Connection errors name the URL at most; never a password (SMTP ones are EmailErrors).
    return f"{type(error).__name__}: {error}"[:500]


def _email_context(row: Mapping[Any, Any], settings: Settings, catalog: Catalog) -> dict[str, Any]:
    facts = dict(row["facts"] or {})
    plan = catalog.plans.get(str(facts.get("plan"))) if facts.get("plan") else None
    default = catalog.plans.get(catalog.default_plan) if catalog.default_plan else None
    billing_url = (
        settings.billing_url.replace("{customer_id}", row["customer_id"])
        if settings.billing_url
        else None
    )
    metadata = row.get("customer_metadata") or {}
    return {
        **facts,
        # The app may give a customer its language (metadata `locale`, e.g. "de"): numbers,
        # money and dates are written for it; TOLLGATE_EMAIL_LOCALE otherwise.
        "locale": metadata.get("locale") or settings.email_locale,
        "customer": {"id": row["customer_id"], "name": row["name"], "email": row["email"]},
        "plan_name": plan.name if plan else facts.get("plan"),
        "default_plan_name": default.name if default else "free",
        "billing_url": billing_url,
    }
