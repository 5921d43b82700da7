"""Automatic tax (STRIPE_AUTOMATIC_TAX) from stripesim's rate table, through Tollgate's API: a
Quebec customer's invoice has GST and QST lines, and Tollgate's invoice carries the taxed total;
an exempt customer pays none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tests.e2e.conftest import World
from tollgate.db.models import Notification

QUEBEC = {
    "line1": "1 rue Sainte-Catherine",
    "city": "Montréal",
    "state": "QC",
    "postal_code": "H2X 1Y4",
    "country": "CA",
}


def subscribed_at(
    world: World, customer_id: str, address: dict[str, Any], tax_exempt: str = "none"
) -> Any:
    """Subscribe a customer at `address` to Pro by card; return its first Stripe invoice."""
    stripe_id = str(world.create_customer(customer_id)["stripe_customer_id"])
    world.call("PATCH", f"/v1/customers/{customer_id}", json={"address": address})
    world.stripe.v1.customers.update(stripe_id, params={"tax_exempt": tax_exempt})
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    world.put_subscription(customer_id, plan="pro", interval="month", trial_days=0)
    world.settle()
    (invoice,) = world.invoices(stripe_id)
    return invoice


def test_a_quebec_customers_invoice_has_gst_and_qst_lines(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_AUTOMATIC_TAX="true")
    invoice = subscribed_at(world, "quebec-org", QUEBEC)
    taxes = {}
    for total in invoice.total_taxes:
        rate = world.stripe.v1.tax_rates.retrieve(total.tax_rate_details.tax_rate)
        taxes[rate.display_name] = (float(rate.percentage), total.amount)
    assert taxes == {"GST": (5.0, 145), "QST": (9.975, 289)}  # of $29.00
    assert (invoice.subtotal, invoice.total, invoice.status) == (2900, 3334, "paid")
    (line,) = invoice.lines.data
    assert sorted(tax.amount for tax in line.taxes) == [145, 289]
    mirrored = world.call("GET", "/v1/customers/quebec-org/invoices")["data"]
    assert [(i["total"]["amount"], i["tax"]["amount"], i["amount_paid"]) for i in mirrored] == [
        (3334, 434, {"amount": 3334, "currency": "usd"})
    ]
    # The receipt says the tax apart.
    with world.db.transaction() as session:
        facts = session.scalars(
            sa.select(Notification.facts).where(
                Notification.customer_id == "quebec-org",
                Notification.template == "payment_succeeded",
            )
        ).one()
    assert facts["tax"] == {"amount": 434, "currency": "usd"}

    # Another province, and an exempt customer: their own rate, and none.
    ontario = subscribed_at(world, "ontario-org", {**QUEBEC, "state": "ON"})
    assert [t.amount for t in ontario.total_taxes] == [377]  # HST 13 %
    for status in ("exempt", "reverse"):
        untaxed = subscribed_at(world, f"{status}-org", QUEBEC, tax_exempt=status)
        assert (untaxed.total_taxes, untaxed.total) == ([], 2900)
