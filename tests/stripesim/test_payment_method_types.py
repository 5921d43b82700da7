"""Payment method types (issue 21) through the official SDK: a subscription's
`payment_settings.payment_method_types` decide what its invoices may be charged to, Checkout's
`payment_method_types` decide what its page takes, and the Portal takes no card for a
subscription that is not paid by card, and challenges a 3-D Secure card before saving it."""

from __future__ import annotations

import httpx
import pytest
import stripe

from tests.stripesim.test_ach_debits import SUCCESS, bank_account
from tests.stripesim.test_portal import _configuration, _plans, _portal, _post, _subscribed
from tests.stripesim.test_subscriptions import invoices_of, price

CARD_FORM = {"card_number": "4242424242424242", "card_expiry": "12/34", "card_cvc": "123"}


def test_an_invoice_is_not_charged_to_a_card_its_subscription_does_not_accept(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"email": "big@example.com"})
    card = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": card.id}}
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price(client, 500_000)}],
            "payment_settings": {"payment_method_types": ["us_bank_account"]},
        }
    )
    assert sub.payment_settings.payment_method_types == ["us_bank_account"]
    assert sub.status == "incomplete"
    invoice = invoices_of(client, sub.id)[0]
    assert (invoice.status, invoice.payment_settings.payment_method_types) == (
        "open",
        ["us_bank_account"],
    )
    intent = client.v1.payment_intents.list(params={"customer": customer.id}).data[0]
    assert intent.status == "requires_payment_method"
    assert intent.payment_method_types == ["us_bank_account"]
    assert intent.last_payment_error.code == "payment_intent_incompatible_payment_method"
    assert client.v1.charges.list(params={"customer": customer.id}).data == []

    # A bank account may pay it; types set back to "" accept any method again.
    bank_account(client, customer.id, SUCCESS)
    client.v1.invoices.pay(invoice.id)
    assert client.v1.payment_intents.list(params={"customer": customer.id}).data[0].status == (
        "processing"
    )
    cleared = client.v1.subscriptions.update(
        sub.id, params={"payment_settings": {"payment_method_types": ""}}
    )
    assert cleared.payment_settings.payment_method_types is None


def test_an_unknown_payment_method_type_is_refused(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price(client)}],
                "payment_settings": {"payment_method_types": ["cheque"]},
            }
        )
    assert raised.value.param == "payment_settings[payment_method_types][0]"


def test_checkout_without_card_refuses_a_card_and_says_what_pays(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"email": "buyer@example.com"})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": price(client, 50_000), "quantity": 1}],
            "success_url": "https://app.example/done",
            "allowed_payment_method_types": ["us_bank_account", "customer_balance"],
        }
    )
    assert session.payment_method_types == ["us_bank_account", "customer_balance"]
    shown = httpx.get(session.url)
    assert 'id="payment-methods"' in shown.text and 'name="card_number"' not in shown.text
    refused = httpx.post(session.url, data=CARD_FORM)
    assert refused.status_code == 400
    assert "Cards cannot pay for this purchase" in refused.text
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert client.v1.subscriptions.list(params={"customer": customer.id}).data == []


def test_the_portal_takes_no_card_for_a_subscription_not_paid_by_card(
    client: stripe.StripeClient,
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    customer, sub = _subscribed(client, basic)
    client.v1.subscriptions.update(
        sub.id, params={"payment_settings": {"payment_method_types": ["us_bank_account"]}}
    )
    refused = _post(_portal(client, customer.id, config.id).url, action="update_card", **CARD_FORM)
    assert refused.status_code == 400
    assert "not paid by card" in refused.text


@pytest.mark.parametrize("answer", ["complete", "fail"])
def test_a_card_added_in_the_portal_goes_through_its_challenge(
    client: stripe.StripeClient, answer: str
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    customer, _ = _subscribed(client, basic)
    before = client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method
    url = _portal(client, customer.id, config.id).url
    form = {**CARD_FORM, "card_number": "4000002500003155", "action": "update_card"}
    challenge = _post(url, **form)
    assert "3D Secure test page" in challenge.text
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method == (
        before
    )
    answered = _post(url, **form, three_d_secure=answer)
    default = client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method
    if answer == "complete":
        assert "Your payment method has been updated." in answered.text
        assert default != before
        assert client.v1.payment_methods.retrieve(default).card.last4 == "3155"
    else:
        assert answered.status_code == 402
        assert "unable to authenticate" in answered.text
        assert default == before
