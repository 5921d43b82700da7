"""Every route checks its parameters against the SDK's own types, answering in Stripe's shape."""

from __future__ import annotations

import pytest
import stripe

from tests.stripesim.conftest import WebhookSink


def _refused(call) -> stripe.InvalidRequestError:  # type: ignore[no-untyped-def]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        call()
    assert raised.value.http_status == 400
    return raised.value


def test_a_made_up_enum_value_is_refused_with_code_and_param(client: stripe.StripeClient) -> None:
    error = _refused(lambda: client.v1.customers.create(params={"tax_exempt": "sometimes"}))  # type: ignore[typeddict-item]
    assert (error.code, error.param) == ("parameter_invalid_string", "tax_exempt")
    assert "must be one of exempt, none, or reverse" in str(error.user_message)


def test_subscription_collection_method_is_checked_before_anything_is_made(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create().id
    error = _refused(
        lambda: client.v1.subscriptions.create(
            params={
                "customer": customer,
                "items": [{"price": "price_missing"}],
                "collection_method": "by_carrier_pigeon",  # type: ignore[typeddict-item]
            }
        )
    )
    assert (error.code, error.param) == ("parameter_invalid_string", "collection_method")
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []


def test_nested_checkout_enums_are_checked(client: stripe.StripeClient) -> None:
    error = _refused(
        lambda: client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "customer_update": {"address": "sometimes"},  # type: ignore[typeddict-item]
            }
        )
    )
    assert error.param == "customer_update[address]"
    error = _refused(
        lambda: client.v1.checkout.sessions.create(
            params={"mode": "payment", "locale": "tlh"}  # type: ignore[typeddict-item]
        )
    )
    assert error.param == "locale"


def test_integers_and_required_parameters_are_checked(client: stripe.StripeClient) -> None:
    error = _refused(lambda: client.v1.customers.list(params={"limit": "many"}))  # type: ignore[typeddict-item]
    assert (error.code, error.param) == ("parameter_invalid_integer", "limit")
    error = _refused(lambda: client.v1.prices.create(params={"unit_amount": 100}))  # type: ignore[typeddict-item]
    assert (error.code, error.param) == ("parameter_missing", "currency")


def test_a_hash_where_a_string_is_expected_is_refused(client: stripe.StripeClient) -> None:
    error = _refused(lambda: client.v1.customers.create(params={"email": {"home": "x"}}))  # type: ignore[typeddict-item]
    assert error.param == "email"


def test_an_address_always_has_its_six_keys(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={
            "address": {"country": "DE"},
            "shipping": {"name": "Ada", "address": {"city": "Berlin"}},
        }
    )
    assert customer.address is not None and customer.address.line2 is None
    assert customer.address.to_dict() == {
        "city": None,
        "country": "DE",
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    assert customer.shipping is not None and customer.shipping.address.state is None
    assert customer.shipping.phone is None


def test_a_deleted_object_is_sent_as_it_last_was(
    client: stripe.StripeClient,
    sim,
    webhook_sink: WebhookSink,  # type: ignore[no-untyped-def]
) -> None:
    customer = client.v1.customers.create(params={"email": "bye@example.com"})
    coupon = client.v1.coupons.create(params={"percent_off": 10})
    client.v1.coupons.delete(coupon.id)
    client.v1.customers.delete(customer.id)
    assert sim.webhooks.flush(timeout=10)
    deleted = [e for e in webhook_sink.events(webhook_sink.secret) if e.type.endswith(".deleted")]
    assert [e.type for e in deleted] == ["coupon.deleted", "customer.deleted"]
    for event in deleted:
        assert "deleted" not in event.data.object
    assert client.v1.customers.retrieve(customer.id).deleted is True


def test_an_invoice_names_its_subscription_only_under_parent(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create().id
    client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer})
    product = client.v1.products.create(params={"name": "Pro"}).id
    price = client.v1.prices.create(
        params={
            "product": product,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    ).id
    sub = client.v1.subscriptions.create(params={"customer": customer, "items": [{"price": price}]})
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert "subscription" not in invoice
    assert invoice.parent is not None
    assert invoice.parent.subscription_details.subscription == sub.id
    assert [i.id for i in client.v1.invoices.list(params={"subscription": sub.id}).data] == [
        invoice.id
    ]
    assert sub.billing_mode.updated_at == sub.created
