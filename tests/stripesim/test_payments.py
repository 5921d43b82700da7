"""PaymentMethods, SetupIntents, PaymentIntents, Charges, Refunds and Disputes by test card."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import stripe

from stripesim.payments import collect_payment, resolve_payment_method
from stripesim.registry import Ctx
from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape


def _customer(client: stripe.StripeClient, email: str = "pay@example.com") -> stripe.Customer:
    return client.v1.customers.create(params={"email": email})


def _card(client: stripe.StripeClient, number: str) -> stripe.PaymentMethod:
    return client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )


def _types(sim: RunningSim, sink: WebhookSink) -> list[str]:
    assert sim.webhooks.flush(timeout=10)
    return sink.types(sink.secret)


# -- PaymentMethods --------------------------------------------------------------------------


def test_card_payment_method_shows_card_details_but_state_keeps_no_number(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    pm = _card(client, "4242424242424242")
    assert pm.id.startswith("pm_")
    assert_stripe_shape(pm, "payment_method")
    assert (pm.card.brand, pm.card.last4, pm.card.exp_month, pm.card.exp_year) == (
        "visa",
        "4242",
        12,
        2034,
    )
    assert pm.card.funding == "credit"
    assert pm.card.country == "US"
    assert pm.card.checks.cvc_check == "pass"
    assert pm.customer is None
    again = _card(client, "4242 4242 4242 4242")
    assert again.card.fingerprint == pm.card.fingerprint
    assert _card(client, "5555555555554444").card.fingerprint != pm.card.fingerprint
    state = orjson.dumps({k: a.objects for k, a in sim.sim.accounts.items()})
    assert b"4242424242424242" not in state


def test_token_and_magic_payment_method_ids_resolve_to_cards(client: stripe.StripeClient) -> None:
    from_token = client.v1.payment_methods.create(
        params={"type": "card", "card": {"token": "tok_mastercard"}}
    )
    assert from_token.card.brand == "mastercard"
    magic = client.v1.payment_methods.retrieve("pm_card_visa")
    assert magic.id.startswith("pm_") and magic.id != "pm_card_visa"
    assert magic.card.last4 == "4242"


def test_bad_card_numbers_are_card_errors(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as raised:
        _card(client, "4242424242424241")
    assert raised.value.code == "incorrect_number"
    assert raised.value.http_status == 402
    with pytest.raises(stripe.CardError) as raised:
        _card(client, "4111111111111111")  # a real-looking card in test mode
    assert raised.value.code == "card_declined"


def test_attach_list_and_detach_emit_events(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    customer = _customer(client)
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    assert pm.customer == customer.id
    listed = client.v1.customers.payment_methods.list(customer.id)
    assert [p.id for p in listed.data] == [pm.id]
    assert [p.id for p in client.v1.payment_methods.list(params={"customer": customer.id})] == [
        pm.id
    ]
    assert client.v1.customers.payment_methods.retrieve(customer.id, pm.id).id == pm.id
    detached = client.v1.payment_methods.detach(pm.id)
    assert detached.customer is None
    assert client.v1.customers.payment_methods.list(customer.id).data == []
    types = _types(sim, webhook_sink)
    assert types[-2:] == ["payment_method.attached", "payment_method.detached"]


def test_declined_card_fails_attach_with_a_card_error(client: stripe.StripeClient) -> None:
    customer = _customer(client)
    with pytest.raises(stripe.CardError) as raised:
        client.v1.payment_methods.attach("pm_card_chargeDeclined", params={"customer": customer.id})
    assert raised.value.code == "card_declined"
    assert raised.value.error.decline_code == "generic_decline"
    assert client.v1.customers.payment_methods.list(customer.id).data == []


def test_payment_method_update_changes_expiry_and_metadata(client: stripe.StripeClient) -> None:
    pm = _card(client, "4242424242424242")
    updated = client.v1.payment_methods.update(
        pm.id, params={"card": {"exp_month": 3}, "metadata": {"k": "v"}}
    )
    assert updated.card.exp_month == 3
    assert updated.metadata["k"] == "v"


# -- SetupIntents ----------------------------------------------------------------------------


def test_setup_intent_with_a_good_card_succeeds_and_attaches(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    customer = _customer(client)
    seti = client.v1.setup_intents.create(params={"customer": customer.id})
    assert seti.status == "requires_payment_method"
    assert_stripe_shape(seti, "setup_intent")
    confirmed = client.v1.setup_intents.confirm(seti.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    assert client.v1.payment_methods.retrieve(confirmed.payment_method).customer == customer.id
    assert [s.id for s in client.v1.setup_intents.list(params={"customer": customer.id})] == [
        seti.id
    ]
    assert _types(sim, webhook_sink)[-3:] == [
        "setup_intent.created",
        "payment_method.attached",
        "setup_intent.succeeded",
    ]


def test_setup_intent_outcomes_follow_the_test_card(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    customer = _customer(client)
    with pytest.raises(stripe.CardError) as raised:
        client.v1.setup_intents.create(
            params={
                "customer": customer.id,
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    assert raised.value.code == "card_declined"
    failed = client.v1.setup_intents.list(params={"customer": customer.id}).data[0]
    assert failed.status == "requires_payment_method"
    assert failed.last_setup_error.decline_code == "generic_decline"
    three_ds = client.v1.setup_intents.create(
        params={
            "customer": customer.id,
            "payment_method": "pm_card_authenticationRequiredOnSetup",
            "confirm": True,
        }
    )
    assert three_ds.status == "requires_action"
    assert three_ds.next_action.type == "use_stripe_sdk"
    canceled = client.v1.setup_intents.cancel(
        three_ds.id, params={"cancellation_reason": "abandoned"}
    )
    assert canceled.status == "canceled"
    assert "setup_intent.setup_failed" in _types(sim, webhook_sink)


# -- PaymentIntents and Charges --------------------------------------------------------------


def test_confirmed_payment_intent_succeeds_with_a_charge_and_events(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    customer = _customer(client)
    pi = client.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"order": "o-1"},
        }
    )
    assert pi.status == "succeeded"
    assert pi.amount_received == 2000
    assert_stripe_shape(pi, "payment_intent")
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert_stripe_shape(charge, "charge")
    assert (charge.amount, charge.paid, charge.captured, charge.status) == (
        2000,
        True,
        True,
        "succeeded",
    )
    assert charge.payment_method_details.card.last4 == "4242"
    assert charge.customer == customer.id
    assert [c.id for c in client.v1.charges.list(params={"customer": customer.id})] == [charge.id]
    assert [c.id for c in client.v1.charges.list(params={"payment_intent": pi.id})] == [charge.id]
    found = client.v1.payment_intents.search(params={"query": "metadata['order']:'o-1'"})
    assert [p.id for p in found.data] == [pi.id]
    assert _types(sim, webhook_sink) == [
        "customer.created",
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]


def test_card_declined_after_attach_fails_the_payment(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    customer = _customer(client)
    pm = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    with pytest.raises(stripe.CardError) as raised:
        client.v1.payment_intents.create(
            params={
                "amount": 1500,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": pm.id,
                "confirm": True,
            }
        )
    assert raised.value.code == "card_declined"
    pi = client.v1.payment_intents.list(params={"customer": customer.id}).data[0]
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.code == "card_declined"
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.status, charge.paid, charge.failure_code) == ("failed", False, "card_declined")
    assert _types(sim, webhook_sink)[-2:] == ["charge.failed", "payment_intent.payment_failed"]


def test_insufficient_funds_card_reports_its_decline_code(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as raised:
        client.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "payment_method": "pm_card_visa_chargeDeclinedInsufficientFunds",
                "confirm": True,
            }
        )
    assert raised.value.error.decline_code == "insufficient_funds"


def test_authentication_card_needs_action_on_session_and_fails_off_session(
    client: stripe.StripeClient,
) -> None:
    customer = _customer(client)
    pm = client.v1.payment_methods.attach(
        "pm_card_authenticationRequiredOnSetup", params={"customer": customer.id}
    )
    on_session = client.v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": pm.id,
            "confirm": True,
        }
    )
    assert on_session.status == "requires_action"
    assert on_session.next_action.type == "use_stripe_sdk"
    with pytest.raises(stripe.CardError) as raised:
        client.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": pm.id,
                "confirm": True,
                "off_session": True,
            }
        )
    assert raised.value.code == "authentication_required"


def test_manual_capture_then_partial_capture(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "eur",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        }
    )
    assert (pi.status, pi.amount_capturable) == ("requires_capture", 5000)
    assert client.v1.charges.retrieve(pi.latest_charge).captured is False
    captured = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 3000})
    assert (captured.status, captured.amount_received) == ("succeeded", 3000)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.captured, charge.amount_captured) == (True, 3000)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.capture(pi.id)


def test_unconfirmed_payment_intent_confirms_later_or_cancels(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(params={"amount": 700, "currency": "usd"})
    assert pi.status == "requires_payment_method"
    assert pi.client_secret.startswith(pi.id + "_secret_")
    confirmed = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    other = client.v1.payment_intents.create(params={"amount": 700, "currency": "usd"})
    canceled = client.v1.payment_intents.cancel(
        other.id, params={"cancellation_reason": "abandoned"}
    )
    assert canceled.status == "canceled"
    assert canceled.canceled_at is not None
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_intents.cancel(confirmed.id)
    assert raised.value.code == "payment_intent_unexpected_state"


def test_zero_decimal_amounts_stay_whole_and_minimums_apply(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={"amount": 500, "currency": "jpy", "payment_method": "pm_card_visa", "confirm": True}
    )
    assert client.v1.charges.retrieve(pi.latest_charge).amount == 500
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_intents.create(params={"amount": 10, "currency": "usd"})
    assert raised.value.code == "amount_too_small"


def test_charge_metadata_update_emits_charge_updated(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    pi = client.v1.payment_intents.create(
        params={"amount": 900, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    charge = client.v1.charges.update(pi.latest_charge, params={"metadata": {"note": "vip"}})
    assert charge.metadata["note"] == "vip"
    assert _types(sim, webhook_sink)[-1] == "charge.updated"


def test_application_fee_amount_is_kept_on_the_charge(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 10000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "application_fee_amount": 250,
        }
    )
    assert pi.application_fee_amount == 250
    assert client.v1.charges.retrieve(pi.latest_charge).application_fee_amount == 250


# -- Refunds ---------------------------------------------------------------------------------


def test_partial_then_full_refund_updates_the_charge(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 3000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    first = client.v1.refunds.create(
        params={"charge": pi.latest_charge, "amount": 1000, "reason": "requested_by_customer"}
    )
    assert_stripe_shape(first, "refund")
    assert (first.amount, first.status, first.payment_intent) == (1000, "succeeded", pi.id)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (1000, False)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 2001})
    assert raised.value.code == "amount_too_large"
    rest = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert rest.amount == 2000
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (3000, True)
    assert {r.id for r in client.v1.refunds.list(params={"charge": charge.id})} == {
        first.id,
        rest.id,
    }
    assert client.v1.refunds.retrieve(first.id).amount == 1000
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create(params={"charge": charge.id})
    assert raised.value.code == "charge_already_refunded"
    updated = client.v1.refunds.update(first.id, params={"metadata": {"ticket": "T-1"}})
    assert updated.metadata["ticket"] == "T-1"
    types = _types(sim, webhook_sink)
    assert types.count("refund.created") == 2
    assert types.count("charge.refunded") == 2
    assert types[-2:] == ["refund.updated", "charge.refund.updated"]


# -- Disputes --------------------------------------------------------------------------------


def test_dispute_card_opens_a_dispute_that_winning_evidence_wins(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    assert pi.status == "succeeded"
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert charge.disputed is True
    dispute = client.v1.disputes.list(params={"charge": charge.id}).data[0]
    assert_stripe_shape(dispute, "dispute")
    assert (dispute.amount, dispute.status, dispute.reason) == (
        4200,
        "needs_response",
        "fraudulent",
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create(params={"charge": charge.id})
    assert raised.value.code == "charge_disputed"
    won = client.v1.disputes.update(
        dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    assert won.status == "won"
    assert won.evidence_details.submission_count == 1
    types = _types(sim, webhook_sink)
    assert "charge.dispute.created" in types
    assert types[-1] == "charge.dispute.closed"


def test_closing_a_dispute_loses_it(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    dispute = client.v1.disputes.list(params={"payment_intent": pi.id}).data[0]
    staged = client.v1.disputes.update(
        dispute.id, params={"evidence": {"customer_name": "Ada"}, "submit": False}
    )
    assert staged.status == "needs_response"
    assert staged.evidence.customer_name == "Ada"
    closed = client.v1.disputes.close(dispute.id)
    assert closed.status == "lost"
    assert client.v1.disputes.retrieve(dispute.id).status == "lost"
    assert _types(sim, webhook_sink)[-1] == "charge.dispute.closed"


# -- the billing engine's entry point --------------------------------------------------------


def _ctx(sim: RunningSim) -> Ctx:
    return Ctx(sim.sim, sim.sim.platform, "req_test", None, sim.url)


def test_collect_payment_reports_outcomes_without_raising(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    """`collect_payment` (billing engine): declines, 3DS and no card are outcomes, not errors."""
    customer = _customer(client)
    with sim.sim.lock:
        ctx = _ctx(sim)
        assert resolve_payment_method(ctx, customer.id) is None
        none = collect_payment(
            ctx, customer_id=customer.id, amount=1000, currency="usd", payment_method_id=None
        )
        assert (none.status, none.charge) == ("failed", None)
        assert none.payment_intent["status"] == "requires_payment_method"
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": good.id}}
    )
    three_ds = client.v1.payment_methods.attach(
        "pm_card_authenticationRequired", params={"customer": customer.id}
    )
    with sim.sim.lock:
        ctx = _ctx(sim)
        assert resolve_payment_method(ctx, customer.id) == good.id
        assert resolve_payment_method(ctx, customer.id, explicit=three_ds.id) == three_ds.id
        paid = collect_payment(
            ctx,
            customer_id=customer.id,
            amount=1000,
            currency="usd",
            payment_method_id=good.id,
            description="Subscription creation",
        )
        assert paid.status == "succeeded"
        assert paid.charge is not None and paid.charge["paid"] is True
        action = collect_payment(
            ctx, customer_id=customer.id, amount=1000, currency="usd", payment_method_id=three_ds.id
        )
        assert action.status == "requires_action"
        assert action.payment_intent["status"] == "requires_action"
        assert action.error is not None and action.error.code == "authentication_required"
        declined = collect_payment(
            ctx,
            customer_id=customer.id,
            amount=1000,
            currency="usd",
            payment_method_id="pm_card_chargeCustomerFail",
        )
        assert declined.status == "failed"
        assert declined.error is not None and declined.error.code == "card_declined"


# -- 3D Secure test page ---------------------------------------------------------------------


def _challenge_url(intent: Any) -> str:
    return str(intent.next_action.use_stripe_sdk["stripe_js"])


def test_completing_3ds_on_the_test_page_finishes_the_payment(
    client: stripe.StripeClient,
) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    assert pi.status == "requires_action"
    page = httpx.get(_challenge_url(pi))
    assert page.status_code == 200 and 'id="complete"' in page.text and "$10.00" in page.text
    done = httpx.post(_challenge_url(pi), data={"action": "complete"})
    assert "Authentication complete." in done.text
    after = client.v1.payment_intents.retrieve(pi.id)
    assert after.status == "succeeded"
    assert client.v1.charges.retrieve(after.latest_charge).paid is True


def test_failing_3ds_leaves_the_payment_needing_a_new_method(
    client: stripe.StripeClient,
) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    httpx.post(_challenge_url(pi), data={"action": "fail"})
    after = client.v1.payment_intents.retrieve(pi.id)
    assert after.status == "requires_payment_method"
    assert after.last_payment_error.code == "payment_intent_authentication_failure"


def test_card_set_up_with_3ds_pays_off_session_without_another_challenge(
    client: stripe.StripeClient,
) -> None:
    customer = _customer(client)
    seti = client.v1.setup_intents.create(
        params={
            "customer": customer.id,
            "payment_method": "pm_card_authenticationRequiredOnSetup",
            "confirm": True,
        }
    )
    assert seti.status == "requires_action"
    httpx.post(_challenge_url(seti), data={"action": "complete"})
    seti = client.v1.setup_intents.retrieve(seti.id)
    assert seti.status == "succeeded"
    off_session = client.v1.payment_intents.create(
        params={
            "amount": 2500,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": seti.payment_method,
            "confirm": True,
            "off_session": True,
        }
    )
    assert off_session.status == "succeeded"


def test_subscription_waiting_on_3ds_becomes_active_once_authenticated(
    client: stripe.StripeClient,
) -> None:
    customer = _customer(client)
    pm = client.v1.payment_methods.attach(
        "pm_card_authenticationRequired", params={"customer": customer.id}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_payment_method": pm.id,
        }
    )
    assert sub.status == "incomplete"
    pi = client.v1.payment_intents.list(params={"customer": customer.id}).data[0]
    assert pi.status == "requires_action"
    httpx.post(_challenge_url(pi), data={"action": "complete"})
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "paid"
