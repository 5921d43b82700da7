"""Micro-deposit verification and mandates through the official SDK and the hosted page: a
payment or setup that asks for micro-deposits waits (`verify_with_microdeposits`) until Stripe's
test values are entered (amounts 32 and 45, or SM11AA); mismatches use up the attempts and the
last one fails the payment and deactivates the mandate; a subscription's first invoice waits the
same way and its hosted page links to the verification."""

from __future__ import annotations

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink
from tests.stripesim.test_ach_debits import SUCCESS, bank_account
from tests.stripesim.test_subscriptions import DAY, T0, advance, invoices_of, price

WANTED = {"us_bank_account": {"verification_method": "microdeposits"}}


def waiting_payment(client: stripe.StripeClient) -> stripe.PaymentIntent:
    customer = client.v1.customers.create(params={"name": "Verify Co"}).id
    pm = bank_account(client, customer, SUCCESS)
    return client.v1.payment_intents.create(
        params={
            "amount": 12_000,
            "currency": "usd",
            "customer": customer,
            "payment_method": pm,
            "payment_method_options": WANTED,  # type: ignore[typeddict-item]
            "confirm": True,
        }
    )


def test_a_debit_waits_for_microdeposits_then_processes(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    pi = waiting_payment(client)
    assert (pi.status, pi.next_action.type) == ("requires_action", "verify_with_microdeposits")  # type: ignore[union-attr]
    action = pi.next_action.verify_with_microdeposits  # type: ignore[union-attr]
    assert action.microdeposit_type == "amounts" and action.arrival_date > pi.created
    page = httpx.get(action.hosted_verification_url)
    assert page.status_code == 200 and 'id="verify-form"' in page.text
    verified = httpx.post(action.hosted_verification_url, data={"amount_1": "32", "amount_2": "45"})
    assert "Bank account verified." in verified.text
    pi = client.v1.payment_intents.retrieve(pi.id)
    assert (pi.status, pi.next_action) == ("processing", None)
    charge = client.v1.charges.retrieve(str(pi.latest_charge))
    mandate_id = charge.payment_method_details.us_bank_account.mandate  # type: ignore[union-attr]
    mandate = client.v1.mandates.retrieve(str(mandate_id))
    assert (mandate.status, mandate.type, mandate.payment_method) == (
        "active",
        "multi_use",
        pi.payment_method,
    )
    sim.webhooks.flush(timeout=10)
    types = webhook_sink.types(webhook_sink.secret)
    assert types.count("payment_intent.requires_action") == 1
    assert types.count("mandate.updated") == 1
    # Verified once, the account is debited straight away the next time.
    again = client.v1.payment_intents.create(
        params={
            "amount": 500,
            "currency": "usd",
            "customer": str(pi.customer),
            "payment_method": str(pi.payment_method),
            "payment_method_options": WANTED,  # type: ignore[typeddict-item]
            "confirm": True,
        }
    )
    assert again.status == "processing"


def test_wrong_amounts_use_up_the_attempts_and_fail_the_payment(
    client: stripe.StripeClient,
) -> None:
    pi = waiting_payment(client)
    for left in (2, 1):
        with pytest.raises(stripe.InvalidRequestError) as mismatch:
            client.v1.payment_intents.verify_microdeposits(pi.id, params={"amounts": [10, 11]})
        assert mismatch.value.code == "payment_method_microdeposit_verification_amounts_mismatch"
        assert f"{left} verification attempt" in str(mismatch.value.user_message)
    with pytest.raises(stripe.StripeError) as exhausted:
        client.v1.payment_intents.verify_microdeposits(pi.id, params={"amounts": [10, 11]})
    assert exhausted.value.code == "payment_method_microdeposit_verification_attempts_exceeded"
    pi = client.v1.payment_intents.retrieve(pi.id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.code == exhausted.value.code  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.verify_microdeposits(pi.id, params={"amounts": [32, 45]})


def test_a_setup_verified_by_descriptor_code_has_an_active_mandate(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"name": "Setup Co"}).id
    pm = client.v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "us_bank_account": {"account_number": SUCCESS, "routing_number": "110000000"},
            "billing_details": {"name": "Setup Co"},
        }
    )
    setup = client.v1.setup_intents.create(
        params={
            "customer": customer,
            "payment_method": pm.id,
            "payment_method_options": WANTED,  # type: ignore[typeddict-item]
            "confirm": True,
        }
    )
    assert setup.status == "requires_action"
    assert client.v1.mandates.retrieve(str(setup.mandate)).status == "pending"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.setup_intents.verify_microdeposits(
            setup.id, params={"amounts": [32, 45], "descriptor_code": "SM11AA"}
        )
    assert refused.value.param in ("amounts", "descriptor_code")
    done = client.v1.setup_intents.verify_microdeposits(
        setup.id, params={"descriptor_code": "SM11AA"}
    )
    assert done.status == "succeeded"
    assert client.v1.mandates.retrieve(str(done.mandate)).status == "active"
    assert client.v1.payment_methods.retrieve(pm.id).customer == customer


def test_a_subscription_invoice_waits_for_verification_and_is_paid_after_settlement(
    client: stripe.StripeClient,
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": T0})
    customer = client.v1.customers.create(params={"test_clock": clock.id}).id
    bank_account(client, customer, SUCCESS)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "payment_behavior": "allow_incomplete",
            "payment_settings": {"payment_method_options": WANTED},  # type: ignore[typeddict-item]
        }
    )
    assert sub.status == "incomplete"
    [invoice] = invoices_of(client, sub.id)
    page = httpx.get(invoice.hosted_invoice_url or "").text
    assert 'id="verify-account"' in page
    start = page.index('href="', page.index('id="verify-account"')) + len('href="')
    url = page[start : page.index('"', start)]
    httpx.post(url, data={"descriptor_code": "SM11AA"})
    assert client.v1.invoices.retrieve(invoice.id).status == "open"  # the debit processes
    advance(client, clock.id, T0 + 5 * DAY)
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_error_if_incomplete_refuses_a_subscription_needing_verification(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"name": "Strict"}).id
    bank_account(client, customer, SUCCESS)
    with pytest.raises(stripe.StripeError) as refused:
        client.v1.subscriptions.create(
            params={
                "customer": customer,
                "items": [{"price": price(client)}],
                "payment_behavior": "error_if_incomplete",
                "payment_settings": {"payment_method_options": WANTED},  # type: ignore[typeddict-item]
            }
        )
    assert refused.value.code == "payment_intent_action_required"
    assert client.v1.subscriptions.list(params={"customer": customer}).data == []
