"""Lists and searches walk indexes: they stay right as objects change, and page like Stripe."""

from __future__ import annotations

import pytest
import stripe

from tests.stripesim.test_subscriptions import T0, price, set_card


def test_a_filtered_list_pages_with_cursors_newest_first(client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create(params={"email": "same@example.com"}).id for _ in range(5)]
    client.v1.customers.create(params={"email": "other@example.com"})
    first = client.v1.customers.list(params={"email": "same@example.com", "limit": 2})
    assert [c.id for c in first.data] == ids[::-1][:2] and first.has_more
    second = client.v1.customers.list(
        params={"email": "same@example.com", "limit": 2, "starting_after": first.data[-1].id}
    )
    assert [c.id for c in second.data] == ids[::-1][2:4]
    back = client.v1.customers.list(
        params={"email": "same@example.com", "limit": 2, "ending_before": second.data[0].id}
    )
    assert [c.id for c in back.data] == ids[::-1][:2] and not back.has_more


def test_a_changed_field_moves_the_object_between_filtered_lists(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"email": "before@example.com"}).id
    client.v1.customers.update(customer, params={"email": "after@example.com"})
    assert client.v1.customers.list(params={"email": "before@example.com"}).data == []
    assert [c.id for c in client.v1.customers.list(params={"email": "after@example.com"}).data] == [
        customer
    ]
    set_card(client, customer, "pm_card_visa")
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    client.v1.subscriptions.cancel(sub.id)
    assert client.v1.subscriptions.list(params={"status": "active"}).data == []
    canceled = client.v1.subscriptions.list(params={"status": "canceled"}).data
    assert [s.id for s in canceled] == [sub.id]


def test_a_search_finds_changed_metadata_without_regard_to_case(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"metadata": {"org": "acme"}}).id
    client.v1.customers.update(customer, params={"metadata": {"org": "Globex"}})
    assert client.v1.customers.search(params={"query": "metadata['org']:'acme'"}).data == []
    found = client.v1.customers.search(params={"query": "metadata['org']:'globex'"}).data
    assert [c.id for c in found] == [customer]


def test_objects_made_in_a_test_clocks_past_list_by_their_created_time(
    client: stripe.StripeClient,
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": T0})
    now = client.v1.customers.create().id
    earlier = client.v1.customers.create(params={"test_clock": clock.id}).id
    assert [c.id for c in client.v1.customers.list().data] == [now, earlier]
    assert [c.id for c in client.v1.customers.list(params={"created": {"lte": T0}}).data] == [
        earlier
    ]


def test_a_cursor_naming_nothing_is_a_missing_object(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create().id
    invoice = client.v1.invoices.create(params={"customer": customer})
    client.v1.invoice_items.create(
        params={"customer": customer, "invoice": invoice.id, "amount": 100, "currency": "usd"}
    )
    lists = (
        client.v1.customers.list,
        lambda params: client.v1.invoices.line_items.list(invoice.id, params),
    )
    for listed in lists:
        for cursor in ("starting_after", "ending_before"):
            with pytest.raises(stripe.InvalidRequestError) as raised:
                listed(params={cursor: "cus_nothing"})  # type: ignore[operator]
            assert raised.value.http_status == 404
            assert (raised.value.code, raised.value.param) == ("resource_missing", cursor)
            assert raised.value.user_message == "No such object: 'cus_nothing'"


def test_an_unknown_card_token_is_a_missing_token(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_nothing"}})
    assert raised.value.http_status == 404
    assert (raised.value.code, raised.value.param) == ("resource_missing", "card[token]")
    assert raised.value.user_message == "No such token: 'tok_nothing'"
