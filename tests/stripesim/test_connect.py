"""Connect: accounts, each its own space behind the `Stripe-Account` header."""

from __future__ import annotations

import pytest
import stripe

from tests.stripesim.conftest import assert_stripe_shape


def _account(client: stripe.StripeClient, **params) -> stripe.Account:  # type: ignore[no-untyped-def]
    return client.v1.accounts.create(params={"type": "express", **params})


def test_account_has_stripes_shape_and_requested_capabilities(client: stripe.StripeClient) -> None:
    account = _account(
        client,
        email="seller@example.com",
        country="fr",
        metadata={"org": "o1"},
        capabilities={"card_payments": {"requested": True}, "transfers": {"requested": True}},
        business_profile={"name": "Seller SAS"},
    )
    assert_stripe_shape(account, "account")
    assert account.id.startswith("acct_") and account.type == "express"
    assert account.country == "FR" and account.default_currency == "eur"
    assert account.capabilities.to_dict() == {"card_payments": "active", "transfers": "active"}
    assert account.charges_enabled is True and account.requirements.currently_due == []
    assert account.business_profile.name == "Seller SAS"
    assert account.external_accounts.url == f"/v1/accounts/{account.id}/external_accounts"
    fetched = client.v1.accounts.retrieve(account.id)
    assert fetched.email == "seller@example.com" and fetched.metadata["org"] == "o1"


def test_account_types_and_validation(client: stripe.StripeClient) -> None:
    assert _account(client, type="custom").type == "custom"
    assert client.v1.accounts.create(params={}).type == "standard"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _account(client, type="weird")
    assert raised.value.param == "type"


def test_current_account_is_the_platform_or_the_connected_one(client: stripe.StripeClient) -> None:
    platform = client.v1.accounts.retrieve_current()
    assert_stripe_shape(platform, "account")
    connected = _account(client)
    assert platform.id != connected.id
    seen = client.v1.accounts.retrieve_current(options={"stripe_account": connected.id})
    assert seen.id == connected.id
    assert [a.id for a in client.v1.accounts.list().data] == [connected.id]


def test_objects_in_a_connected_account_are_invisible_to_the_platform(
    client: stripe.StripeClient,
) -> None:
    account = _account(client)
    options = {"stripe_account": account.id}
    connected = client.v1.customers.create(params={"email": "c@x"}, options=options)  # type: ignore[arg-type]
    platform = client.v1.customers.create(params={"email": "p@x"})
    assert [c.id for c in client.v1.customers.list().data] == [platform.id]
    assert [c.id for c in client.v1.customers.list(options=options).data] == [connected.id]  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve(connected.id)
    assert raised.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(platform.id, options=options)  # type: ignore[arg-type]
    product = client.v1.products.create(params={"name": "Own"}, options=options)  # type: ignore[arg-type]
    assert client.v1.products.list().data == []
    assert client.v1.products.retrieve(product.id, options=options).name == "Own"  # type: ignore[arg-type]


def test_events_from_a_connected_account_carry_its_id(client: stripe.StripeClient) -> None:
    account = _account(client)
    options = {"stripe_account": account.id}
    client.v1.customers.create(options=options)  # type: ignore[arg-type]
    event = client.v1.events.list(options=options).data[0]  # type: ignore[arg-type]
    assert event.account == account.id and event.type == "customer.created"
    assert client.v1.events.list().data == []


def test_unknown_stripe_account_is_refused(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.PermissionError) as raised:
        client.v1.customers.list(options={"stripe_account": "acct_nope"})
    assert raised.value.http_status == 403


def test_account_update_emits_account_updated_from_the_connected_account(
    sim, client, webhook_sink
) -> None:  # type: ignore[no-untyped-def]
    connect_endpoint = client.v1.webhook_endpoints.create(
        params={"url": webhook_sink.url, "enabled_events": ["account.updated"], "connect": True}
    )
    account = _account(client)
    updated = client.v1.accounts.update(
        account.id, params={"email": "new@example.com", "metadata": {"k": "v"}}
    )
    assert updated.email == "new@example.com" and updated.metadata["k"] == "v"
    assert sim.webhooks.flush(timeout=10)
    events = []
    for body, headers in webhook_sink.received:
        try:
            events.append(
                stripe.Webhook.construct_event(
                    body, headers["stripe-signature"], connect_endpoint.secret
                )
            )
        except stripe.SignatureVerificationError:
            continue
    assert [(e.type, e.account) for e in events] == [("account.updated", account.id)]
    assert events[0].data.previous_attributes.email is None


def test_deleted_account_is_gone_with_its_space(client: stripe.StripeClient) -> None:
    account = _account(client)
    client.v1.customers.create(options={"stripe_account": account.id})
    deleted = client.v1.accounts.delete(account.id)
    assert_stripe_shape(deleted, "deleted_account")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.accounts.retrieve(account.id)
    with pytest.raises(stripe.PermissionError):
        client.v1.customers.list(options={"stripe_account": account.id})
    assert client.v1.accounts.list().data == []


def test_connected_account_cannot_create_accounts(client: stripe.StripeClient) -> None:
    account = _account(client)
    with pytest.raises(stripe.PermissionError):
        client.v1.accounts.create(
            params={"type": "express"}, options={"stripe_account": account.id}
        )
