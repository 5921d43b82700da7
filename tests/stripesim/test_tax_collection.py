"""stripesim refuses what Stripe refuses when tax needs a location: a subscription with automatic
tax for a customer without an address, and Checkout Sessions that could not save the address or
the tax ID typed on the page to an existing customer."""

from __future__ import annotations

import pytest
import stripe

from tests.stripesim.test_subscriptions import clock_customer, price

QUEBEC = {"line1": "1 rue Sainte-Catherine", "city": "Montréal", "state": "QC",
          "postal_code": "H2X 1Y4", "country": "CA"}  # fmt: skip


def test_automatic_tax_needs_the_customers_location(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    items = [{"price": price(client)}]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.create(
            params={"customer": customer, "items": items, "automatic_tax": {"enabled": True}}
        )
    assert refused.value.code == "customer_tax_location_invalid"
    assert client.v1.subscriptions.list(params={"customer": customer}).data == []
    client.v1.customers.update(customer, params={"address": QUEBEC})
    made = client.v1.subscriptions.create(
        params={"customer": customer, "items": items, "automatic_tax": {"enabled": True}}
    )
    invoice = client.v1.invoices.retrieve(str(made.latest_invoice))
    assert (invoice.subtotal, invoice.total) == (2900, 3334)


def test_checkout_needs_customer_update_to_collect_for_an_existing_customer(
    client: stripe.StripeClient,
) -> None:
    _, customer = clock_customer(client, card=None)
    base = {
        "mode": "subscription",
        "customer": customer,
        "line_items": [{"price": price(client), "quantity": 1}],
        "success_url": "https://app.example/done",
        "automatic_tax": {"enabled": True},
    }
    with pytest.raises(stripe.InvalidRequestError, match="requires a valid address"):
        client.v1.checkout.sessions.create(params=base)  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError, match="customer_update\\[name\\]"):
        client.v1.checkout.sessions.create(
            params={  # type: ignore[arg-type]
                **base,
                "customer_update": {"address": "auto"},
                "tax_id_collection": {"enabled": True},
            }
        )
    session = client.v1.checkout.sessions.create(
        params={  # type: ignore[arg-type]
            **base,
            "billing_address_collection": "required",
            "customer_update": {"address": "auto", "name": "auto"},
            "tax_id_collection": {"enabled": True},
        }
    )
    assert session.billing_address_collection == "required"
    assert session.tax_id_collection is not None and session.tax_id_collection.enabled
