"""Reconciliation after lost webhooks: Tollgate served, stripesim delivering, 20 deliveries lost.

The simulator drops every delivery about 20 randomly chosen objects (subscriptions, invoices,
charges, refunds, disputes) while they change in Stripe, or are made in it. Reconciliation must
report each one, with the right kind, heal it through the webhook handlers (audit rows under
`reconcile:<run>`), and a second run must find nothing and change nothing.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from tests.e2e.conftest import World
from tollgate.db.models import (
    AuditLog,
    Charge,
    Customer,
    CustomerChange,
    Dispute,
    Invoice,
    Refund,
    StripeEvent,
    Subscription,
)
from tollgate.services.reconcile import list_drifts, reconcile

TABLES = {
    "subscription": Subscription,
    "invoice": Invoice,
    "charge": Charge,
    "refund": Refund,
    "dispute": Dispute,
}


def _drop(world: World, *, objects: list[str] = (), related: list[str] = ()) -> None:  # type: ignore[assignment]
    answer = httpx.post(
        f"{world.sim.url}/_sim/webhooks",
        json={"drop_objects": list(objects), "drop_related": list(related)},
    )
    answer.raise_for_status()


def _customer_with_card(world: World, app_id: str, card: str = "pm_card_visa") -> tuple[str, str]:
    stripe_id = world.create_customer(app_id)["stripe_customer_id"]
    pm = world.stripe.v1.payment_methods.attach(card, params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return stripe_id, pm.id


def _subscribe(world: World, customer: str, price: str) -> Any:
    return world.stripe.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price}]}
    )


def _pay(world: World, customer: str, payment_method: str, amount: int) -> Any:
    intent = world.stripe.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer,
            "payment_method": payment_method,
            "confirm": True,
        }
    )
    return world.stripe.v1.charges.retrieve(intent.latest_charge)


def _open_invoice(world: World, customer: str, amount: int) -> Any:
    world.stripe.v1.invoice_items.create(
        params={"customer": customer, "amount": amount, "currency": "usd"}
    )
    invoice = world.stripe.v1.invoices.create(
        params={
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "pending_invoice_items_behavior": "include",
        }
    )
    return world.stripe.v1.invoices.finalize_invoice(invoice.id)


def _counts(world: World) -> dict[str, Any]:
    with world.db.engine.connect() as connection:
        return {
            "audit": connection.scalar(sa.select(sa.func.count()).select_from(AuditLog)),
            "changes": connection.scalar(sa.select(sa.func.count()).select_from(CustomerChange)),
            "events": connection.scalar(sa.select(sa.func.count()).select_from(StripeEvent)),
            "versions": sorted(
                connection.execute(sa.select(Customer.id, Customer.state_version)).all()
            ),
        }


def test_lost_deliveries_for_20_random_objects_are_reported_healed_then_quiet(
    world: World,
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    price = world.stripe.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data[0]

    # Everything delivered: subscriptions (each with a paid invoice and its charge), one-off
    # charges, disputed charges and open invoices.
    subscriptions, charges, disputes, open_invoices = [], [], [], []
    for n in range(6):
        customer, card = _customer_with_card(world, f"org-{n}")
        subscription = _subscribe(world, customer, price.id)
        subscriptions.append(subscription.id)
        charges.append(_pay(world, customer, card, 1000 + n).id)
        open_invoices.append(_open_invoice(world, customer, 700 + n).id)
    for n in range(3):
        customer, card = _customer_with_card(world, f"disputed-{n}", "pm_card_createDispute")
        charge = _pay(world, customer, card, 2500)
        disputes.append(world.stripe.v1.disputes.list(params={"charge": charge.id}).data[0].id)
    lost_customer, _ = _customer_with_card(world, "org-lost")
    world.settle()

    # Objects made while their deliveries are lost: a subscription with its invoice and charge,
    # and a refund with the charge it refunds.
    expected: dict[str, str] = {}
    _drop(world, related=[lost_customer])
    lost_subscription = _subscribe(world, lost_customer, price.id)
    lost_invoice = world.stripe.v1.invoices.retrieve(lost_subscription.latest_invoice)
    expected[lost_subscription.id] = "missing_locally"
    expected[lost_invoice.id] = "missing_locally"
    lost_charges = world.stripe.v1.charges.list(params={"customer": lost_customer}).data
    expected.update({charge.id: "missing_locally" for charge in lost_charges})
    refunded = charges.pop(rng.randrange(len(charges)))
    _drop(world, objects=[refunded], related=[refunded])
    lost_refund = world.stripe.v1.refunds.create(params={"charge": refunded, "amount": 100})
    expected[refunded] = "amount_differs"
    expected[lost_refund.id] = "missing_locally"

    # Objects that change while their deliveries are lost, chosen at random to make 20.
    changes = (
        [("cancel_at_period_end", object_id) for object_id in subscriptions]
        + [("void", object_id) for object_id in open_invoices]
        + [("refund", object_id) for object_id in charges]
        + [("evidence", object_id) for object_id in disputes]
    )
    chosen = rng.sample(changes, 20 - len(expected))
    _drop(world, objects=[object_id for _, object_id in chosen])
    for change, object_id in chosen:
        if change == "cancel_at_period_end":
            world.stripe.v1.subscriptions.update(object_id, params={"cancel_at_period_end": True})
            expected[object_id] = "status_differs"
        elif change == "void":
            world.stripe.v1.invoices.void_invoice(object_id)
            expected[object_id] = "status_differs"
        elif change == "refund":
            world.stripe.v1.refunds.create(params={"charge": object_id, "amount": 50})
            expected[object_id] = "amount_differs"
        else:
            world.stripe.v1.disputes.update(
                object_id, params={"evidence": {"uncategorized_text": "a receipt"}}
            )
            expected[object_id] = "status_differs"
    world.settle()
    assert len(expected) == 20, (seed, expected)

    clock = world.container.clock
    report = reconcile(
        db=world.db,
        gateway=world.container.stripe,
        dunning=world.container.dunning_policy,
        clock=clock,
        since=clock.now() - timedelta(hours=1),
    )
    drifts = list(list_drifts(db=world.db, run_id=report.run_id))
    found = {drift.object_id: drift.kind for drift in drifts}
    assert found == expected, f"seed {seed}"
    assert all(drift.healed for drift in drifts), f"seed {seed}"
    assert (report.status, report.healed, report.drifts) == ("succeeded", 20, 20)
    assert report.checked >= 40

    # The mirror now holds Stripe's state, written by the handlers under the run's name.
    actor = f"reconcile:{report.run_id}"
    with world.db.engine.connect() as connection:
        audited = set(
            connection.execute(
                sa.select(AuditLog.object_id).where(AuditLog.actor == actor)
            ).scalars()
        )
        assert set(expected) <= audited, f"seed {seed}"
        for object_id in expected:
            object_type = next(
                drift.object_type for drift in drifts if drift.object_id == object_id
            )
            row = connection.execute(
                sa.select(TABLES[object_type]).where(TABLES[object_type].id == object_id)
            ).first()
            assert row is not None, object_id
    for change, object_id in chosen:
        if change == "cancel_at_period_end":
            assert world.subscription(_app_id(world, object_id))["cancel_at_period_end"] is True

    # Nothing left to heal: the second run reports nothing and writes nothing but its report.
    before = _counts(world)
    again = reconcile(
        db=world.db,
        gateway=world.container.stripe,
        dunning=world.container.dunning_policy,
        clock=clock,
        since=clock.now() - timedelta(hours=1),
    )
    assert (again.status, again.drifts, again.healed) == ("succeeded", 0, 0)
    assert again.checked == report.checked
    assert _counts(world) == before


def _app_id(world: World, subscription_id: str) -> str:
    with world.db.engine.connect() as connection:
        return str(
            connection.scalar(
                sa.select(Subscription.customer_id).where(Subscription.id == subscription_id)
            )
        )
