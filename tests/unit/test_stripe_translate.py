"""Stripe's published example objects (fixtures3.json) translate into Tollgate's snapshots."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.stripe_reference import example
from tollgate.domain.events import tollgate_status
from tollgate.stripe.translate import (
    charge_snapshot,
    customer_snapshot,
    dispute_snapshot,
    invoice_snapshot,
    subscription_snapshot,
)


def test_a_customer_takes_the_apps_id_from_metadata_else_the_stripe_id() -> None:
    customer = example("customer")
    assert customer_snapshot(customer).app_id == customer["id"]
    customer["metadata"] = {"tollgate_customer_id": "acme"}
    snapshot = customer_snapshot(customer)
    assert (snapshot.app_id, snapshot.stripe_id) == ("acme", customer["id"])
    assert customer_snapshot(customer, deleted=True).deleted


def test_a_subscription_takes_periods_plan_and_seats_from_its_items() -> None:
    subscription = example("subscription")
    item = subscription["items"]["data"][0]
    item["price"]["metadata"] = {"tollgate_plan": "pro", "tollgate_interval": "month"}
    item["quantity"] = 5
    item["current_period_start"], item["current_period_end"] = 1_767_225_600, 1_769_904_000
    snapshot = subscription_snapshot(subscription)
    assert (snapshot.plan, snapshot.interval, snapshot.seats) == ("pro", "month", 5)
    assert snapshot.current_period_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert snapshot.current_period_end == datetime(2026, 2, 1, tzinfo=UTC)
    assert snapshot.stripe_customer_id == subscription["customer"]
    # The example is active with cancel_at_period_end set: Tollgate calls that canceling.
    assert (
        tollgate_status(
            snapshot.status,
            cancel_at_period_end=snapshot.cancel_at_period_end,
            cancel_at=snapshot.cancel_at,
        )
        == "canceling"
    )


def test_a_metered_feature_price_does_not_decide_the_plan() -> None:
    subscription = example("subscription")
    plan_item = subscription["items"]["data"][0]
    metered = {
        **plan_item,
        "id": "si_0metered",
        "quantity": None,
        "price": {
            **plan_item["price"],
            "id": "price_runs",
            "metadata": {"tollgate_plan": "pro", "tollgate_feature": "runs"},
            "recurring": {**plan_item["price"]["recurring"], "usage_type": "metered"},
        },
    }
    plan_item["price"]["metadata"] = {"tollgate_plan": "pro"}
    plan_item["quantity"] = 2
    subscription["items"]["data"] = [metered, plan_item]
    snapshot = subscription_snapshot(subscription)
    assert snapshot.base_item is not None and snapshot.base_item.id == plan_item["id"]
    assert snapshot.seats == 2


def test_an_invoice_names_its_subscription_under_parent() -> None:
    invoice = example("invoice")
    invoice["parent"] = {
        "type": "subscription_details",
        "subscription_details": {"subscription": "sub_123", "metadata": {}},
    }
    invoice["payments"] = {
        "object": "list",
        "has_more": False,
        "data": [
            {
                "id": "inpay_1",
                "object": "invoice_payment",
                "invoice": invoice["id"],
                "payment": {"type": "payment_intent", "payment_intent": "pi_1"},
                "status": "paid",
            }
        ],
    }
    snapshot = invoice_snapshot(invoice)
    assert snapshot.subscription_id == "sub_123"
    assert (snapshot.amount_due, snapshot.amount_paid, snapshot.currency) == (1000, 0, "usd")
    assert [(p.id, p.payment_intent) for p in snapshot.payments] == [("inpay_1", "pi_1")]


def test_a_charge_lists_its_refunds_only_when_the_payload_has_them_all() -> None:
    charge = example("charge")
    assert charge_snapshot(charge).refunds == ()
    charge["refunds"]["has_more"] = True
    assert charge_snapshot(charge).refunds is None
    del charge["refunds"]
    assert charge_snapshot(charge).refunds is None


def test_a_dispute_names_its_charge() -> None:
    dispute = dispute_snapshot(example("dispute"))
    assert dispute.charge_id.startswith("ch_")
    assert (dispute.amount, dispute.status) == (1000, "warning_needs_response")
