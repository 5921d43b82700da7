"""Emails through a real SMTP server (aiosmtpd), and signed app webhooks, from the outbox."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from stripesim.testing import free_port
from tollgate.bootstrap import Container, build_container
from tollgate.client import verify_app_webhook
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.models import AppEvent, Customer, Notification
from tollgate.db.unit_of_work import Database
from tollgate.services.outbox import (
    deliver_app_events,
    deliver_emails,
    queue_app_event,
    queue_email,
)
from tollgate_client.app_webhooks import AppWebhookSignatureError

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
SMTP_PASSWORD = "s3cret-smtp-password"


class Inbox:
    """An aiosmtpd handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok)


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=_authenticate,
            auth_require_tls=False,
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_app(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Container]]:
    built: list[Container] = []

    def make(**overrides: Any) -> Container:
        container = build_container(make_settings(db.url, **overrides), clock=FrozenClock(NOW))
        built.append(container)
        return container

    yield make
    for container in built:
        container.close()


def _customer(db: Database, customer_id: str, email: str | None, currency: str = "usd") -> None:
    with db.write_transaction() as session:
        session.add(
            Customer(
                id=customer_id,
                email=email,
                name="Acme Inc",
                currency=currency,
                created_at=NOW,
                updated_at=NOW,
            )
        )


def _queue(db: Database, customer_id: str, template: str, cause: str, **facts: Any) -> None:
    with db.write_transaction() as session:
        queue_email(
            session.connection(),
            customer_id=customer_id,
            template=template,
            cause=cause,
            facts=facts,
            now=NOW,
        )


def _deliver(app: Container) -> Any:
    return deliver_emails(db=app.db, settings=app.settings, catalog=app.catalog, clock=app.clock)


def _part(mail: EmailMessage, kind: str) -> str:
    body = mail.get_body(preferencelist=(kind,))
    assert body is not None
    return str(body.get_content())


def _smtp_url(server: SmtpServer) -> str:
    return f"smtp://billing:{SMTP_PASSWORD}@127.0.0.1:{server.port}"


def test_an_email_goes_through_smtp_with_auth_once_with_text_and_html(
    db: Database, smtp: SmtpServer, make_app: Callable[..., Container]
) -> None:
    app = make_app(
        TOLLGATE_SMTP_URL=_smtp_url(smtp),
        TOLLGATE_EMAIL_FROM="Billing <billing@saas.example>",
        TOLLGATE_BILLING_URL="https://app.example/orgs/{customer_id}/billing",
    )
    _customer(db, "acme", "owner@acme.example")
    invoice = {
        "number": "INV-0001",
        "amount_paid": {"amount": 2900, "currency": "usd"},
        "invoice_pdf": "https://files.example/in_1.pdf?a=1&b=<2>",
    }
    _queue(db, "acme", "payment_succeeded", "in_1", **invoice)
    _queue(db, "acme", "payment_succeeded", "in_1", **invoice)  # a redelivered event

    assert _deliver(app).sent == 1
    assert _deliver(app).sent == 0
    [mail] = smtp.inbox.messages
    assert mail["To"] == "owner@acme.example"
    assert mail["From"] == "Billing <billing@saas.example>"
    assert mail["Subject"] == "Receipt: $29.00 paid for invoice INV-0001"
    text = _part(mail, "plain")
    html = _part(mail, "html")
    assert "$29.00" in text and "https://files.example/in_1.pdf?a=1&b=<2>" in text
    assert "https://app.example/orgs/acme/billing" in text
    # HTML autoescapes what came from outside.
    assert 'href="https://files.example/in_1.pdf?a=1&amp;b=&lt;2&gt;"' in html
    with db.transaction() as session:
        row = session.scalars(sa.select(Notification)).one()
    assert (row.status, row.attempts, row.sent_at) == ("sent", 1, NOW)


def test_amounts_are_in_the_customers_currency(
    db: Database, smtp: SmtpServer, make_app: Callable[..., Container]
) -> None:
    app = make_app(TOLLGATE_SMTP_URL=_smtp_url(smtp))
    _customer(db, "tokyo", "owner@tokyo.example", currency="jpy")
    _queue(
        db,
        "tokyo",
        "payment_failed_soft",
        "in_2:1",
        amount_due={"amount": 3500, "currency": "jpy"},
        number="INV-7",
        next_payment_attempt="2026-11-23T12:00:00+00:00",
        hosted_invoice_url="https://pay.example/in_2",
    )
    assert _deliver(app).sent == 1
    [mail] = smtp.inbox.messages
    assert mail["Subject"] == "We could not charge your card for ¥3,500"
    text = _part(mail, "plain")
    assert "We will try again on 23 November 2026." in text


def test_smtp_down_keeps_the_mail_and_sends_it_once_the_server_is_back(
    db: Database, make_app: Callable[..., Container]
) -> None:
    server = SmtpServer(free_port())  # not started: connections are refused
    app = make_app(TOLLGATE_SMTP_URL=_smtp_url(server))
    clock = app.clock
    assert isinstance(clock, FrozenClock)
    _customer(db, "acme", "owner@acme.example")
    _queue(db, "acme", "trial_ending", "sub_1:1", plan="pro", trial_end="2026-11-23T12:00:00Z")

    first = _deliver(app)
    assert (first.sent, first.retrying) == (0, 1)
    assert _deliver(app).retrying == 0  # backing off: not due again yet
    with db.transaction() as session:
        row = session.scalars(sa.select(Notification)).one()
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error is not None and SMTP_PASSWORD not in row.last_error

    server.start()
    try:
        clock.advance(timedelta(seconds=31))
        assert _deliver(app).sent == 1
        clock.advance(timedelta(hours=2))
        assert _deliver(app).sent == 0
        assert len(server.inbox.messages) == 1
        assert server.inbox.messages[0]["Subject"].startswith("Your Pro trial ends on")
    finally:
        server.stop()


def test_operator_templates_replace_the_built_in_ones(
    db: Database, smtp: SmtpServer, make_app: Callable[..., Container], tmp_path: Path
) -> None:
    (tmp_path / "trial_started.txt").write_text("Subject: Hi from us\n\nTrial of {{ plan_name }}\n")
    (tmp_path / "trial_started.html").write_text("<p>Trial of {{ plan_name }}</p>\n")
    app = make_app(TOLLGATE_SMTP_URL=_smtp_url(smtp), TOLLGATE_TEMPLATES_DIR=str(tmp_path))
    _customer(db, "acme", "owner@acme.example")
    _queue(db, "acme", "trial_started", "sub_1:1", plan="pro")
    assert _deliver(app).sent == 1
    assert smtp.inbox.messages[0]["Subject"] == "Hi from us"


def test_a_customer_without_email_is_skipped(
    db: Database, smtp: SmtpServer, make_app: Callable[..., Container]
) -> None:
    app = make_app(TOLLGATE_SMTP_URL=_smtp_url(smtp))
    _customer(db, "quiet", None)
    _queue(db, "quiet", "downgraded_to_free", "sub_9", plan="pro")
    assert _deliver(app).skipped == 1
    assert smtp.inbox.messages == []


def test_file_sink_writes_eml_files(
    db: Database, make_app: Callable[..., Container], tmp_path: Path
) -> None:
    app = make_app(TOLLGATE_SMTP_URL=f"file://{tmp_path / 'mail'}")
    _customer(db, "acme", "owner@acme.example")
    _queue(db, "acme", "subscription_canceled", "sub_1:5", plan="pro", access_until=NOW)
    assert _deliver(app).sent == 1
    [eml] = (tmp_path / "mail").glob("*.eml")
    assert b"You keep access until 20 November 2026." in eml.read_bytes()


# -- app webhooks -------------------------------------------------------------------------------


def test_app_webhooks_are_signed_retried_and_delivered_once(
    db: Database, make_app: Callable[..., Container]
) -> None:
    secret = "app-webhook-secret-0123456789"
    app = make_app(
        TOLLGATE_APP_WEBHOOK_URL="https://app.example/hooks/tollgate",
        TOLLGATE_APP_WEBHOOK_SECRET=secret,
    )
    clock = app.clock
    assert isinstance(clock, FrozenClock)
    for _ in range(2):
        with db.write_transaction() as session:
            queue_app_event(
                session.connection(),
                event_type="customer.subscription_status_changed",
                customer_id="acme",
                data={"status": "past_due", "previous_status": "active"},
                cause="evt_1",
                now=NOW,
            )
    answers = [503, 200]
    received: list[tuple[str, bytes, dict[str, str]]] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        received.append((url, body, headers))
        return answers.pop(0)

    def deliver() -> Any:
        return deliver_app_events(db=db, settings=app.settings, clock=clock, post=post)

    assert deliver().retrying == 1
    clock.advance(timedelta(seconds=31))
    assert deliver().sent == 1
    sent_at = clock.now().timestamp()
    clock.advance(timedelta(hours=1))
    assert deliver().sent == 0
    assert len(received) == 2
    url, body, headers = received[1]
    assert url == "https://app.example/hooks/tollgate"
    event = verify_app_webhook(body, headers["Tollgate-Signature"], secret, now=sent_at)
    assert event["type"] == "customer.subscription_status_changed"
    assert event["data"] == {"status": "past_due", "previous_status": "active"}
    assert received[0][1] == body  # the retry is the same event, same id
    assert json.loads(received[0][1])["id"] == event["id"] == headers["Tollgate-Event-Id"]
    with pytest.raises(AppWebhookSignatureError):
        verify_app_webhook(body, headers["Tollgate-Signature"], "wrong-secret", now=sent_at)
    with pytest.raises(AppWebhookSignatureError):
        verify_app_webhook(body + b" ", headers["Tollgate-Signature"], secret, now=sent_at)
    with pytest.raises(AppWebhookSignatureError):
        verify_app_webhook(body, headers["Tollgate-Signature"], secret, now=sent_at + 301)
    with db.transaction() as session:
        row = session.scalars(sa.select(AppEvent)).one()
    assert (row.status, row.attempts) == ("delivered", 2)
