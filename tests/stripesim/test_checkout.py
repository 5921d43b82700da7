"""Checkout Sessions through the SDK, and their hosted page driven over plain HTTP."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape

DAY = 86400


def _price(client: stripe.StripeClient, amount: int = 2900, **extra: Any) -> stripe.Price:
    params: dict[str, Any] = {
        "currency": "usd",
        "unit_amount": amount,
        "product_data": {"name": "Pro plan"},
        "recurring": {"interval": "month"},
    }
    params.update(extra)
    return client.v1.prices.create(params=params)  # type: ignore[arg-type]


def _one_time_price(client: stripe.StripeClient, amount: int = 5000) -> stripe.Price:
    return client.v1.prices.create(
        params={"currency": "usd", "unit_amount": amount, "product_data": {"name": "Setup fee"}}
    )


def _session(client: stripe.StripeClient, **params: Any) -> stripe.checkout.Session:
    base: dict[str, Any] = {
        "success_url": "https://app.example/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/cancel",
    }
    base.update(params)
    return client.v1.checkout.sessions.create(params=base)  # type: ignore[arg-type]


def _pay(url: str, card: str = "4242 4242 4242 4242", **fields: str) -> httpx.Response:
    form = {"card_number": card, "card_expiry": "12 / 34", "card_cvc": "123", **fields}
    return httpx.post(url, data=form, follow_redirects=False)


def _types(sim: RunningSim, sink: WebhookSink) -> list[str]:
    assert sim.webhooks.flush(timeout=10)
    return sink.types(sink.secret)


def test_subscription_session_has_stripes_shape_url_and_expiry(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 2}],
        customer_email="buyer@example.com",
        client_reference_id="org_42",
        metadata={"plan": "pro"},
    )
    assert_stripe_shape(session, "checkout.session")
    assert session.id.startswith("cs_test_")
    assert session.url == f"{sim.url}/checkout/{session.id}"
    assert (session.status, session.payment_status, session.mode) == (
        "open",
        "unpaid",
        "subscription",
    )
    assert session.expires_at == session.created + DAY
    assert (session.amount_subtotal, session.amount_total, session.currency) == (5800, 5800, "usd")
    assert session.client_reference_id == "org_42"
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.price.id, i.quantity, i.amount_total) for i in items.data] == [(price.id, 2, 5800)]
    again = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert again.line_items.data[0].description == "Pro plan"
    assert [s.id for s in client.v1.checkout.sessions.list(params={"status": "open"})] == [
        session.id
    ]


def test_paying_on_the_hosted_page_starts_the_subscription_and_redirects(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}],
        customer_email="buyer@example.com",
        subscription_data={"metadata": {"org": "o1"}},
    )
    page = httpx.get(session.url)
    assert page.status_code == 200
    assert "Pro plan" in page.text and "$29.00" in page.text
    assert 'name="card_number"' in page.text and "4242 4242 4242 4242" in page.text
    assert 'id="email"' in page.text and 'id="submit"' in page.text and ">Subscribe<" in page.text
    paid = _pay(session.url, email="buyer@example.com")
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://app.example/done?session={session.id}"
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "paid")
    assert done.customer_details.email == "buyer@example.com"
    subscription = client.v1.subscriptions.retrieve(done.subscription)
    assert subscription.status == "active"
    assert subscription.customer == done.customer
    assert subscription.metadata["org"] == "o1"
    assert subscription.default_payment_method is not None
    assert done.invoice == subscription.latest_invoice
    assert client.v1.customers.retrieve(done.customer).email == "buyer@example.com"
    types = _types(sim, webhook_sink)
    assert "customer.subscription.created" in types
    assert "invoice.paid" in types
    assert types[-1] == "checkout.session.completed"
    assert httpx.get(session.url).status_code == 200  # a completed page says so


def test_trial_session_shows_days_free_and_starts_trialing(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    customer = client.v1.customers.create(params={"email": "trial@example.com"})
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        customer=customer.id,
        line_items=[{"price": price.id, "quantity": 1}],
        subscription_data={"trial_period_days": 14},
    )
    assert session.amount_total == 0
    page = httpx.get(session.url)
    assert "14 days free" in page.text and "Start trial" in page.text
    assert 'id="email"' not in page.text
    assert _pay(session.url).status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.payment_status, done.customer) == ("no_payment_required", customer.id)
    subscription = client.v1.subscriptions.retrieve(done.subscription)
    assert subscription.status == "trialing"
    assert subscription.trial_end == subscription.trial_start + 14 * DAY


def test_trial_without_card_when_payment_method_collection_if_required(
    client: stripe.StripeClient,
) -> None:
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}],
        subscription_data={"trial_period_days": 7},
        payment_method_collection="if_required",
    )
    page = httpx.get(session.url)
    assert 'name="card_number"' not in page.text
    response = httpx.post(session.url, data={"email": "nocard@example.com"})
    assert response.status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    subscription = client.v1.subscriptions.retrieve(done.subscription)
    assert subscription.status == "trialing"
    assert subscription.default_payment_method is None


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ("4000 0000 0000 0002", "Your card was declined."),
        ("4000 0000 0000 0341", "Your card was declined."),
        ("4000 0000 0000 9995", "Your card has insufficient funds."),
        ("4242 4242 4242 4241", "Your card number is incorrect."),
    ],
)
def test_declined_card_shows_the_error_and_keeps_the_session_open(
    client: stripe.StripeClient, card: str, message: str
) -> None:
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}],
        customer_email="declined@example.com",
    )
    response = _pay(session.url, card=card, email="declined@example.com")
    assert response.status_code == 402
    assert message in response.text
    assert 'id="error"' in response.text
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert client.v1.subscriptions.list().data == []
    assert client.v1.customers.list().data == []
    retry = _pay(session.url, email="declined@example.com")
    assert retry.status_code == 303
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_authentication_card_is_challenged_on_the_page_and_fails_or_completes(
    client: stripe.StripeClient,
) -> None:
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}],
        customer_email="3ds@example.com",
    )
    # The card stops at the test challenge (Complete / Fail), as Checkout's 3-D Secure modal.
    challenge = _pay(session.url, card="4000002500003155", email="3ds@example.com")
    assert challenge.status_code == 200 and 'value="complete"' in challenge.text
    failed = _pay(session.url, card="4000002500003155", email="3ds@example.com", action="fail")
    assert failed.status_code == 402 and "unable to authenticate" in failed.text
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    done = _pay(session.url, card="4000002500003155", email="3ds@example.com", action="complete")
    assert done.status_code == 303
    completed = client.v1.checkout.sessions.retrieve(session.id)
    assert client.v1.subscriptions.retrieve(completed.subscription).status == "active"


def test_subscription_with_a_one_time_fee_charges_it_on_the_first_invoice(
    client: stripe.StripeClient,
) -> None:
    price, fee = _price(client), _one_time_price(client)
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}, {"price": fee.id, "quantity": 1}],
        customer_email="fee@example.com",
    )
    assert session.amount_total == 7900
    assert _pay(session.url, email="fee@example.com").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    invoice = client.v1.invoices.retrieve(done.invoice)
    assert invoice.amount_paid == 7900


def test_payment_mode_collects_a_one_time_payment(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    fee = _one_time_price(client, 1234)
    session = _session(
        client,
        mode="payment",
        line_items=[{"price": fee.id, "quantity": 2}],
        customer_creation="always",
        payment_intent_data={"metadata": {"order": "A1"}},
    )
    assert (session.amount_total, session.invoice_creation.enabled) == (2468, False)
    page = httpx.get(session.url)
    assert ">Pay<" in page.text
    assert _pay(session.url, email="once@example.com").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.payment_status == "paid"
    pi = client.v1.payment_intents.retrieve(done.payment_intent)
    assert (pi.status, pi.amount, pi.customer) == ("succeeded", 2468, done.customer)
    assert pi.metadata["order"] == "A1"
    types = _types(sim, webhook_sink)
    assert types.index("payment_intent.succeeded") < types.index("checkout.session.completed")


def test_payment_mode_declined_payment_can_be_retried_on_the_same_intent(
    client: stripe.StripeClient,
) -> None:
    fee = _one_time_price(client, 1000)
    session = _session(client, mode="payment", line_items=[{"price": fee.id, "quantity": 1}])
    assert _pay(session.url, card="4000000000000341", email="x@example.com").status_code == 402
    assert _pay(session.url, email="x@example.com").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.customer is None  # customer_creation=if_required: a guest payment
    intents = client.v1.payment_intents.list().data
    assert [pi.id for pi in intents] == [done.payment_intent]
    assert intents[0].status == "succeeded"


def test_setup_mode_saves_the_card_for_the_customer(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "save@example.com"})
    session = _session(client, mode="setup", customer=customer.id, currency="usd")
    assert session.payment_status == "no_payment_required"
    assert "Save card" in httpx.get(session.url).text
    assert _pay(session.url, card="5555 5555 5555 4444").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    seti = client.v1.setup_intents.retrieve(done.setup_intent)
    assert seti.status == "succeeded"
    pm = client.v1.payment_methods.retrieve(seti.payment_method)
    assert (pm.customer, pm.card.brand) == (customer.id, "mastercard")


def test_expire_closes_the_session_and_its_page(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    price = _price(client)
    session = _session(client, mode="subscription", line_items=[{"price": price.id, "quantity": 1}])
    expired = client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    assert httpx.get(session.url).status_code == 410
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
    assert _types(sim, webhook_sink)[-1] == "checkout.session.expired"


def test_sessions_expire_when_time_passes(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    price = _price(client)
    short = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}],
        expires_at=sim.sim.wall_time() + 3600,
    )
    default = _session(client, mode="subscription", line_items=[{"price": price.id, "quantity": 1}])
    sim.sim.advance(3601)
    assert _types(sim, webhook_sink).count("checkout.session.expired") == 1
    assert client.v1.checkout.sessions.retrieve(short.id).status == "expired"
    assert client.v1.checkout.sessions.retrieve(default.id).status == "open"
    sim.sim.advance(DAY)
    assert client.v1.checkout.sessions.retrieve(default.id).status == "expired"


def test_invalid_sessions_are_rejected_like_stripe(client: stripe.StripeClient) -> None:
    price = _price(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _session(client, mode="payment", line_items=[{"price": price.id, "quantity": 1}])
    assert raised.value.param == "line_items[0][price]"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _session(client, mode="subscription")
    assert raised.value.code == "parameter_missing"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _session(
            client,
            mode="subscription",
            line_items=[{"price": price.id, "quantity": 1}],
            expires_at=10,
        )
    assert raised.value.param == "expires_at"


def test_price_data_line_items_create_prices_inline(client: stripe.StripeClient) -> None:
    session = _session(
        client,
        mode="payment",
        line_items=[
            {
                "price_data": {
                    "currency": "jpy",
                    "unit_amount": 1500,
                    "product_data": {"name": "Sticker"},
                },
                "quantity": 3,
            }
        ],
    )
    assert (session.amount_total, session.currency) == (4500, "jpy")
    assert "4,500 JPY" in httpx.get(session.url).text


def test_connected_account_sessions_complete_in_that_account(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    account = client.v1.accounts.create(params={"type": "express"})
    options: Any = {"stripe_account": account.id}
    price = client.v1.prices.create(
        params={"currency": "usd", "unit_amount": 1000, "product_data": {"name": "Connected"}},
        options=options,
    )
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        },
        options=options,
    )
    assert _pay(session.url, email="c@example.com").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id, options=options)
    assert done.status == "complete"
    assert client.v1.payment_intents.list().data == []
    assert re.match(r"pi_", done.payment_intent)


def test_coupon_discount_lowers_the_total_and_the_first_invoice(
    client: stripe.StripeClient,
) -> None:
    price = _price(client, 4000)
    coupon = client.v1.coupons.create(params={"percent_off": 25, "duration": "once"})
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": price.id, "quantity": 1}],
        customer_email="coupon@example.com",
        discounts=[{"coupon": coupon.id}],
    )
    assert (session.amount_subtotal, session.amount_total) == (4000, 3000)
    assert session.total_details.amount_discount == 1000
    assert "-$10.00" in httpx.get(session.url).text
    assert _pay(session.url, email="coupon@example.com").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert client.v1.invoices.retrieve(done.invoice).amount_paid == 3000
    with pytest.raises(stripe.InvalidRequestError):
        _session(
            client,
            mode="subscription",
            line_items=[{"price": price.id, "quantity": 1}],
            discounts=[{"coupon": "missing"}],
        )


def test_a_buyer_types_a_promotion_code_on_the_page_where_codes_are_allowed(
    client: stripe.StripeClient,
) -> None:
    price = _price(client, 4000)
    coupon = client.v1.coupons.create(params={"percent_off": 25, "duration": "forever"})
    client.v1.promotion_codes.create(
        params={"code": "SPRING25", "promotion": {"type": "coupon", "coupon": coupon.id}}
    )
    line = [{"price": price.id, "quantity": 1}]
    closed = _session(client, mode="subscription", line_items=line, customer_email="a@x.example")
    assert 'id="promotion_code"' not in httpx.get(closed.url).text
    session = _session(
        client,
        mode="subscription",
        line_items=line,
        customer_email="code@example.com",
        allow_promotion_codes=True,
    )
    assert 'id="promotion_code"' in httpx.get(session.url).text
    wrong = httpx.post(session.url, data={"apply_code": "1", "promotion_code": "WINTER"})
    assert wrong.status_code == 400 and "This code is invalid." in wrong.text
    applied = httpx.post(session.url, data={"apply_code": "1", "promotion_code": "spring25"})
    assert applied.status_code == 200 and "-$10.00" in applied.text and "SPRING25" in applied.text
    shown = client.v1.checkout.sessions.retrieve(session.id)
    assert (shown.amount_subtotal, shown.amount_total) == (4000, 3000)
    assert _pay(session.url, email="code@example.com").status_code == 303
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert client.v1.invoices.retrieve(done.invoice).amount_paid == 3000
    subscription = client.v1.subscriptions.retrieve(done.subscription)
    assert len(subscription.discounts) == 1


def test_sessions_of_a_test_clock_customer_expire_when_the_clock_advances(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    start = sim.sim.wall_time()
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    price = _price(client)
    session = _session(
        client,
        mode="subscription",
        customer=customer.id,
        line_items=[{"price": price.id, "quantity": 1}],
    )
    assert session.expires_at == start + DAY
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + DAY + 60})
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"


def test_the_hosted_page_shows_a_usage_price_by_its_rate_and_the_sellers_name(
    client: stripe.StripeClient, sim: RunningSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sim.sim, "business_name", "Acme Workflows")
    product = client.v1.products.create(params={"name": "Workflow runs", "unit_label": "run"})
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Runs",
            "event_name": "runs_overage",
            "default_aggregation": {"formula": "sum"},
        }
    )
    overage = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount_decimal": "0.05",
            "product": product.id,
            "nickname": "Pro: Workflow runs over the 100,000 included (month, USD)",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "transform_quantity": {"divide_by": 1000, "round": "up"},
        }
    )
    session = _session(
        client,
        mode="subscription",
        line_items=[{"price": _price(client).id, "quantity": 1}, {"price": overage.id}],
    )
    page = httpx.get(session.url).text
    assert "<h1>Acme Workflows</h1>" in page
    assert "$0.50 per 1,000 runs, billed monthly on usage" in page
    assert "Pro: Workflow runs over the 100,000 included (month, USD)" in page
    assert "$0.00" not in page
