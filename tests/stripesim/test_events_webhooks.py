"""Events (list filters, retrieve) and webhook endpoints and delivery: signing, retries, chaos."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import stripe

from tests.stripesim.conftest import assert_stripe_shape

DAY = 86400


def _sim_settings(sim, **settings: Any) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(f"{sim.url}/_sim/webhooks", json=settings)
    response.raise_for_status()


def _verified(sink, secret: str) -> list[Any]:  # type: ignore[no-untyped-def]
    """Deliveries signed with `secret` (other endpoints' deliveries to the same URL are skipped)."""
    events = []
    for body, headers in sink.received:
        try:
            events.append(stripe.Webhook.construct_event(body, headers["stripe-signature"], secret))
        except stripe.SignatureVerificationError:
            continue
    return events


def _wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- events -------------------------------------------------------------------------------------


def test_event_has_stripes_shape_and_can_be_retrieved(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(options={"idempotency_key": "evt-key"})
    event = client.v1.events.list().data[0]
    assert_stripe_shape(event, "event")
    assert event.type == "customer.created" and event.data.object.id == customer.id
    assert event.api_version == "2026-10-28.endive" and event.livemode is False
    assert event.request.idempotency_key == "evt-key" and event.request.id.startswith("req_")
    assert client.v1.events.retrieve(event.id).id == event.id
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.events.retrieve("evt_missing")
    assert raised.value.http_status == 404


def test_events_list_newest_first_with_type_filters(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    client.v1.customers.update(customer.id, params={"name": "N"})
    client.v1.products.create(params={"name": "P"})
    all_types = [e.type for e in client.v1.events.list().data]
    assert all_types == ["product.created", "customer.updated", "customer.created"]
    wildcard = [e.type for e in client.v1.events.list(params={"type": "customer.*"}).data]
    assert wildcard == ["customer.updated", "customer.created"]
    created = [e.type for e in client.v1.events.list(params={"type": "*.created"}).data]
    assert created == ["product.created", "customer.created"]
    exact = client.v1.events.list(params={"types": ["product.created", "customer.created"]}).data
    assert [e.type for e in exact] == ["product.created", "customer.created"]
    page = client.v1.events.list(params={"limit": 2})
    assert page.has_more is True
    assert [e.type for e in page.auto_paging_iter()] == all_types


def test_events_list_filters_by_created_and_keeps_30_days(sim, client) -> None:  # type: ignore[no-untyped-def]
    old = client.v1.customers.create()
    old_event = client.v1.events.list().data[0]
    sim.sim.advance(31 * DAY)
    client.v1.customers.create()
    listed = client.v1.events.list().data
    assert len(listed) == 1 and listed[0].data.object.id != old.id
    # Older events can still be retrieved by id.
    assert client.v1.events.retrieve(old_event.id).id == old_event.id
    since = client.v1.events.list(params={"created": {"gte": old_event.created + 30 * DAY}}).data
    assert len(since) == 1


def test_delivery_success_filter_follows_pending_webhooks(sim, client, webhook_sink) -> None:  # type: ignore[no-untyped-def]
    _sim_settings(sim, retry_base_seconds=0.05)
    webhook_sink.status = 500
    client.v1.customers.create()
    _wait_for(lambda: len(webhook_sink.received) >= 1)
    failing = client.v1.events.list(params={"delivery_success": False}).data
    assert [e.type for e in failing] == ["customer.created"] and failing[0].pending_webhooks == 1
    webhook_sink.status = 200
    assert sim.webhooks.flush(timeout=10)
    assert client.v1.events.list(params={"delivery_success": False}).data == []
    assert len(client.v1.events.list(params={"delivery_success": True}).data) == 1


# -- webhook endpoints --------------------------------------------------------------------------


def test_webhook_endpoint_secret_is_shown_only_on_create(client: stripe.StripeClient) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        params={
            "url": "https://example.com/hook",
            "enabled_events": ["customer.created"],
            "description": "mine",
            "metadata": {"a": "1"},
        }
    )
    assert endpoint.secret.startswith("whsec_")
    assert set(endpoint.to_dict()) - {"secret"} == set(
        client.v1.webhook_endpoints.retrieve(endpoint.id).to_dict()
    )
    fetched = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert_stripe_shape(fetched, "webhook_endpoint")
    assert "secret" not in fetched.to_dict()
    assert fetched.enabled_events == ["customer.created"] and fetched.status == "enabled"
    listed = client.v1.webhook_endpoints.list().data
    assert [e.id for e in listed] == [endpoint.id] and "secret" not in listed[0].to_dict()


def test_webhook_endpoint_requires_url_and_events(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.webhook_endpoints.create(params={"url": "https://example.com/h"})  # type: ignore[typeddict-item]
    assert raised.value.param == "enabled_events"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.webhook_endpoints.create(params={"url": "ftp://x", "enabled_events": ["*"]})
    assert raised.value.param == "url"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.webhook_endpoints.create(
            params={"url": "https://example.com/h", "enabled_events": ["customer.*"]}
        )
    assert raised.value.param == "enabled_events[0]"


def test_webhook_endpoint_update_disable_and_delete(client: stripe.StripeClient) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": "https://example.com/h", "enabled_events": ["*"]}
    )
    updated = client.v1.webhook_endpoints.update(
        endpoint.id,
        params={
            "disabled": True,
            "enabled_events": ["invoice.paid"],
            "url": "https://example.com/2",
        },
    )
    assert updated.status == "disabled" and updated.enabled_events == ["invoice.paid"]
    assert updated.url == "https://example.com/2"
    assert (
        client.v1.webhook_endpoints.update(endpoint.id, params={"disabled": False}).status
        == "enabled"
    )
    deleted = client.v1.webhook_endpoints.delete(endpoint.id)
    assert deleted.deleted is True
    assert_stripe_shape(deleted, "deleted_webhook_endpoint")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.retrieve(endpoint.id)


def test_endpoint_receives_only_its_enabled_events_and_nothing_when_disabled(
    sim, client, webhook_sink
) -> None:  # type: ignore[no-untyped-def]
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": webhook_sink.url, "enabled_events": ["customer.updated"]}
    )
    customer = client.v1.customers.create()
    client.v1.customers.update(customer.id, params={"name": "A"})
    assert sim.webhooks.flush(timeout=10)
    assert [e.type for e in _verified(webhook_sink, endpoint.secret)] == ["customer.updated"]
    client.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    client.v1.customers.update(customer.id, params={"name": "B"})
    assert sim.webhooks.flush(timeout=10)
    assert len(_verified(webhook_sink, endpoint.secret)) == 1
    # The fixture's catch-all endpoint still got everything.
    assert [e.type for e in _verified(webhook_sink, webhook_sink.secret)] == [
        "customer.created",
        "customer.updated",
        "customer.updated",
    ]


# -- delivery behaviour -------------------------------------------------------------------------


def test_failed_deliveries_are_retried_with_backoff_until_they_succeed(
    sim, client, webhook_sink
) -> None:  # type: ignore[no-untyped-def]
    _sim_settings(sim, retry_base_seconds=0.05)
    webhook_sink.status = 500
    before = len(sim.webhooks.delivered)  # the dispatcher outlives each test's reset
    started = time.monotonic()
    client.v1.customers.create()
    _wait_for(lambda: len(webhook_sink.received) >= 4)
    webhook_sink.status = 200
    assert sim.webhooks.flush(timeout=10)
    elapsed = time.monotonic() - started
    statuses = [status for _, _, status in sim.webhooks.delivered[before:]]
    assert statuses[:4] == [500, 500, 500, 500] and statuses[-1] == 200
    # Waits of 0.05, 0.1 and 0.2 s came between the first four attempts: backoff doubles.
    assert elapsed >= 0.35
    events = _verified(webhook_sink, webhook_sink.secret)
    assert {e.id for e in events} == {events[0].id} and len(events) == len(statuses)
    assert client.v1.events.retrieve(events[0].id).pending_webhooks == 0


def test_duplicate_rate_one_delivers_every_event_twice(sim, client, webhook_sink) -> None:  # type: ignore[no-untyped-def]
    _sim_settings(sim, duplicate_rate=1)
    client.v1.customers.create()
    client.v1.products.create(params={"name": "P"})
    assert sim.webhooks.flush(timeout=10)
    ids = [e.id for e in webhook_sink.events(webhook_sink.secret)]
    assert len(ids) == 4 and len(set(ids)) == 2
    assert all(ids.count(event_id) == 2 for event_id in ids)


def test_shuffle_reorders_deliveries(sim, client, webhook_sink) -> None:  # type: ignore[no-untyped-def]
    _sim_settings(sim, shuffle=True)
    created = [client.v1.products.create(params={"name": f"P{n}"}).id for n in range(20)]
    assert sim.webhooks.flush(timeout=10)
    delivered = [e.data.object.id for e in webhook_sink.events(webhook_sink.secret)]
    assert sorted(delivered) == sorted(created)
    assert delivered != created


def test_drop_objects_drops_deliveries_about_those_objects(sim, client, webhook_sink) -> None:  # type: ignore[no-untyped-def]
    dropped = client.v1.customers.create()
    assert sim.webhooks.flush(timeout=10)
    _sim_settings(sim, drop_objects=[dropped.id])
    client.v1.customers.update(dropped.id, params={"name": "lost"})
    kept = client.v1.customers.create()
    assert sim.webhooks.flush(timeout=10)
    delivered = [(e.type, e.data.object.id) for e in webhook_sink.events(webhook_sink.secret)]
    assert delivered == [("customer.created", dropped.id), ("customer.created", kept.id)]
    # The event still exists at "Stripe"; only its delivery was lost.
    assert (
        client.v1.events.list(params={"type": "customer.updated"}).data[0].data.object.id
        == dropped.id
    )


def test_connected_account_events_go_to_connect_endpoints_only(sim, client, webhook_sink) -> None:  # type: ignore[no-untyped-def]
    connect_endpoint = client.v1.webhook_endpoints.create(
        params={"url": webhook_sink.url, "enabled_events": ["*"], "connect": True}
    )
    account = client.v1.accounts.create(params={"type": "express"})
    connected_customer = client.v1.customers.create(options={"stripe_account": account.id})
    platform_customer = client.v1.customers.create()
    assert sim.webhooks.flush(timeout=10)
    connect_events = _verified(webhook_sink, connect_endpoint.secret)
    platform_events = _verified(webhook_sink, webhook_sink.secret)
    assert [(e.type, e.account, e.data.object.id) for e in connect_events] == [
        ("customer.created", account.id, connected_customer.id)
    ]
    assert [e.data.object.id for e in platform_events] == [platform_customer.id]
    assert all(getattr(e, "account", None) is None for e in platform_events)
