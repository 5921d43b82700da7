"""Issue 18, findings 10 and 11: reconciliation and dunning after lost deliveries.

10. A second failed payment attempt whose webhooks were lost changes only the invoice's
    `attempt_count` in Stripe; reconciliation must see it, and heal it as the failure it is
    (access reduced, `payment_failed_warning` sent), as the deliveries would have.
11. A payment Tollgate missed while down, healed by reconciliation, then delivered by Stripe's
    retry: one payment, one email. The test clock runs ahead of Tollgate's clock, as it did
    where this was found.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import stripe

from tests.e2e.conftest import DAY, SECRET, World
from tollgate.db.models import Customer, Invoice, Notification
from tollgate.services.reconcile import list_drifts, reconcile

HOUR = 3600
FAIL = "pm_card_chargeCustomerFail"


def set_card(world: World, customer: str, subscription: str, card: str) -> None:
    pm = world.stripe.v1.payment_methods.attach(card, params={"customer": customer})
    world.stripe.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    world.stripe.v1.subscriptions.update(subscription, params={"default_payment_method": pm.id})


def drop_deliveries(world: World, *ids: str) -> None:
    """Tollgate hears nothing more about these objects (or objects naming them)."""
    answer = httpx.post(
        f"{world.sim.url}/_sim/webhooks",
        json={"drop_objects": list(ids), "drop_related": list(ids)},
    )
    answer.raise_for_status()


def run_reconcile(world: World, since: int) -> Any:
    container = world.container
    return reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=datetime.fromtimestamp(since, UTC),
    )


def notices(world: World, customer_id: str) -> list[tuple[str, str]]:
    with world.db.transaction() as session:
        rows = session.scalars(
            sa.select(Notification)
            .where(Notification.customer_id == customer_id)
            .order_by(Notification.id)
        ).all()
        return [(row.template, row.cause) for row in rows]


def paying_trial(world: World, app_id: str, start: int) -> tuple[str, str, str]:
    """A Pro trial on a test clock at `start` whose card fails when the trial ends."""
    clock = world.test_clock(start)
    customer = world.create_customer(app_id, test_clock=clock)["stripe_customer_id"]
    paid = world.pay(world.checkout(app_id, plan="pro", interval="month")["url"])
    assert paid.status_code == 303, paid.text
    world.settle()
    subscription = world.subscription(app_id)["stripe_subscription_id"]
    set_card(world, customer, subscription, FAIL)
    return clock, customer, subscription


def test_a_lost_second_failed_attempt_is_found_by_attempt_count_and_dunned(world: World) -> None:
    start = 1_790_000_000
    clock, customer, subscription = paying_trial(world, "lapsed", start)
    trial_end = start + 14 * DAY
    world.advance(clock, trial_end + 2 * HOUR)  # attempt 1 fails, delivered
    (invoice,) = [i for i in world.invoices(customer) if i.amount_due > 0]
    assert world.container.db is not None
    with world.db.transaction() as session:
        assert session.get(Invoice, invoice.id).attempt_count == 1  # type: ignore[union-attr]
        assert session.get(Customer, "lapsed").dunning_access == "full"  # type: ignore[union-attr]
    drop_deliveries(world, invoice.id, subscription)
    world.advance(clock, trial_end + 2 * HOUR + 4 * DAY)  # attempt 2 fails, lost
    assert world.stripe.v1.invoices.retrieve(invoice.id).attempt_count == 2
    report = run_reconcile(world, start - DAY)
    drifts = [
        d for d in list_drifts(db=world.db, run_id=report.run_id) if d.object_id == invoice.id
    ]
    assert [(d.kind, d.local, d.stripe, d.healed) for d in drifts] == [
        ("status_differs", {"attempt_count": 1}, {"attempt_count": 2}, True)
    ]
    with world.db.transaction() as session:
        assert session.get(Invoice, invoice.id).attempt_count == 2  # type: ignore[union-attr]
        assert session.get(Customer, "lapsed").dunning_access == "reduced"  # type: ignore[union-attr]
    assert ("payment_failed_warning", f"{invoice.id}:2") in notices(world, "lapsed")


def redeliver(world: World, event_type: str, object_ids: set[str]) -> int:
    """Post Stripe's stored events of `event_type` for `object_ids` again, signed (its retry)."""
    listed = httpx.get(
        f"{world.sim.url}/v1/events",
        params={"type": event_type, "limit": 100},
        headers={"Authorization": "Bearer sk_test_e2e_observer"},
    ).json()["data"]
    sent = 0
    for event in listed:
        if event["data"]["object"]["id"] not in object_ids:
            continue
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, SECRET, int(time.time())
        )
        answer = httpx.post(
            f"{world.base_url}/webhooks/stripe",
            content=payload.encode(),
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        sent += 1
    return sent


def test_a_payment_healed_then_retried_by_stripe_sends_one_email(world: World) -> None:
    # Stripe's (test clock) time is two months ahead of Tollgate's.
    start = int((world.container.clock.now() + timedelta(days=60)).timestamp())
    clock, customer, subscription = paying_trial(world, "recovered", start)
    trial_end = start + 14 * DAY
    world.advance(clock, trial_end + 2 * HOUR)  # the trial's charge fails: dunning starts
    (first,) = [i for i in world.invoices(customer) if i.amount_due > 0]
    assert ("payment_failed_soft", f"{first.id}:1") in notices(world, "recovered")
    set_card(world, customer, subscription, "pm_card_visa")
    drop_deliveries(world, first.id, subscription)  # Tollgate is down from here
    world.advance(clock, trial_end + 2 * HOUR + 4 * DAY)  # the retry succeeds
    world.advance(clock, trial_end + 2 * HOUR + 32 * DAY)  # the renewal is paid
    paid = [i for i in world.invoices(customer) if i.amount_due > 0]
    assert [i.status for i in paid] == ["paid", "paid"]
    run_reconcile(world, start - DAY)
    assert redeliver(world, "invoice.paid", {i.id for i in paid}) == 2
    for invoice in paid:
        told = [t for t, cause in notices(world, "recovered") if cause == invoice.id]
        payment_notices = [t for t in told if t in ("payment_succeeded", "payment_recovered")]
        assert len(payment_notices) == 1, (invoice.id, told)
