"""The simulator's HTTP core through the official SDK: auth, errors, idempotency, lists, search."""

from __future__ import annotations

import pytest
import stripe

from tests.stripesim.conftest import assert_stripe_shape


def test_customer_has_stripes_shape_and_round_trips(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={"email": "ada@example.com", "metadata": {"org": "o1"}}
    )
    assert customer.id.startswith("cus_")
    assert customer.livemode is False
    assert_stripe_shape(customer, "customer")
    assert client.v1.customers.retrieve(customer.id).metadata["org"] == "o1"


def test_unknown_parameter_is_rejected_like_stripe(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.create(params={"emial": "x@example.com"})  # type: ignore[typeddict-unknown-key]
    assert raised.value.code == "parameter_unknown"
    assert raised.value.param == "emial"
    assert client.v1.customers.list().data == []


def test_missing_object_answers_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve("cus_missing")
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"


def test_live_key_is_refused(sim) -> None:  # type: ignore[no-untyped-def]
    live = stripe.StripeClient("sk_live_nope", base_addresses={"api": sim.url})
    with pytest.raises(stripe.AuthenticationError):
        live.v1.customers.list()


def test_idempotency_key_replays_first_response(client: stripe.StripeClient) -> None:
    first = client.v1.customers.create(params={"email": "a@x"}, options={"idempotency_key": "k-1"})
    again = client.v1.customers.create(params={"email": "a@x"}, options={"idempotency_key": "k-1"})
    assert first.id == again.id
    assert len(client.v1.customers.list().data) == 1


def test_idempotency_key_with_other_parameters_is_an_error(client: stripe.StripeClient) -> None:
    client.v1.customers.create(params={"email": "a@x"}, options={"idempotency_key": "k-2"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "b@x"}, options={"idempotency_key": "k-2"})


def test_lists_paginate_newest_first(client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create(params={"email": f"{n}@x"}).id for n in range(7)]
    page = client.v1.customers.list(params={"limit": 3})
    assert [c.id for c in page.data] == ids[::-1][:3]
    assert page.has_more is True
    assert [c.id for c in page.auto_paging_iter()] == ids[::-1]
    before = client.v1.customers.list(params={"limit": 2, "ending_before": ids[3]})
    assert [c.id for c in before.data] == [ids[5], ids[4]]


def test_search_finds_customers_by_metadata(client: stripe.StripeClient) -> None:
    wanted = client.v1.customers.create(params={"metadata": {"tollgate_customer_id": "org_7"}})
    client.v1.customers.create(params={"metadata": {"tollgate_customer_id": "org_8"}})
    found = client.v1.customers.search(params={"query": "metadata['tollgate_customer_id']:'org_7'"})
    assert [c.id for c in found.data] == [wanted.id]


def test_customer_events_reach_a_webhook_endpoint_signed(client, sim, webhook_sink) -> None:  # type: ignore[no-untyped-def]
    customer = client.v1.customers.create(params={"email": "hook@example.com"})
    client.v1.customers.update(customer.id, params={"name": "Hook"})
    assert sim.webhooks.flush(timeout=10)
    events = webhook_sink.events(webhook_sink.secret)
    assert [e.type for e in events] == ["customer.created", "customer.updated"]
    assert events[1].data.previous_attributes.to_dict() == {"name": None}
    assert events[1].data.object.name == "Hook"
