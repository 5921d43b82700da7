"""Stripe webhooks over the real HTTP route: verified, stored once, applied once, in any order.

Events are hand-built from Stripe's published example objects (fixtures3.json) or taken from
what stripesim emitted, signed here with Stripe's scheme, and posted to POST /webhooks/stripe.
Re-fetches go through the real SDK to stripesim. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from itertools import pairwise
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import stripe
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stripesim.lists import render
from stripesim.testing import RunningSim, free_port
from tests.conftest import EXAMPLE_CATALOG
from tests.integration.test_stripe_proxy import pass_back
from tests.integration.test_stripe_proxy import serving as serving_handler
from tests.stripe_reference import example
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.cli import app as cli_app
from tollgate.clock import AdjustableClock, FrozenClock
from tollgate.config import Settings
from tollgate.db.models import (
    AuditLog,
    Charge,
    Customer,
    Dispute,
    Invoice,
    InvoicePayment,
    Refund,
    StripeEvent,
    Subscription,
    SubscriptionItem,
)
from tollgate.db.queries import stripe_events
from tollgate.db.unit_of_work import Database
from tollgate.domain.events import tollgate_status
from tollgate.jobs.webhooks import retry_failed_webhooks
from tollgate.metrics import STRIPE_REFETCHES
from tollgate.services.api_keys import create_api_key
from tollgate.services.webhooks import (
    Delivery,
    ProcessResult,
    apply_stripe_deliveries,
    process_stripe_event,
    verify_stripe_delivery,
)
from tollgate.services.webhooks.context import GroupWrites, HandlerContext

SECRET = "whsec_tollgate_tests_current_0123"
OLD_SECRET = "whsec_tollgate_tests_previous_0123"
T0 = 1_790_000_000  # 2026-09-21, a whole second as Stripe's `created` is
MONTH = 30 * 86_400


# -- the Stripe world, hand-built from fixtures3.json ------------------------------------------


def customer_obj(cus_id: str, *, app_id: str | None = None, email: str = "billing@acme.example"):  # type: ignore[no-untyped-def]
    obj = example("customer")
    obj.update(id=cus_id, email=email, name="Acme Inc", discount=None, created=T0)
    obj["metadata"] = {"tollgate_customer_id": app_id} if app_id else {}
    return obj


def subscription_obj(  # type: ignore[no-untyped-def]
    sub_id: str,
    cus_id: str,
    *,
    status: str = "active",
    plan: str = "pro",
    seats: int = 1,
    period_start: int = T0,
    cancel_at_period_end: bool = False,
    trial_end: int | None = None,
):
    obj = example("subscription")
    item = obj["items"]["data"][0]
    item.update(
        id=f"si_{sub_id[4:]}",
        subscription=sub_id,
        quantity=seats,
        current_period_start=period_start,
        current_period_end=period_start + MONTH,
    )
    item["price"].update(
        id=f"price_{plan}_month",
        lookup_key=f"tollgate_{plan}_month_usd",
        metadata={"tollgate_plan": plan, "tollgate_interval": "month"},
    )
    item["price"]["recurring"]["usage_type"] = "licensed"
    obj.update(
        id=sub_id,
        customer=cus_id,
        status=status,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=period_start + MONTH if cancel_at_period_end else None,
        canceled_at=None,
        ended_at=None,
        trial_start=T0 if trial_end else None,
        trial_end=trial_end,
        latest_invoice=None,
        created=T0,
    )
    return obj


def invoice_obj(  # type: ignore[no-untyped-def]
    in_id: str,
    cus_id: str,
    *,
    sub_id: str | None = None,
    status: str = "draft",
    amount_due: int = 2900,
    amount_paid: int = 0,
    attempt_count: int = 0,
    payment_intent: str | None = None,
):
    obj = example("invoice")
    finalized = status != "draft"
    obj.update(
        id=in_id,
        customer=cus_id,
        status=status,
        currency="usd",
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=amount_due - amount_paid,
        total=amount_due,
        subtotal=amount_due,
        attempt_count=attempt_count,
        next_payment_attempt=None,
        number="ACME-0001" if finalized else None,
        hosted_invoice_url=f"https://invoice.stripe.com/i/{in_id}" if finalized else None,
        invoice_pdf=f"https://pay.stripe.com/invoice/{in_id}/pdf" if finalized else None,
        billing_reason="subscription_cycle" if sub_id else "manual",
        period_start=T0,
        period_end=T0 + MONTH,
        subscription=None,
        parent=(
            {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": sub_id},
            }
            if sub_id
            else None
        ),
    )
    if payment_intent:
        obj["payments"] = {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": f"inpay_{in_id[3:]}",
                    "object": "invoice_payment",
                    "invoice": in_id,
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                    "status": "paid",
                }
            ],
        }
    return obj


def charge_obj(  # type: ignore[no-untyped-def]
    ch_id: str,
    cus_id: str | None,
    *,
    payment_intent: str | None = None,
    amount: int = 2900,
    status: str = "succeeded",
    refunds: list[dict[str, Any]] | None = None,
    disputed: bool = False,
):
    obj = example("charge")
    refunded = sum(refund["amount"] for refund in refunds or [])
    obj.update(
        id=ch_id,
        customer=cus_id,
        payment_intent=payment_intent,
        amount=amount,
        amount_captured=amount,
        amount_refunded=refunded,
        refunded=refunded == amount,
        status=status,
        paid=status == "succeeded",
        disputed=disputed,
        currency="usd",
        created=T0,
    )
    obj["refunds"] = {
        "object": "list",
        "has_more": False,
        "data": refunds or [],
        "url": f"/v1/charges/{ch_id}/refunds",
    }
    return obj


def refund_obj(re_id: str, ch_id: str, amount: int):  # type: ignore[no-untyped-def]
    obj = example("refund")
    obj.update(id=re_id, charge=ch_id, amount=amount, currency="usd", status="succeeded")
    return obj


def dispute_obj(dp_id: str, ch_id: str, *, status: str = "needs_response", amount: int = 2900):  # type: ignore[no-untyped-def]
    obj = example("dispute")
    obj.update(
        id=dp_id, charge=ch_id, status=status, amount=amount, currency="usd", reason="fraudulent"
    )
    return obj


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def event_obj(  # type: ignore[no-untyped-def]
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int = T0,
    event_id: str | None = None,
    account: str | None = None,
):
    event = example("event")
    event.update(
        id=event_id or new_id("evt"),
        type=event_type,
        created=created,
        data={"object": obj},
        api_version="2026-10-28.endive",
        livemode=False,
    )
    if account:
        event["account"] = account
    return event


# -- Tollgate, with webhook secrets ------------------------------------------------------------


@dataclass
class Hooks:
    """Tollgate's API with STRIPE_WEBHOOK_SECRETS set, and ways to post and look."""

    api: TestClient
    container: Container
    # Stripe objects a test arranged once and reuses across hypothesis examples.
    world: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        return self.container.db

    def post(
        self,
        event: dict[str, Any] | None = None,
        *,
        body: bytes | None = None,
        secret: str = SECRET,
        timestamp: int | None = None,
        signature: str | None = None,
    ):  # type: ignore[no-untyped-def]
        payload = body if body is not None else orjson.dumps(event)
        header = signature
        if header is None:
            # Stripe's own SDK makes the header, so the route is checked against Stripe's scheme.
            header = stripe.WebhookSignature.generate_signature_header(
                payload.decode("utf-8", "replace"), secret, timestamp or int(time.time())
            )
        headers = {"Content-Type": "application/json"}
        if header:
            headers["Stripe-Signature"] = header
        return self.api.post("/webhooks/stripe", content=payload, headers=headers)

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        answer = self.post(event)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def get(self, model: type[Any], object_id: str) -> Any:
        with self.db.transaction() as session:
            return session.get(model, object_id)

    def count(self, model: type[Any], *where: Any) -> int:
        with self.db.transaction() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)))

    def customer(self, stripe_customer_id: str) -> Customer:
        with self.db.transaction() as session:
            found = session.scalars(
                sa.select(Customer).where(Customer.stripe_customer_id == stripe_customer_id)
            ).one()
            return found

    def items(self, sub_id: str) -> list[tuple[str, int | None]]:
        with self.db.transaction() as session:
            rows = session.scalars(
                sa.select(SubscriptionItem).where(SubscriptionItem.subscription_id == sub_id)
            )
            return sorted((row.price_id, row.quantity) for row in rows)


@pytest.fixture
def hooks(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Hooks]:
    container = build_container(
        make_settings(db.url, STRIPE_WEBHOOK_SECRETS=f"{SECRET},{OLD_SECRET}")
    )
    with TestClient(create_app(container)) as api:
        yield Hooks(api, container)
    container.close()


def refetches(object_type: str, reason: str) -> float:
    return STRIPE_REFETCHES.labels(object_type, reason)._value.get()


def known_customer(hooks: Hooks, *, app_id: str = "acme") -> str:
    cus_id = new_id("cus")
    hooks.deliver(event_obj("customer.created", customer_obj(cus_id, app_id=app_id)))
    return cus_id


# -- every handler -------------------------------------------------------------------------------


def test_customer_events_mirror_the_customer_under_the_apps_id(hooks: Hooks) -> None:
    cus_id = new_id("cus")
    created = event_obj("customer.created", customer_obj(cus_id, app_id="acme"))
    answer = hooks.deliver(created)
    assert answer == {"received": True, "id": created["id"], "status": "succeeded"}
    customer = hooks.get(Customer, "acme")
    assert (customer.stripe_customer_id, customer.email, customer.deleted) == (
        cus_id,
        "billing@acme.example",
        False,
    )
    updated = customer_obj(cus_id, app_id="acme", email="finance@acme.example")
    hooks.deliver(event_obj("customer.updated", updated, created=T0 + 1))
    assert hooks.get(Customer, "acme").email == "finance@acme.example"
    hooks.deliver(event_obj("customer.deleted", updated, created=T0 + 2))
    deleted = hooks.get(Customer, "acme")
    assert deleted.deleted and deleted.state_version == 3
    actions = _audit_actions(hooks, "customer", "acme")
    assert actions == ["created", "updated", "deleted"]


def _audit_actions(hooks: Hooks, object_type: str, object_id: str) -> list[str]:
    with hooks.db.transaction() as session:
        return list(
            session.scalars(
                sa.select(AuditLog.action)
                .where(AuditLog.object_type == object_type, AuditLog.object_id == object_id)
                .order_by(AuditLog.id)
            )
        )


def test_subscription_events_mirror_status_plan_seats_periods_and_trial(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    trial_end = T0 + 14 * 86_400
    steps: list[tuple[str, dict[str, Any], str]] = [
        (
            "customer.subscription.created",
            subscription_obj(sub_id, cus_id, status="trialing", trial_end=trial_end, seats=3),
            "trialing",
        ),
        (
            "customer.subscription.trial_will_end",
            subscription_obj(sub_id, cus_id, status="trialing", trial_end=trial_end, seats=3),
            "trialing",
        ),
        (
            "customer.subscription.updated",
            subscription_obj(sub_id, cus_id, status="active", plan="team", seats=5),
            "active",
        ),
        (
            "customer.subscription.paused",
            subscription_obj(sub_id, cus_id, status="paused", plan="team", seats=5),
            "paused",
        ),
        (
            "customer.subscription.resumed",
            subscription_obj(sub_id, cus_id, status="active", plan="team", seats=5),
            "active",
        ),
        (
            "customer.subscription.updated",
            subscription_obj(
                sub_id, cus_id, status="active", plan="team", seats=5, cancel_at_period_end=True
            ),
            "canceling",
        ),
        (
            "customer.subscription.deleted",
            {**subscription_obj(sub_id, cus_id, status="canceled", plan="team", seats=5)},
            "canceled",
        ),
    ]
    versions = []
    for second, (event_type, obj, expected) in enumerate(steps):
        hooks.deliver(event_obj(event_type, obj, created=T0 + 10 * second))
        row = hooks.get(Subscription, sub_id)
        status = tollgate_status(
            row.status, cancel_at_period_end=row.cancel_at_period_end, cancel_at=row.cancel_at
        )
        assert status == expected, event_type
        versions.append(hooks.get(Customer, "acme").state_version)
    row = hooks.get(Subscription, sub_id)
    assert (row.customer_id, row.plan, row.interval, row.seats) == ("acme", "team", "month", 5)
    assert row.current_period_start == datetime.fromtimestamp(T0, UTC)
    assert row.current_period_end == datetime.fromtimestamp(T0 + MONTH, UTC)
    assert hooks.items(sub_id) == [("price_team_month", 5)]
    # trial_will_end carried nothing new: no audit row and no invalidation; every other did.
    assert versions[1] == versions[0]
    assert all(later > earlier for earlier, later in pairwise(versions[1:]))
    assert len(_audit_actions(hooks, "subscription", sub_id)) == len(steps) - 1


def test_invoice_events_mirror_amounts_status_attempts_and_urls(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    sub_id, in_id = new_id("sub"), new_id("in")
    lifecycle = [
        ("invoice.created", invoice_obj(in_id, cus_id, sub_id=sub_id)),
        ("invoice.finalized", invoice_obj(in_id, cus_id, sub_id=sub_id, status="open")),
        (
            "invoice.payment_failed",
            invoice_obj(in_id, cus_id, sub_id=sub_id, status="open", attempt_count=1),
        ),
        (
            "invoice.paid",
            invoice_obj(
                in_id, cus_id, sub_id=sub_id, status="paid", attempt_count=2, amount_paid=2900
            ),
        ),
        (
            "invoice.payment_succeeded",
            invoice_obj(
                in_id, cus_id, sub_id=sub_id, status="paid", attempt_count=2, amount_paid=2900
            ),
        ),
    ]
    for second, (event_type, obj) in enumerate(lifecycle):
        hooks.deliver(event_obj(event_type, obj, created=T0 + second))
    invoice = hooks.get(Invoice, in_id)
    assert (invoice.customer_id, invoice.subscription_id, invoice.status) == (
        "acme",
        sub_id,
        "paid",
    )
    assert (invoice.amount_due, invoice.amount_paid, invoice.amount_remaining) == (2900, 2900, 0)
    assert (invoice.attempt_count, invoice.currency, invoice.number) == (2, "usd", "ACME-0001")
    assert invoice.hosted_invoice_url == f"https://invoice.stripe.com/i/{in_id}"
    assert invoice.invoice_pdf == f"https://pay.stripe.com/invoice/{in_id}/pdf"

    voided, bad_debt = new_id("in"), new_id("in")
    hooks.deliver(event_obj("invoice.voided", invoice_obj(voided, cus_id, status="void")))
    hooks.deliver(
        event_obj(
            "invoice.marked_uncollectible", invoice_obj(bad_debt, cus_id, status="uncollectible")
        )
    )
    assert hooks.get(Invoice, voided).status == "void"
    assert hooks.get(Invoice, bad_debt).status == "uncollectible"


def test_an_upcoming_invoice_is_acknowledged_and_keeps_nothing(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    preview = invoice_obj(new_id("in"), cus_id)
    preview["id"] = None
    answer = hooks.deliver(event_obj("invoice.upcoming", preview))
    assert answer["status"] == "succeeded"
    assert hooks.count(Invoice) == 0


def test_payment_intent_events_are_acknowledged(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    for event_type in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        intent = example("payment_intent")
        intent.update(id=new_id("pi"), customer=cus_id)
        assert hooks.deliver(event_obj(event_type, intent))["status"] == "succeeded"


def test_a_refunded_charge_is_recorded_against_its_invoice_and_customer(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    in_id, pi_id, ch_id = new_id("in"), new_id("pi"), new_id("ch")
    hooks.deliver(
        event_obj(
            "invoice.paid",
            invoice_obj(in_id, cus_id, status="paid", amount_paid=2900, payment_intent=pi_id),
        )
    )
    hooks.deliver(event_obj("charge.succeeded", charge_obj(ch_id, cus_id, payment_intent=pi_id)))
    refunds = [refund_obj(new_id("re"), ch_id, 900)]
    hooks.deliver(
        event_obj(
            "charge.refunded",
            charge_obj(ch_id, cus_id, payment_intent=pi_id, refunds=refunds),
            created=T0 + 60,
        )
    )
    charge = hooks.get(Charge, ch_id)
    assert (charge.customer_id, charge.invoice_id, charge.payment_intent) == ("acme", in_id, pi_id)
    assert (charge.amount, charge.amount_refunded, charge.refunded) == (2900, 900, False)
    refund = hooks.get(Refund, refunds[0]["id"])
    assert (refund.charge_id, refund.amount, refund.status) == (ch_id, 900, "succeeded")


def test_a_charge_paid_before_its_invoice_arrives_is_linked_when_it_does(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    in_id, pi_id, ch_id = new_id("in"), new_id("pi"), new_id("ch")
    hooks.deliver(event_obj("charge.succeeded", charge_obj(ch_id, cus_id, payment_intent=pi_id)))
    assert hooks.get(Charge, ch_id).invoice_id is None
    hooks.deliver(
        event_obj(
            "invoice.paid",
            invoice_obj(in_id, cus_id, status="paid", amount_paid=2900, payment_intent=pi_id),
        )
    )
    assert hooks.get(Charge, ch_id).invoice_id == in_id


def test_a_failed_charge_is_mirrored(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    ch_id = new_id("ch")
    hooks.deliver(event_obj("charge.failed", charge_obj(ch_id, cus_id, status="failed")))
    assert hooks.get(Charge, ch_id).status == "failed"


def test_a_dispute_marks_its_charge_and_closing_it_updates_the_dispute(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    ch_id, dp_id = new_id("ch"), new_id("dp")
    hooks.deliver(event_obj("charge.succeeded", charge_obj(ch_id, cus_id)))
    hooks.deliver(event_obj("charge.dispute.created", dispute_obj(dp_id, ch_id), created=T0 + 5))
    assert hooks.get(Charge, ch_id).disputed
    hooks.deliver(
        event_obj("charge.dispute.closed", dispute_obj(dp_id, ch_id, status="lost"), created=T0 + 9)
    )
    dispute = hooks.get(Dispute, dp_id)
    assert (dispute.status, dispute.amount, dispute.reason) == ("lost", 2900, "fraudulent")
    # An older charge snapshot (from before the dispute) does not clear the flag.
    hooks.deliver(event_obj("charge.succeeded", charge_obj(ch_id, cus_id), created=T0 + 1))
    assert hooks.get(Charge, ch_id).disputed


def test_a_dispute_of_an_unknown_charge_fetches_the_charge_from_stripe(
    hooks: Hooks, sim: RunningSim
) -> None:
    cus_id = known_customer(hooks)
    ch_id, dp_id = new_id("ch"), new_id("dp")
    with sim.sim.lock:
        sim.sim.platform.add(charge_obj(ch_id, cus_id, disputed=True))
    before = refetches("charge", "first_seen")
    hooks.deliver(event_obj("charge.dispute.created", dispute_obj(dp_id, ch_id)))
    assert refetches("charge", "first_seen") == before + 1
    charge = hooks.get(Charge, ch_id)
    assert (charge.customer_id, charge.disputed) == ("acme", True)
    assert hooks.get(Dispute, dp_id).charge_id == ch_id


def test_checkout_completion_mirrors_the_new_subscription_at_once(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    product = client.v1.products.create(
        params={"name": "Pro", "metadata": {"tollgate_plan": "pro"}}
    )
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "metadata": {"tollgate_plan": "pro", "tollgate_interval": "month"},
        }
    )
    customer = client.v1.customers.create(params={"email": "new@acme.example"})
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": 2}],
            "trial_period_days": 14,
        }
    )
    session = example("checkout.session")
    session.update(
        id=new_id("cs_test"),
        mode="subscription",
        status="complete",
        customer=customer.id,
        subscription=subscription.id,
        client_reference_id="acme-org-42",
    )
    hooks.deliver(event_obj("checkout.session.completed", session, created=int(time.time())))
    mirrored = hooks.get(Subscription, subscription.id)
    assert (mirrored.customer_id, mirrored.status, mirrored.plan, mirrored.seats) == (
        "acme-org-42",
        "trialing",
        "pro",
        2,
    )
    assert hooks.get(Customer, "acme-org-42").stripe_customer_id == customer.id


def test_every_event_stripesim_emits_for_a_lifecycle_applies(
    hooks: Hooks, sim: RunningSim, client: stripe.StripeClient
) -> None:
    product = client.v1.products.create(
        params={"name": "Pro", "metadata": {"tollgate_plan": "pro"}}
    )
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "metadata": {"tollgate_plan": "pro", "tollgate_interval": "month"},
        }
    )
    customer = client.v1.customers.create(
        params={"email": "sim@acme.example", "metadata": {"tollgate_customer_id": "sim-org"}}
    )
    client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_payment_method": "pm_card_visa",
        }
    )
    client.v1.subscriptions.update(subscription.id, params={"cancel_at_period_end": True})
    intent = client.v1.payment_intents.create(
        params={
            "amount": 1500,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    client.v1.refunds.create(params={"charge": intent.latest_charge, "amount": 500})
    with sim.sim.lock:
        emitted = [render(event) for event in sim.sim.platform.all("event")]
    outcomes = {}
    for event in emitted:
        outcomes[event["type"]] = hooks.deliver(event)["status"]
    assert outcomes["customer.subscription.created"] == "succeeded"
    assert outcomes["charge.refunded"] == "succeeded"
    assert outcomes["product.created"] == "ignored"
    mirrored = hooks.get(Subscription, subscription.id)
    assert (mirrored.customer_id, mirrored.status, mirrored.cancel_at_period_end) == (
        "sim-org",
        "active",
        True,
    )
    charge = hooks.get(Charge, intent.latest_charge)
    assert (charge.amount, charge.amount_refunded, charge.customer_id) == (1500, 500, "sim-org")
    assert hooks.count(Refund, Refund.charge_id == intent.latest_charge) == 1
    assert hooks.get(Invoice, subscription.latest_invoice).status == "paid"


def test_unknown_event_types_are_stored_as_ignored(hooks: Hooks) -> None:
    event = event_obj("product.created", example("product"))
    assert hooks.deliver(event)["status"] == "ignored"
    assert hooks.get(StripeEvent, event["id"]).status == "ignored"


# -- bad input -------------------------------------------------------------------------------


def _subscription_event(hooks: Hooks) -> dict[str, Any]:
    return event_obj("customer.subscription.updated", subscription_obj(new_id("sub"), "cus_x"))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bad_signature", "does not match the body"),
        ("unknown_secret", "does not match the body"),
        ("old_timestamp", "tolerance is 300 s"),
        ("missing_header", "header is missing"),
        ("malformed_json", "not valid JSON"),
        ("not_an_event", "not a Stripe event"),
    ],
)
def test_bad_deliveries_are_400_and_store_nothing(hooks: Hooks, kind: str, message: str) -> None:
    event = _subscription_event(hooks)
    body = orjson.dumps(event)
    if kind == "bad_signature":
        answer = hooks.post(event, signature=f"t={int(time.time())},v1={'0' * 64}")
    elif kind == "unknown_secret":
        answer = hooks.post(event, secret="whsec_not_ours_0000000000")
    elif kind == "old_timestamp":
        answer = hooks.post(event, timestamp=int(time.time()) - 301)
    elif kind == "missing_header":
        answer = hooks.post(event, signature="")
    elif kind == "malformed_json":
        answer = hooks.post(body=body[:-5])
    else:
        answer = hooks.post(body=orjson.dumps(example("customer")))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_webhook" and message in error["message"]
    assert SECRET not in answer.text
    assert hooks.count(StripeEvent) == 0
    assert hooks.count(Subscription) == 0


def test_a_clock_moved_ahead_still_takes_deliveries_stripe_signs_with_its_real_time(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    """`tollgate dev` moves Tollgate's clock with the test clock; Stripe signs with real time."""
    clock = AdjustableClock()
    clock.move_to(datetime.now(UTC) + timedelta(days=15))
    container = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET), clock=clock)
    with TestClient(create_app(container)) as api:
        hooks = Hooks(api, container)
        assert hooks.customer(known_customer(hooks)).id == "acme"
        signed_at_the_moved_time = hooks.post(
            _subscription_event(hooks), timestamp=int(clock.now().timestamp())
        )
        assert signed_at_the_moved_time.status_code == 400
        assert "in the future" in signed_at_the_moved_time.json()["error"]["message"]
        assert hooks.count(StripeEvent) == 1
    container.close()


def test_a_body_over_the_limit_is_413_and_stores_nothing(hooks: Hooks) -> None:
    event = _subscription_event(hooks)
    event["data"]["object"]["description"] = "x" * (1024 * 1024)
    answer = hooks.post(event)
    assert answer.status_code == 413
    assert hooks.count(StripeEvent) == 0


def test_a_streamed_body_over_the_limit_is_413_and_stores_nothing(hooks: Hooks) -> None:
    # No Content-Length: the limit is enforced as the chunks arrive.
    event = _subscription_event(hooks)
    event["data"]["object"]["description"] = "x" * (1024 * 1024)
    body = orjson.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    answer = hooks.api.post(
        "/webhooks/stripe", content=chunks(), headers={"Stripe-Signature": header}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "request_too_large"
    assert hooks.count(StripeEvent) == 0


def test_without_webhook_secrets_deliveries_are_refused(
    container: Container, api: TestClient
) -> None:
    answer = api.post("/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=a"})
    assert answer.status_code == 503
    assert "STRIPE_WEBHOOK_SECRETS" in answer.json()["error"]["message"]


def test_the_previous_secret_still_signs_during_rotation(hooks: Hooks) -> None:
    cus_id = new_id("cus")
    answer = hooks.post(event_obj("customer.created", customer_obj(cus_id)), secret=OLD_SECRET)
    assert answer.status_code == 200
    assert hooks.customer(cus_id).id == cus_id


# -- duplicates and order ------------------------------------------------------------------------


def test_a_duplicate_delivery_is_200_and_applied_once(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    event = event_obj("customer.subscription.created", subscription_obj(new_id("sub"), cus_id))
    assert hooks.deliver(event)["status"] == "succeeded"
    version = hooks.get(Customer, "acme").state_version
    assert hooks.deliver(event)["status"] == "duplicate"
    assert hooks.get(StripeEvent, event["id"]).attempts == 1
    assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 1
    assert hooks.get(Customer, "acme").state_version == version


def test_an_older_subscription_update_arriving_late_is_skipped(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    newer = subscription_obj(sub_id, cus_id, status="past_due", seats=4)
    older = subscription_obj(sub_id, cus_id, status="active", seats=2)
    hooks.deliver(event_obj("customer.subscription.updated", newer, created=T0 + 50))
    before = refetches("subscription", "same_second")
    answer = hooks.deliver(event_obj("customer.subscription.updated", older, created=T0 + 10))
    assert answer["status"] == "succeeded"
    row = hooks.get(Subscription, sub_id)
    assert (row.status, row.seats) == ("past_due", 4)
    assert refetches("subscription", "same_second") == before


def test_a_same_second_update_that_differs_is_settled_by_stripes_copy(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    product = client.v1.products.create(
        params={"name": "Pro", "metadata": {"tollgate_plan": "pro"}}
    )
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "metadata": {"tollgate_plan": "pro"},
        }
    )
    customer = client.v1.customers.create(params={"metadata": {"tollgate_customer_id": "acme"}})
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 7}
    )
    first = sub.to_dict(for_json=True)
    truth = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True}).to_dict(
        for_json=True
    )
    second = int(time.time())
    before = refetches("subscription", "same_second")
    # The newer state is delivered first, then the older one from the same second.
    hooks.deliver(event_obj("customer.subscription.updated", truth, created=second))
    hooks.deliver(event_obj("customer.subscription.updated", first, created=second))
    assert refetches("subscription", "same_second") == before + 1
    assert hooks.get(Subscription, sub.id).cancel_at_period_end is True


def test_a_backlog_of_same_second_updates_asks_stripe_once(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    """Deliveries that come well after their events (a backlog, retries): Stripe's copy, read
    after every one of them was made, settles the rest of the same second without asking again."""
    customer = client.v1.customers.create(
        params={"name": "v0", "metadata": {"tollgate_customer_id": "acme"}}
    )
    versions = [
        client.v1.customers.update(customer.id, params={"name": f"v{n}"}).to_dict(for_json=True)
        for n in (1, 2, 3)
    ]
    made = int(time.time()) - 10  # the three events' second, ten seconds before their delivery
    created = customer.to_dict(for_json=True)
    hooks.deliver(event_obj("customer.created", created, created=made - 1))
    before = refetches("customer", "same_second")
    hooks.deliver(event_obj("customer.updated", versions[0], created=made))
    hooks.deliver(event_obj("customer.updated", versions[2], created=made))  # asks Stripe: v3
    hooks.deliver(event_obj("customer.updated", versions[1], created=made))  # in Stripe's copy
    assert refetches("customer", "same_second") == before + 1
    assert hooks.get(Customer, "acme").name == "v3"
    # A newer event is still applied over the copy.
    newer = client.v1.customers.update(customer.id, params={"name": "v4"}).to_dict(for_json=True)
    hooks.deliver(event_obj("customer.updated", newer, created=int(time.time()) + 5))
    assert hooks.get(Customer, "acme").name == "v4"


def test_a_same_second_invoice_update_is_settled_by_progress_without_a_fetch(
    hooks: Hooks,
) -> None:
    cus_id = known_customer(hooks)
    in_id = new_id("in")
    paid = invoice_obj(in_id, cus_id, status="paid", amount_paid=2900, attempt_count=1)
    finalized = invoice_obj(in_id, cus_id, status="open")
    before = refetches("invoice", "same_second")
    hooks.deliver(event_obj("invoice.paid", paid, created=T0))
    hooks.deliver(event_obj("invoice.finalized", finalized, created=T0))
    assert hooks.get(Invoice, in_id).status == "paid"
    assert refetches("invoice", "same_second") == before


def test_refetches_are_counted_in_metrics(hooks: Hooks) -> None:
    text = hooks.api.get("/metrics").text
    assert "tollgate_stripe_refetches_total" in text


# -- failures and retries ------------------------------------------------------------------------


def _rename(db: Database, old: str, new: str) -> None:
    with db.engine.begin() as connection:
        connection.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


def test_a_forced_database_error_is_500_and_the_retry_job_applies_it_once(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    event = event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id))
    version = hooks.get(Customer, "acme").state_version
    _rename(hooks.db, "subscription_items", "subscription_items_away")
    try:
        answer = hooks.post(event)
    finally:
        _rename(hooks.db, "subscription_items_away", "subscription_items")
    assert answer.status_code == 500
    assert answer.json()["error"]["type"] == "webhook_processing_error"
    stored = hooks.get(StripeEvent, event["id"])
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert "subscription_items" in (stored.last_error or "")
    assert stored.next_attempt_at is not None
    # The failed transaction left nothing behind: no subscription, no audit, no invalidation.
    assert hooks.count(Subscription) == 0
    assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 0
    assert hooks.get(Customer, "acme").state_version == version

    not_yet = FrozenClock(stored.next_attempt_at - timedelta(seconds=1))
    assert (
        retry_failed_webhooks(
            db=hooks.db, gateway=None, clock=not_yet, dunning=hooks.container.dunning_policy
        ).results
        == []
    )
    due = FrozenClock(stored.next_attempt_at)
    report = retry_failed_webhooks(
        db=hooks.db, gateway=None, clock=due, dunning=hooks.container.dunning_policy
    )
    assert [result.outcome for result in report.results] == ["succeeded"]
    assert hooks.get(Subscription, sub_id).status == "active"
    assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 1
    assert hooks.get(StripeEvent, event["id"]).attempts == 2
    assert (
        retry_failed_webhooks(
            db=hooks.db, gateway=None, clock=due, dunning=hooks.container.dunning_policy
        ).results
        == []
    )
    assert hooks.deliver(event)["status"] == "duplicate"


def test_a_write_failing_after_the_reads_leaves_nothing_applied(hooks: Hooks) -> None:
    # The audit insert is among the last writes (on PostgreSQL they go in one pipeline, and the
    # error comes back after the others ran): the whole event must still roll back.
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    hooks.deliver(event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id)))
    version = hooks.get(Customer, "acme").state_version
    event = event_obj(
        "customer.subscription.updated", subscription_obj(sub_id, cus_id, seats=4), created=T0 + 5
    )
    _rename(hooks.db, "audit_log", "audit_log_away")
    try:
        answer = hooks.post(event)
    finally:
        _rename(hooks.db, "audit_log_away", "audit_log")
    assert answer.status_code == 500
    stored = hooks.get(StripeEvent, event["id"])
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert "audit_log" in (stored.last_error or "")
    assert (hooks.get(Subscription, sub_id).seats, hooks.items(sub_id)) == (
        1,
        [("price_pro_month", 1)],
    )
    assert hooks.get(Customer, "acme").state_version == version
    # Stripe delivers it again: applied once.
    assert hooks.deliver(event)["status"] == "succeeded"
    assert hooks.get(Subscription, sub_id).seats == 4
    assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_that_died_is_replaced_without_failing_the_event(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)

    def deliver(event: dict[str, Any]) -> str:
        body = orjson.dumps(event)
        delivery = verify_stripe_delivery(
            raw_body=body,
            signature_header=stripe.WebhookSignature.generate_signature_header(
                body.decode(), SECRET
            ),
            settings=hooks.container.settings,
            clock=hooks.container.clock,
        )
        return apply_stripe_deliveries(
            db=hooks.db,
            deliveries=[delivery],
            clock=hooks.container.clock,
            dunning=hooks.container.dunning_policy,
        )[0].outcome

    # A pinned connection, as the webhook route's threads keep one, that dies between events.
    with hooks.db.pinned():
        first = customer_obj(cus_id, app_id="acme", email="first@acme.example")
        assert deliver(event_obj("customer.updated", first, created=T0 + 1)) == "succeeded"
        with hooks.db.write_connection() as pinned:
            backend = pinned.scalar(sa.text("SELECT pg_backend_pid()"))
        with hooks.db.engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        renamed = customer_obj(cus_id, app_id="acme", email="renamed@acme.example")
        assert deliver(event_obj("customer.updated", renamed, created=T0 + 5)) == "succeeded"
    assert hooks.get(Customer, "acme").email == "renamed@acme.example"


def test_an_event_for_a_customer_stripe_lacks_fails_until_stripe_retries_later(
    hooks: Hooks, sim: RunningSim
) -> None:
    cus_id, sub_id = new_id("cus"), new_id("sub")
    event = event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id))
    answer = hooks.post(event)
    assert answer.status_code == 500
    assert SECRET not in answer.text
    stored = hooks.get(StripeEvent, event["id"])
    assert stored.status == "failed"
    assert stored.last_error == f"UnknownStripeObject: customer {cus_id} is not in Stripe"
    with sim.sim.lock:
        sim.sim.platform.add(customer_obj(cus_id, app_id="late-org"))
    # Stripe delivers the same event again; a failed event is applied on redelivery.
    assert hooks.deliver(event)["status"] == "succeeded"
    assert hooks.get(Subscription, sub_id).customer_id == "late-org"
    assert hooks.get(StripeEvent, event["id"]).attempts == 2


def test_a_customer_made_in_the_dashboard_is_mirrored_under_its_stripe_id(hooks: Hooks) -> None:
    # No `tollgate_customer_id` in its metadata: the app never named it, so its id is the cus_ id.
    cus_id = new_id("cus")
    before = refetches("customer", "first_seen")
    hooks.deliver(event_obj("customer.created", customer_obj(cus_id)))
    customer = hooks.get(Customer, cus_id)
    assert (customer.stripe_customer_id, customer.email) == (cus_id, "billing@acme.example")
    assert refetches("customer", "first_seen") == before  # the event carried the whole customer
    assert _audit_actions(hooks, "customer", cus_id) == ["created"]


@pytest.mark.parametrize("app_id", [None, "org-7"])
def test_a_subscription_of_a_customer_first_seen_fetches_the_customer_once(
    hooks: Hooks, client: stripe.StripeClient, app_id: str | None
) -> None:
    # Made in Stripe's dashboard: Tollgate had no event about the customer before this one.
    prices = _sdk_catalog(client)
    metadata = {"tollgate_customer_id": app_id} if app_id else {}
    customer = client.v1.customers.create(
        params={"email": "owner@dashboard.example", "metadata": metadata}
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": prices["team"]}]}
    )
    event = event_obj("customer.subscription.created", sub.to_dict(for_json=True))
    before = refetches("customer", "first_seen")
    assert hooks.deliver(event)["status"] == "succeeded"
    assert refetches("customer", "first_seen") == before + 1
    local_id = app_id or customer.id
    mirrored = hooks.get(Customer, local_id)
    assert (mirrored.stripe_customer_id, mirrored.email) == (customer.id, "owner@dashboard.example")
    assert hooks.get(Subscription, sub.id).customer_id == local_id
    assert _audit_actions(hooks, "customer", local_id) == ["created"]
    # The app reads it like any other customer: entitlements follow the subscription at once.
    key = create_api_key(db=hooks.db, clock=hooks.container.clock, name="app", scope="read")
    answer = hooks.api.get(
        f"/v1/customers/{local_id}/entitlements",
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["plan"] == "team"
    # Later events of the same customer need no fetch: it is known now.
    renamed = {**customer.to_dict(for_json=True), "email": "finance@dashboard.example"}
    hooks.deliver(event_obj("customer.updated", renamed, created=int(time.time()) + 5))
    assert refetches("customer", "first_seen") == before + 1
    assert hooks.get(Customer, local_id).email == "finance@dashboard.example"


def test_an_event_stored_by_a_worker_that_died_is_applied_by_the_retry_job(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    body = orjson.dumps(
        event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id))
    )
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    # Stored as a delivery is before its handler runs; then the worker died.
    delivery = verify_stripe_delivery(
        raw_body=body,
        signature_header=header,
        settings=hooks.container.settings,
        clock=hooks.container.clock,
    )
    with hooks.db.write_connection() as connection:
        assert stripe_events.insert_new(connection, delivery.stored)
    assert hooks.get(StripeEvent, delivery.event_id).status == "pending"
    soon = FrozenClock(datetime.now(UTC) + timedelta(minutes=1))
    assert (
        retry_failed_webhooks(
            db=hooks.db, gateway=None, clock=soon, dunning=hooks.container.dunning_policy
        ).results
        == []
    )
    later = FrozenClock(datetime.now(UTC) + timedelta(minutes=6))
    assert (
        retry_failed_webhooks(
            db=hooks.db, gateway=None, clock=later, dunning=hooks.container.dunning_policy
        ).succeeded
        == 1
    )
    assert hooks.get(Subscription, sub_id).status == "active"


# -- operators: tollgate events list | replay ------------------------------------------------------


@pytest.fixture
def cli(hooks: Hooks, sim: RunningSim, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", hooks.db.url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli_events")
    monkeypatch.setenv("STRIPE_API_BASE", sim.url)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli_app, list(args))


def test_events_list_shows_newest_first_and_filters_by_status(hooks: Hooks, cli) -> None:  # type: ignore[no-untyped-def]
    old = event_obj("customer.created", customer_obj(new_id("cus")), created=T0)
    new = event_obj("product.created", example("product"), created=T0 + 5)
    hooks.deliver(old)
    hooks.deliver(new)
    listed = cli("events", "list")
    assert listed.exit_code == 0, listed.output
    header, _, *rows = listed.output.splitlines()
    assert header.split() == ["created", "(UTC)", "type", "customer", "status", "attempts", "id"]
    # Newest first, a line each: when, type, whose (the new customer is the app's now), status.
    assert [row.split()[2:7] for row in rows] == [
        ["product.created", "-", "ignored", "0", new["id"]],
        ["customer.created", old["data"]["object"]["id"], "succeeded", "1", old["id"]],
    ]
    assert rows[1].startswith("2026-") or rows[1][:4].isdigit()
    only = cli("events", "list", "--status", "succeeded", "--limit", "5")
    assert [row.split()[-1] for row in only.output.splitlines()[2:]] == [old["id"]]
    as_json = json.loads(cli("events", "list", "--json").output)
    assert [(event["id"], event["status"]) for event in as_json] == [
        (new["id"], "ignored"),
        (old["id"], "succeeded"),
    ]
    bad = cli("events", "list", "--status", "done")
    assert bad.exit_code == 2
    assert bad.output.strip() == (
        "error: status must be one of pending, processing, succeeded, failed, ignored"
    )


def test_events_replay_reapplies_one_event_harmlessly(hooks: Hooks, cli) -> None:  # type: ignore[no-untyped-def]
    cus_id = known_customer(hooks)
    event = event_obj("customer.subscription.created", subscription_obj(new_id("sub"), cus_id))
    hooks.deliver(event)
    replayed = cli("events", "replay", event["id"])
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output.strip() == f"{event['id']}: succeeded (0 change(s))"
    assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 1
    missing = cli("events", "replay", "evt_missing")
    assert missing.exit_code == 2
    assert missing.output.strip() == "error: no stored Stripe event evt_missing"


def test_events_retry_runs_the_retry_job_once(hooks: Hooks, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("events", "retry").output.strip() == "0 event(s) retried: 0 applied, 0 failed"


# -- concurrency, over real HTTP ----------------------------------------------------------------


@contextmanager
def serving(container: Container) -> Iterator[str]:
    """Serve Tollgate on a free port in a background thread, as `tollgate serve` would."""
    port = free_port()
    config = uvicorn.Config(
        create_app(container), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tollgate-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/webhooks/stripe"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _post_at_once(url: str, bodies: list[bytes]) -> list[int]:
    """POST every body from its own thread, all released at the same moment."""
    barrier = threading.Barrier(len(bodies))

    def post(body: bytes) -> int:
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            return http.post(
                url,
                content=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            ).status_code

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_fifty_copies_of_one_event_at_once_apply_once_and_all_answer_200(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    event = event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id, seats=7))
    version = hooks.get(Customer, "acme").state_version
    with serving(hooks.container) as url:
        statuses = _post_at_once(url, [orjson.dumps(event)] * 50)
    assert statuses == [200] * 50
    assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 1
    assert hooks.get(StripeEvent, event["id"]).attempts == 1
    assert hooks.get(Subscription, sub_id).seats == 7
    assert hooks.get(Customer, "acme").state_version == version + 1


def test_events_sharing_a_transaction_fail_alone_and_the_rest_apply_once(hooks: Hooks) -> None:
    # Group commit: deliveries queued together share one transaction. One that fails (here a
    # subscription item without an id, which its handler cannot read) must fail only itself.
    cus_id = known_customer(hooks)
    sub_id = new_id("sub")
    hooks.deliver(event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id)))
    version = hooks.get(Customer, "acme").state_version
    seats = event_obj(
        "customer.subscription.updated", subscription_obj(sub_id, cus_id, seats=5), created=T0 + 5
    )
    broken_obj = subscription_obj(new_id("sub"), cus_id)
    del broken_obj["items"]["data"][0]["id"]
    broken = event_obj("customer.subscription.updated", broken_obj, created=T0 + 5)
    renamed = event_obj(
        "customer.updated",
        customer_obj(cus_id, app_id="acme", email="ops@acme.example"),
        created=T0 + 6,
    )
    unknown = event_obj("product.created", {"id": "prod_1", "object": "product"})
    group = [seats, broken, renamed, seats, unknown]

    results = _apply_group(hooks, group)
    assert [result.outcome for result in results] == [
        "succeeded",
        "failed",
        "succeeded",
        "duplicate",
        "ignored",
    ]
    assert results[0].customers == ("acme",)
    assert "KeyError" in (results[1].error or "")
    failed = hooks.get(StripeEvent, broken["id"])
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert hooks.get(StripeEvent, unknown["id"]).status == "ignored"
    assert hooks.get(Subscription, sub_id).seats == 5
    assert hooks.get(Customer, "acme").email == "ops@acme.example"
    for event in (seats, renamed):
        assert hooks.get(StripeEvent, event["id"]).attempts == 1
        assert hooks.count(AuditLog, AuditLog.event_id == event["id"]) == 1
    assert hooks.get(Customer, "acme").state_version == version + 2
    # Without a failure, a group commits together, each event applied and audited once.
    later = [
        event_obj(
            "customer.subscription.updated",
            subscription_obj(sub_id, cus_id, seats=count),
            created=T0 + 10 + count,
        )
        for count in (6, 7, 8)
    ]
    results = _apply_group(hooks, [*later, later[0]])
    assert [result.outcome for result in results] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "duplicate",
    ]
    assert hooks.get(Subscription, sub_id).seats == 8
    assert hooks.get(Customer, "acme").state_version == version + 5
    assert hooks.count(AuditLog, AuditLog.event_id.in_([e["id"] for e in later])) == 3


def test_an_event_that_needs_stripe_is_parked_and_its_group_goes_on(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    """In a group, a same-second event whose order Stripe must settle is parked under the
    writer's lease (nothing of it written) and the events around it commit in the same
    transaction; then its own path fetches the object and applies it, once."""
    acme = client.v1.customers.create(
        params={"name": "v0", "metadata": {"tollgate_customer_id": "acme"}}
    )
    beta = client.v1.customers.create(
        params={"name": "b0", "metadata": {"tollgate_customer_id": "beta"}}
    )
    made = int(time.time())
    for customer in (acme, beta):
        hooks.deliver(
            event_obj("customer.created", customer.to_dict(for_json=True), created=made - 1)
        )
    v1 = client.v1.customers.update(acme.id, params={"name": "v1"}).to_dict(for_json=True)
    v2 = client.v1.customers.update(acme.id, params={"name": "v2"}).to_dict(for_json=True)
    b1 = client.v1.customers.update(beta.id, params={"name": "b1"}).to_dict(for_json=True)
    group = [
        event_obj("customer.updated", v1, created=made),
        event_obj("customer.updated", v2, created=made),  # same second, differs: ask Stripe
        event_obj("customer.updated", b1, created=made),
    ]
    deliveries = [_verified(hooks, event) for event in [*group, group[1]]]
    before = refetches("customer", "same_second")
    commits: list[object] = []
    count_commit = commits.append
    sa.event.listen(hooks.db.engine, "commit", count_commit)
    try:
        results = apply_stripe_deliveries(
            db=hooks.db,
            deliveries=deliveries,
            clock=hooks.container.clock,
            dunning=hooks.container.dunning_policy,
        )
    finally:
        sa.event.remove(hooks.db.engine, "commit", count_commit)
    assert len(commits) == 1  # one transaction for the whole group, the parked event in it
    assert [result.outcome for result in results] == [
        "succeeded",
        "pending",
        "succeeded",
        "pending",
    ]
    parked = results[1]
    assert parked.leased and parked.need is not None and not results[3].leased
    stored = hooks.get(StripeEvent, group[1]["id"])
    assert (stored.status, stored.attempts, stored.processed_at) == ("processing", 0, None)
    assert hooks.count(AuditLog, AuditLog.event_id == group[1]["id"]) == 0
    assert (hooks.get(Customer, "acme").name, hooks.get(Customer, "beta").name) == ("v1", "b1")
    # From the stored payload (as the retry job would); the intake passes the event it parsed.
    assert _finish_parked(hooks, parked, with_event=False) == "succeeded"
    assert refetches("customer", "same_second") == before + 1
    assert hooks.get(Customer, "acme").name == "v2"
    stored = hooks.get(StripeEvent, group[1]["id"])
    assert (stored.status, stored.attempts) == ("succeeded", 1)
    assert hooks.count(AuditLog, AuditLog.event_id == group[1]["id"]) == 1


def test_a_parked_event_applied_meanwhile_is_a_duplicate_when_its_worker_finishes(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    """The worker that parked an event finishes it from the event as it arrived: its row is
    claimed and marked in one statement, which leaves alone a row applied meanwhile (say, by the
    retry job once the lease ran out): it answers duplicate, and nothing is applied twice."""
    acme = client.v1.customers.create(
        params={"name": "v0", "metadata": {"tollgate_customer_id": "acme"}}
    )
    made = int(time.time())
    hooks.deliver(event_obj("customer.created", acme.to_dict(for_json=True), created=made - 1))
    v1 = client.v1.customers.update(acme.id, params={"name": "v1"}).to_dict(for_json=True)
    v2 = client.v1.customers.update(acme.id, params={"name": "v2"}).to_dict(for_json=True)
    pair = [
        event_obj("customer.updated", v1, created=made),
        event_obj("customer.updated", v2, created=made),  # same second, differs: ask Stripe
    ]
    results = apply_stripe_deliveries(
        db=hooks.db,
        deliveries=[_verified(hooks, event) for event in pair],
        clock=hooks.container.clock,
        dunning=hooks.container.dunning_policy,
    )
    parked = results[1]
    assert parked.pending and parked.leased and parked.event == pair[1]

    with hooks.db.engine.begin() as connection:  # applied elsewhere meanwhile
        connection.execute(
            sa.text("UPDATE stripe_events SET status = 'succeeded', attempts = 1 WHERE id = :id"),
            {"id": parked.event_id},
        )
    assert _finish_parked(hooks, parked) == "duplicate"
    assert hooks.get(Customer, "acme").name == "v1"
    assert hooks.count(AuditLog, AuditLog.event_id == parked.event_id) == 0
    assert hooks.get(StripeEvent, parked.event_id).attempts == 1
    with hooks.db.engine.begin() as connection:  # back to parked: this time its worker applies it
        connection.execute(
            sa.text("UPDATE stripe_events SET status = 'processing' WHERE id = :id"),
            {"id": parked.event_id},
        )
    assert _finish_parked(hooks, parked) == "succeeded"
    assert hooks.get(Customer, "acme").name == "v2"
    stored = hooks.get(StripeEvent, parked.event_id)
    assert (stored.status, stored.attempts, stored.last_error) == ("succeeded", 2, None)
    assert hooks.count(AuditLog, AuditLog.event_id == parked.event_id) == 1
    assert _finish_parked(hooks, parked) == "duplicate"


class _SlowReads(BaseHTTPRequestHandler):
    """Stripe's address: GETs of the objects named in `slow` answered after `delay` seconds,
    everything else passed on to the simulator at once."""

    sim_url: str
    slow: tuple[str, ...]
    delay: float

    def _pass_on(self, method: str) -> None:
        if method == "GET" and self.path.startswith(self.slow):
            time.sleep(self.delay)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        url = self.sim_url + self.path
        pass_back(self, httpx.request(method, url, headers=headers, content=body))

    def do_GET(self) -> None:
        self._pass_on("GET")

    def do_POST(self) -> None:
        self._pass_on("POST")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_slow_stripe_holds_up_no_other_delivery(
    db: Database,
    sim: RunningSim,
    client: stripe.StripeClient,
    make_settings: Callable[..., Settings],
) -> None:
    """Two events that need Stripe, whose objects Stripe is slow to give, finish at once on
    threads of their own, and a delivery meanwhile that needs nothing from Stripe is answered
    without waiting for either."""
    names = {"acme": "a0", "beta": "b0", "gamma": "c0"}
    made = {
        app_id: client.v1.customers.create(
            params={"name": name, "metadata": {"tollgate_customer_id": app_id}}
        )
        for app_id, name in names.items()
    }
    now = int(time.time())
    delay = 1.5
    slow = tuple(f"/v1/customers/{made[app_id].id}" for app_id in ("acme", "gamma"))
    handler = type("Slow", (_SlowReads,), {"sim_url": sim.url, "slow": slow, "delay": delay})
    with serving_handler(handler) as front:
        settings = make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET, STRIPE_API_BASE=front)
        container = build_container(settings)
        with TestClient(create_app(container)) as api:
            hooks = Hooks(api, container)
            for customer in made.values():
                created = event_obj(
                    "customer.created", customer.to_dict(for_json=True), created=now - 1
                )
                hooks.deliver(created)
            later: dict[str, list[dict[str, Any]]] = {}
            for app_id, customer in made.items():
                versions = [
                    client.v1.customers.update(customer.id, params={"name": f"{app_id} v{n}"})
                    for n in (1, 2)
                ]
                # The same second, other names: the second needs Stripe to order them.
                later[app_id] = [
                    event_obj("customer.updated", v.to_dict(for_json=True), created=now)
                    for v in versions
                ]
            for app_id in ("acme", "gamma"):
                hooks.deliver(later[app_id][0])
            answered: dict[str, float] = {}
            started = time.monotonic()

            def deliver(app_id: str, event: dict[str, Any]) -> None:
                hooks.deliver(event)
                answered[app_id] = time.monotonic() - started

            with ThreadPoolExecutor(3) as pool:
                waiting = [
                    pool.submit(deliver, app_id, later[app_id][1]) for app_id in ("acme", "gamma")
                ]
                time.sleep(0.2)  # both are waiting for Stripe now
                pool.submit(deliver, "beta", later["beta"][1]).result()
                for future in waiting:
                    future.result()
        container.close()
    assert answered["beta"] < delay  # not held up by the slow reads
    assert delay <= answered["acme"] < 2 * delay and delay <= answered["gamma"] < 2 * delay
    with db.transaction() as session:
        final = {app_id: session.get(Customer, app_id).name for app_id in names}
    assert final == {app_id: f"{app_id} v2" for app_id in names}


def _finish_parked(hooks: Hooks, parked: ProcessResult, *, with_event: bool = True) -> str:
    """Finish a parked event as its worker does (fetch, then apply); return the outcome."""
    return process_stripe_event(
        db=hooks.db,
        gateway=hooks.container.stripe,
        event_id=parked.event_id,
        clock=hooks.container.clock,
        dunning=hooks.container.dunning_policy,
        need=parked.need,
        leased=True,
        event=parked.event if with_event else None,
    ).outcome


def test_an_event_whose_writes_reached_the_database_cannot_be_dropped(hooks: Hooks) -> None:
    with hooks.db.write_connection() as connection:
        group = GroupWrites()
        group.queued.append((sa.text("SELECT 1"), None))  # an earlier event's write
        ctx = _context(hooks, connection, group)
        ctx.rows(sa.select(sa.literal(1)))  # flushes the earlier event's write only
        ctx.write(sa.text("SELECT 2"))
        assert ctx.undoable
        ctx.drop_writes()
        assert group.queued == []
        ctx.write(sa.text("SELECT 3"))
        ctx.rows(sa.select(sa.literal(1)))  # its own write goes with the read
        assert not ctx.undoable
        with pytest.raises(RuntimeError):
            ctx.drop_writes()
        other = _context(hooks, connection, group)
        _ = other.connection  # handed to another service: its writes are out of sight
        assert not other.undoable
        linking = _context(hooks, connection, group)
        writes = sa.update(StripeEvent.__table__).where(sa.false()).values(attempts=0)
        linking.read([(writes, {})])  # a read that writes (UPDATE … RETURNING, say)
        assert not linking.undoable


def _context(hooks: Hooks, connection: sa.Connection, group: GroupWrites) -> HandlerContext:
    return HandlerContext(
        transaction=connection,
        event=event_obj("customer.updated", customer_obj(new_id("cus"))),
        now=datetime.now(UTC),
        dunning=hooks.container.dunning_policy,
        fetched={},
        group=group,
    )


def _apply_group(hooks: Hooks, events: list[dict[str, Any]]) -> list[ProcessResult]:
    """Verify the events as deliveries and apply them as one group, as the writer does."""
    return apply_stripe_deliveries(
        db=hooks.db,
        deliveries=[_verified(hooks, event) for event in events],
        clock=hooks.container.clock,
        dunning=hooks.container.dunning_policy,
    )


def _verified(hooks: Hooks, event: dict[str, Any]) -> Delivery:
    body = orjson.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    return verify_stripe_delivery(
        raw_body=body,
        signature_header=header,
        settings=hooks.container.settings,
        clock=hooks.container.clock,
    )


def _sdk_catalog(client: stripe.StripeClient) -> dict[str, str]:
    product = client.v1.products.create(params={"name": "Plans"})
    prices = {}
    for plan, amount in (("pro", 2900), ("team", 9900)):
        prices[plan] = client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": amount,
                "recurring": {"interval": "month"},
                "metadata": {"tollgate_plan": plan, "tollgate_interval": "month"},
            }
        ).id
    return prices


def test_concurrent_events_of_one_subscription_end_in_stripes_final_state(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    prices = _sdk_catalog(client)
    customer = client.v1.customers.create(params={"metadata": {"tollgate_customer_id": "acme"}})
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": prices["pro"]}],
            "trial_period_days": 9,
        }
    )
    item_id = sub["items"].data[0].id
    snapshots = [sub.to_dict(for_json=True)]
    for change in (
        {"items": [{"id": item_id, "quantity": 3}]},
        {"cancel_at_period_end": True},
        {"items": [{"id": item_id, "price": prices["team"]}]},
        {"cancel_at_period_end": False},
        {"items": [{"id": item_id, "quantity": 8}]},
    ):
        updated = client.v1.subscriptions.update(
            sub.id, params={**change, "proration_behavior": "none"}
        )
        snapshots.append(updated.to_dict(for_json=True))
    second = int(time.time())
    created = [second, second, second + 1, second + 1, second + 1, second + 2]
    events = [
        event_obj("customer.subscription.updated", snapshot, created=when)
        for snapshot, when in zip(snapshots, created, strict=True)
    ]
    bodies = [orjson.dumps(event) for event in events for _ in range(3)]
    random.Random(7).shuffle(bodies)
    with serving(hooks.container) as url:
        assert _post_at_once(url, bodies) == [200] * len(bodies)
    row = hooks.get(Subscription, sub.id)
    assert (row.plan, row.seats, row.cancel_at_period_end, row.status) == (
        "team",
        8,
        False,
        "trialing",
    )
    assert hooks.count(StripeEvent, StripeEvent.status != "succeeded") == 0


@contextmanager
def server_process(database_url: str, sim_url: str) -> Iterator[str]:
    """Run `tollgate serve` as a process of its own, on the given database."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    env.update(
        TOLLGATE_ENV="test",
        TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_CATALOG=str(EXAMPLE_CATALOG),
        STRIPE_WEBHOOK_SECRETS=SECRET,
        STRIPE_SECRET_KEY="sk_test_two_processes",
        STRIPE_API_BASE=sim_url,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tollgate.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "tollgate serve exited"
            assert time.monotonic() < deadline, "tollgate serve did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/webhooks/stripe"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_two_server_processes_on_one_database_apply_each_event_once(
    hooks: Hooks, sim: RunningSim, client: stripe.StripeClient
) -> None:
    prices = _sdk_catalog(client)
    customer = client.v1.customers.create(params={"metadata": {"tollgate_customer_id": "acme"}})
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": prices["pro"]}],
            "trial_period_days": 9,
        }
    )
    item_id = sub["items"].data[0].id
    snapshots = [sub.to_dict(for_json=True)]
    for change in (
        {"items": [{"id": item_id, "quantity": 4}]},
        {"cancel_at_period_end": True},
        {"items": [{"id": item_id, "price": prices["team"], "quantity": 6}]},
    ):
        updated = client.v1.subscriptions.update(
            sub.id, params={**change, "proration_behavior": "none"}
        )
        snapshots.append(updated.to_dict(for_json=True))
    second = int(time.time())
    events = [
        event_obj("customer.subscription.updated", snapshot, created=second + index // 2)
        for index, snapshot in enumerate(snapshots)
    ]
    bodies = [orjson.dumps(event) for event in events for _ in range(12)]
    random.Random(11).shuffle(bodies)
    with (
        server_process(hooks.db.url, sim.url) as first,
        server_process(hooks.db.url, sim.url) as second_server,
    ):
        half = len(bodies) // 2
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = pool.map(
                lambda pair: _post_at_once(*pair),
                [(first, bodies[:half]), (second_server, bodies[half:])],
            )
            statuses = [status for batch in answers for status in batch]
    assert statuses == [200] * len(bodies)
    row = hooks.get(Subscription, sub.id)
    assert (row.plan, row.seats, row.cancel_at_period_end) == ("team", 6, True)
    for event in events:
        assert hooks.get(StripeEvent, event["id"]).attempts == 1
    assert hooks.count(StripeEvent, StripeEvent.status != "succeeded") == 0


# -- order independence, as a property ---------------------------------------------------------

STEPS = st.one_of(
    st.sampled_from(
        ["activate", "past_due", "recover", "cancel_at_period_end", "undo_cancel", "renew"]
    ),
    st.sampled_from(["plan:pro", "plan:team"]),
    st.integers(1, 20).map(lambda seats: f"seats:{seats}"),
)


def _mutate(sim: RunningSim, sub_id: str, step: str, prices: dict[str, str]) -> None:
    """Arrange Stripe's world: move the stored subscription in stripesim one step along."""
    with sim.sim.lock:
        sub = sim.sim.platform.find(sub_id)
        assert sub is not None
        item = sim.sim.platform.find(sub["items"]["data"][0]["id"])
        assert item is not None
        kind, _, value = step.partition(":")
        if kind in ("activate", "recover"):
            sub["status"] = "active"
        elif kind == "past_due":
            sub["status"] = "past_due"
        elif kind in ("cancel_at_period_end", "undo_cancel"):
            sub["cancel_at_period_end"] = kind == "cancel_at_period_end"
        elif kind == "renew":
            item["current_period_start"] += MONTH
            item["current_period_end"] += MONTH
        elif kind == "plan":
            item["price"] = {"id": prices[value]}
        elif kind == "seats":
            item["quantity"] = int(value)
        elif kind == "canceled":
            sub.update(
                status="canceled",
                cancel_at_period_end=False,
                canceled_at=item["current_period_start"],
                ended_at=item["current_period_start"],
            )


def _mirror(hooks: Hooks, sub_id: str) -> tuple[Any, ...]:
    row = hooks.get(Subscription, sub_id)
    keys = (
        "status",
        "cancel_at_period_end",
        "plan",
        "seats",
        "current_period_start",
        "current_period_end",
        "canceled_at",
    )
    return (*(getattr(row, key) for key in keys), tuple(hooks.items(sub_id)))


def _forget(hooks: Hooks, sub_id: str) -> None:
    with hooks.db.transaction() as session:
        session.execute(
            sa.delete(SubscriptionItem).where(SubscriptionItem.subscription_id == sub_id)
        )
        session.execute(sa.delete(Subscription).where(Subscription.id == sub_id))
        session.execute(sa.delete(StripeEvent).where(StripeEvent.object_id == sub_id))
        session.execute(sa.delete(AuditLog).where(AuditLog.object_id == sub_id))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(STEPS, min_size=1, max_size=7),
    ends_canceled=st.booleans(),
    gaps=st.lists(st.sampled_from([0, 0, 1, 2]), min_size=8, max_size=8),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(0, 7), max_size=6),
)
def test_any_order_with_duplicates_ends_in_the_same_mirror_as_in_order(
    hooks: Hooks,
    sim: RunningSim,
    client: stripe.StripeClient,
    steps: list[str],
    ends_canceled: bool,
    gaps: list[int],
    order: random.Random,
    duplicates: list[int],
) -> None:
    world = hooks.world
    if not world:
        world["prices"] = _sdk_catalog(client)
        world["customer"] = client.v1.customers.create(
            params={"metadata": {"tollgate_customer_id": "acme"}}
        ).id
    prices: dict[str, str] = world["prices"]
    sub = client.v1.subscriptions.create(
        params={
            "customer": world["customer"],
            "items": [{"price": prices["pro"]}],
            "trial_period_days": 14,
        }
    )
    lifecycle = [*steps, *(["canceled"] if ends_canceled else [])]
    snapshots = [("customer.subscription.created", sub.to_dict(for_json=True))]
    for step in lifecycle:
        _mutate(sim, sub.id, step, prices)
        event_type = (
            "customer.subscription.deleted"
            if step == "canceled"
            else "customer.subscription.updated"
        )
        snapshots.append(
            (event_type, client.v1.subscriptions.retrieve(sub.id).to_dict(for_json=True))
        )
    # Up to nine snapshots, many in the same second (a gap of 0), never going back in time.
    created = [T0 + sum(gaps[:index]) for index in range(len(snapshots))]
    events = [
        event_obj(event_type, obj, created=when)
        for (event_type, obj), when in zip(snapshots, created, strict=True)
    ]

    for event in events:
        hooks.deliver(event)
    in_order = _mirror(hooks, sub.id)
    _forget(hooks, sub.id)

    deliveries = [*events, *(events[index % len(events)] for index in duplicates)]
    order.shuffle(deliveries)
    for event in deliveries:
        hooks.deliver(event)
    assert _mirror(hooks, sub.id) == in_order
    truth = events[-1]["data"]["object"]
    assert in_order[0] == truth["status"]
    assert in_order[1] == truth["cancel_at_period_end"]


# The path a paid subscription takes, from its trial to its end (plan changes are put in it).
LIFECYCLE = ["activate", "past_due", "recover", "cancel_at_period_end", "canceled"]


def _money_events(
    cus_id: str, sub_id: str, refunds: list[int], *, refund_all: bool
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    """The renewal's invoice, its charge, and refunds of it, in the order Stripe sends them."""
    ids = {"invoice": new_id("in"), "payment_intent": new_id("pi"), "charge": new_id("ch")}
    in_id, pi_id, ch_id = ids["invoice"], ids["payment_intent"], ids["charge"]
    amount = 2900
    amounts = [*refunds, amount - sum(refunds)] if refund_all else refunds
    events: list[tuple[str, dict[str, Any]]] = [
        ("invoice.created", invoice_obj(in_id, cus_id, sub_id=sub_id)),
        ("invoice.finalized", invoice_obj(in_id, cus_id, sub_id=sub_id, status="open")),
        (
            "invoice.paid",
            invoice_obj(
                in_id,
                cus_id,
                sub_id=sub_id,
                status="paid",
                amount_paid=amount,
                attempt_count=1,
                payment_intent=pi_id,
            ),
        ),
        ("charge.succeeded", charge_obj(ch_id, cus_id, payment_intent=pi_id, amount=amount)),
    ]
    made: list[dict[str, Any]] = []
    for index, part in enumerate(amounts):
        refund = refund_obj(f"re_{ch_id[3:]}{index}", ch_id, part)
        events.append(("refund.created", {**refund, "status": "pending"}))
        made.append(refund)
        charge = charge_obj(
            ch_id, cus_id, payment_intent=pi_id, amount=amount, refunds=[dict(r) for r in made]
        )
        events.append(("charge.refunded", charge))
    return events, ids


def _money_mirror(hooks: Hooks, ids: dict[str, str]) -> tuple[Any, ...]:
    invoice = hooks.get(Invoice, ids["invoice"])
    charge = hooks.get(Charge, ids["charge"])
    with hooks.db.transaction() as session:
        refunds = sorted(
            (row.id, row.charge_id, row.amount, row.status)
            for row in session.scalars(sa.select(Refund).where(Refund.charge_id == ids["charge"]))
        )
    return (
        (invoice.customer_id, invoice.subscription_id, invoice.status, invoice.amount_paid),
        (
            charge.customer_id,
            charge.invoice_id,
            charge.status,
            charge.amount_refunded,
            charge.refunded,
        ),
        tuple(refunds),
    )


def _forget_everything_of(hooks: Hooks, sub_id: str, ids: dict[str, str]) -> None:
    with hooks.db.transaction() as session:
        refund_ids = list(
            session.scalars(sa.select(Refund.id).where(Refund.charge_id == ids["charge"]))
        )
        objects = [sub_id, ids["invoice"], ids["charge"], *refund_ids]
        session.execute(sa.delete(Refund).where(Refund.charge_id == ids["charge"]))
        session.execute(sa.delete(Charge).where(Charge.id == ids["charge"]))
        session.execute(
            sa.delete(InvoicePayment).where(InvoicePayment.invoice_id == ids["invoice"])
        )
        session.execute(sa.delete(Invoice).where(Invoice.id == ids["invoice"]))
        session.execute(sa.delete(StripeEvent).where(StripeEvent.object_id.in_(objects)))
        session.execute(sa.delete(AuditLog).where(AuditLog.object_id.in_(objects)))
    _forget(hooks, sub_id)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan_changes=st.lists(
        st.tuples(st.integers(0, len(LIFECYCLE) - 1), st.sampled_from(["pro", "team"])),
        max_size=3,
    ),
    refunds=st.lists(st.integers(100, 900), min_size=1, max_size=3),
    refund_all=st.booleans(),
    gaps=st.lists(st.sampled_from([0, 0, 1]), min_size=24, max_size=24),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(0, 40), max_size=8),
)
def test_a_lifecycle_with_plan_changes_and_refunds_ends_the_same_in_any_order(
    hooks: Hooks,
    sim: RunningSim,
    client: stripe.StripeClient,
    plan_changes: list[tuple[int, str]],
    refunds: list[int],
    refund_all: bool,
    gaps: list[int],
    order: random.Random,
    duplicates: list[int],
) -> None:
    # Trial → active → past_due → active → canceling → canceled, with plan changes anywhere
    # before the end, the renewal's invoice paid by a charge that is then refunded (in part or
    # whole). Many events share a second; duplicates are delivered at any point.
    world = hooks.world
    if not world:
        world["prices"] = _sdk_catalog(client)
        world["customer"] = client.v1.customers.create(
            params={"metadata": {"tollgate_customer_id": "acme"}}
        ).id
    prices: dict[str, str] = world["prices"]
    sub = client.v1.subscriptions.create(
        params={
            "customer": world["customer"],
            "items": [{"price": prices["pro"]}],
            "trial_period_days": 14,
        }
    )
    assert sub.status == "trialing"
    steps = list(LIFECYCLE)
    for position, plan in sorted(plan_changes, reverse=True):
        steps.insert(position, f"plan:{plan}")
    snapshots = [("customer.subscription.created", sub.to_dict(for_json=True))]
    for step in steps:
        _mutate(sim, sub.id, step, prices)
        kind = (
            "customer.subscription.deleted"
            if step == "canceled"
            else "customer.subscription.updated"
        )
        snapshots.append((kind, client.v1.subscriptions.retrieve(sub.id).to_dict(for_json=True)))
    money, ids = _money_events(world["customer"], sub.id, refunds, refund_all=refund_all)
    timeline = [*snapshots[:3], *money, *snapshots[3:]]
    events = [
        event_obj(kind, obj, created=T0 + sum(gaps[:index]))
        for index, (kind, obj) in enumerate(timeline)
    ]

    for event in events:
        hooks.deliver(event)
    in_order = (_mirror(hooks, sub.id), _money_mirror(hooks, ids))
    _forget_everything_of(hooks, sub.id, ids)

    deliveries = [*events, *(events[index % len(events)] for index in duplicates)]
    order.shuffle(deliveries)
    for event in deliveries:
        hooks.deliver(event)
    assert (_mirror(hooks, sub.id), _money_mirror(hooks, ids)) == in_order
    # And in-order delivery itself ended where Stripe did.
    (status, canceling, *_), (invoice, charge, refunded) = in_order
    assert (status, canceling) == ("canceled", False)
    assert invoice[2:] == ("paid", 2900)
    total = 2900 if refund_all else sum(refunds)
    assert charge == ("acme", ids["invoice"], "succeeded", total, refund_all)
    parts = [*refunds, *([2900 - sum(refunds)] if refund_all else [])]
    assert sorted(row[2] for row in refunded) == sorted(parts)
    assert {row[3] for row in refunded} == {"succeeded"}


def test_a_groups_inbox_rows_are_stored_exactly_as_delivered(hooks: Hooks) -> None:
    # A group's inbox rows go in as one statement (on PostgreSQL, one array per column): every
    # column must come back as the delivery's own row, the raw body byte for byte, nulls kept.
    cus_id = known_customer(hooks)
    quoted = customer_obj(cus_id, app_id="acme", email='"ops"@acme.example')
    quoted["name"] = 'Ünïcode \\ "quoted" — {braces}, commas'
    events = [
        event_obj("customer.updated", quoted, created=T0 + 20),
        {
            **event_obj("product.created", {"id": "prod_2", "object": "product"}),
            "account": "acct_1",
        },
    ]
    events[1].pop("api_version", None)
    deliveries = []
    for event in events:
        body = orjson.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
        deliveries.append(
            verify_stripe_delivery(
                raw_body=body,
                signature_header=header,
                settings=hooks.container.settings,
                clock=hooks.container.clock,
            )
        )
    results = apply_stripe_deliveries(
        db=hooks.db,
        deliveries=deliveries,
        clock=hooks.container.clock,
        dunning=hooks.container.dunning_policy,
    )
    assert [result.outcome for result in results] == ["succeeded", "ignored"]
    for delivery, status in zip(deliveries, ("succeeded", "ignored"), strict=True):
        row = hooks.get(StripeEvent, delivery.event_id)
        expected = {**delivery.stored, "status": status}
        for column in ("id", "type", "object_type", "object_id", "stripe_account", "api_version"):
            assert getattr(row, column) == expected[column], column
        assert (row.created, row.received_at) == (expected["created"], expected["received_at"])
        assert row.payload == expected["payload"]
        assert (row.status, row.last_error, row.next_attempt_at) == (status, None, None)
        assert row.processed_at is not None
    assert hooks.get(Customer, "acme").name == quoted["name"]


def test_a_group_with_two_events_of_one_subscription_applies_them_as_one_at_a_time(
    hooks: Hooks,
) -> None:
    # A group reads its subscriptions ahead in one go; an event of a subscription that an
    # earlier event of the group wrote must see that write, an older one must still lose to
    # it, another kind of event in between must not leave a stale read behind, and an event
    # naming another customer than the subscription's is still refused.
    acme, beta = known_customer(hooks), known_customer(hooks, app_id="beta")
    sub_a, sub_b = new_id("sub"), new_id("sub")
    hooks.deliver(event_obj("customer.subscription.created", subscription_obj(sub_a, acme)))
    hooks.deliver(event_obj("customer.subscription.created", subscription_obj(sub_b, beta)))
    versions = {app: hooks.get(Customer, app).state_version for app in ("acme", "beta")}

    def seats(sub_id: str, cus_id: str, count: int, created: int) -> dict[str, Any]:
        obj = subscription_obj(sub_id, cus_id, seats=count)
        return event_obj("customer.subscription.updated", obj, created=created)

    forged = seats(sub_a, beta, 40, T0 + 9)
    renamed = event_obj(
        "customer.updated",
        customer_obj(acme, app_id="acme", email="ops@acme.example"),
        created=T0 + 6,
    )
    group = [
        seats(sub_a, acme, 2, T0 + 5),
        seats(sub_b, beta, 3, T0 + 5),
        seats(sub_a, acme, 4, T0 + 6),
        seats(sub_a, acme, 9, T0 + 4),  # older than the one before it: skipped
        forged,
        renamed,
        seats(sub_b, beta, 5, T0 + 7),
        seats(sub_a, acme, 6, T0 + 8),
    ]
    results = _apply_group(hooks, group)
    assert [result.outcome for result in results] == ["succeeded"] * len(group)
    assert hooks.get(Subscription, sub_a).seats == 6
    assert hooks.get(Subscription, sub_b).seats == 5
    assert hooks.get(Subscription, sub_a).customer_id == "acme"
    assert hooks.get(Subscription, sub_a).watermark_event_id == group[-1]["id"]
    assert hooks.get(SubscriptionItem, f"si_{sub_a[4:]}").quantity == 6
    assert hooks.get(SubscriptionItem, f"si_{sub_b[4:]}").quantity == 5
    assert hooks.get(Customer, "acme").email == "ops@acme.example"
    assert hooks.count(AuditLog, AuditLog.event_id == forged["id"], AuditLog.action == "refused")
    # One audit row and one bump per change: a, b, a, (skipped), customer, b, a; the refusal.
    assert hooks.count(AuditLog, AuditLog.event_id.in_([e["id"] for e in group])) == 7
    assert hooks.get(Customer, "acme").state_version == versions["acme"] + 5
    assert hooks.get(Customer, "beta").state_version == versions["beta"] + 2


def test_a_group_of_customer_events_reads_them_ahead_and_applies_them_one_at_a_time(
    hooks: Hooks,
) -> None:
    # A group of customer events reads its customers ahead in one statement: an event of a
    # customer that an earlier event of the group wrote must see that write, an older one must
    # still lose to it, and another kind of event in between must not leave a stale read.
    acme, beta = known_customer(hooks), known_customer(hooks, app_id="beta")
    sub_a = new_id("sub")
    hooks.deliver(event_obj("customer.subscription.created", subscription_obj(sub_a, acme)))

    def email(cus_id: str, app_id: str, address: str, created: int) -> dict[str, Any]:
        obj = customer_obj(cus_id, app_id=app_id, email=address)
        return event_obj("customer.updated", obj, created=created)

    seats = event_obj(
        "customer.subscription.updated", subscription_obj(sub_a, acme, seats=3), created=T0 + 6
    )
    group = [
        email(acme, "acme", "one@acme.example", T0 + 5),
        email(beta, "beta", "one@beta.example", T0 + 5),
        email(acme, "acme", "two@acme.example", T0 + 6),
        email(acme, "acme", "old@acme.example", T0 + 4),  # older than the one before it
        seats,
        email(beta, "beta", "two@beta.example", T0 + 7),
        email(acme, "acme", "three@acme.example", T0 + 8),
    ]
    results = _apply_group(hooks, group)
    assert [result.outcome for result in results] == ["succeeded"] * len(group)
    assert hooks.get(Customer, "acme").email == "three@acme.example"
    assert hooks.get(Customer, "beta").email == "two@beta.example"
    assert hooks.get(Subscription, sub_a).seats == 3
    # One audit row per change: acme, beta, acme, (skipped), the subscription, beta, acme.
    assert hooks.count(AuditLog, AuditLog.event_id.in_([e["id"] for e in group])) == 6
