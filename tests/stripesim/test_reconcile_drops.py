"""Dropping deliveries on purpose, as the reconciliation tests need: by object, and by relation."""

from __future__ import annotations

import httpx
import stripe


def test_drop_related_drops_deliveries_about_objects_naming_those_ids(  # type: ignore[no-untyped-def]
    sim, client: stripe.StripeClient, webhook_sink
) -> None:
    lost = client.v1.customers.create()
    kept = client.v1.customers.create()
    assert sim.webhooks.flush(timeout=10)
    answer = httpx.post(f"{sim.url}/_sim/webhooks", json={"drop_related": [lost.id]})
    assert answer.json()["webhooks"]["dropped_related"] == [lost.id]
    for customer in (lost, kept):
        client.v1.payment_intents.create(
            params={
                "amount": 500,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
    client.v1.customers.update(lost.id, params={"name": "still delivered"})
    assert sim.webhooks.flush(timeout=10)
    delivered = [
        (event.type, event.data.object.to_dict().get("customer"), event.data.object.id)
        for event in webhook_sink.events(webhook_sink.secret)
    ]
    about_lost = [entry for entry in delivered if lost.id in (entry[1], entry[2])]
    about_kept = [entry for entry in delivered if kept.id == entry[1]]
    # The customer's own events still arrive; its payment intent's and charge's do not.
    assert [entry[0] for entry in about_lost] == [
        "customer.created",
        "customer.updated",
    ]
    assert {"payment_intent.succeeded", "charge.succeeded"} <= {entry[0] for entry in about_kept}
    dropped = set(sim.webhooks.dropped)
    assert {
        event.id
        for event in client.v1.events.list(params={"limit": 100}).data
        if event.data.object.to_dict().get("customer") == lost.id
        and event.type.startswith("charge.")
    } <= dropped
