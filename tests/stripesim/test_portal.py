"""Billing Portal configurations and sessions, and the hosted portal's actions over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape

DAY = 86400


def _plans(client: stripe.StripeClient) -> tuple[stripe.Price, stripe.Price]:
    product = client.v1.products.create(params={"name": "Tollgate"})
    basic = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
            "nickname": "Basic",
        }
    )
    pro = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 3000,
            "recurring": {"interval": "month"},
            "nickname": "Pro",
        }
    )
    return basic, pro


def _subscribed(
    client: stripe.StripeClient, price: stripe.Price, card: str = "pm_card_visa"
) -> tuple[stripe.Customer, stripe.Subscription]:
    customer = client.v1.customers.create(params={"email": "portal@example.com"})
    pm = client.v1.payment_methods.attach(card, params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    return customer, sub


def _configuration(
    client: stripe.StripeClient, prices: list[stripe.Price], **cancel: Any
) -> stripe.billing_portal.Configuration:
    return client.v1.billing_portal.configurations.create(
        params={
            "business_profile": {"headline": "Tollgate billing"},
            "default_return_url": "https://app.example/account",
            "features": {
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
                "subscription_cancel": {"enabled": True, **cancel},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "proration_behavior": "always_invoice",
                    "products": [{"product": prices[0].product, "prices": [p.id for p in prices]}],
                },
            },
        }
    )


def _portal(
    client: stripe.StripeClient, customer_id: str, config_id: str | None = None, **extra: Any
) -> stripe.billing_portal.Session:
    params: dict[str, Any] = {"customer": customer_id, **extra}
    if config_id:
        params["configuration"] = config_id
    return client.v1.billing_portal.sessions.create(params=params)  # type: ignore[arg-type]


def _post(url: str, **form: str) -> httpx.Response:
    return httpx.post(url, data=form, follow_redirects=True)


def test_configuration_round_trips_with_stripes_shape(client: stripe.StripeClient) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro], mode="immediately")
    assert_stripe_shape(config, "billing_portal.configuration")
    assert config.id.startswith("bpc_")
    assert config.is_default is True
    assert config.features.subscription_cancel.mode == "immediately"
    assert config.features.subscription_update.products[0].prices == [basic.id, pro.id]
    updated = client.v1.billing_portal.configurations.update(
        config.id, params={"features": {"invoice_history": {"enabled": False}}}
    )
    assert updated.features.invoice_history.enabled is False
    assert updated.features.payment_method_update.enabled is True
    second = client.v1.billing_portal.configurations.create(
        params={"features": {"invoice_history": {"enabled": True}}}
    )
    assert second.is_default is False
    defaults = client.v1.billing_portal.configurations.list(params={"is_default": True})
    assert [c.id for c in defaults.data] == [config.id]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing_portal.configurations.create(
            params={
                "features": {
                    "subscription_update": {"enabled": True, "default_allowed_updates": ["price"]}
                }
            }
        )
    assert raised.value.param == "features[subscription_update][products]"


def test_portal_session_has_shape_url_and_return_url(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    customer, _ = _subscribed(client, basic)
    session = _portal(client, customer.id, config.id)
    assert_stripe_shape(session, "billing_portal.session")
    assert session.url == f"{sim.url}/portal/{session.id}"
    assert session.return_url == "https://app.example/account"
    assert session.configuration == config.id
    assert session.flow is None


def test_portal_without_configuration_uses_the_default_settings(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create(params={"email": "d@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _portal(client, customer.id)
    assert raised.value.param == "return_url"
    session = _portal(client, customer.id, return_url="https://app.example/back")
    config = client.v1.billing_portal.configurations.retrieve(session.configuration)
    assert config.is_default is True
    page = httpx.get(session.url)
    assert page.status_code == 200
    assert 'href="https://app.example/back"' in page.text


def test_portal_page_lists_subscription_card_and_invoices(client: stripe.StripeClient) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    customer, sub = _subscribed(client, basic)
    page = httpx.get(_portal(client, customer.id, config.id).url)
    assert page.status_code == 200
    assert "Tollgate billing" in page.text
    assert f'id="subscription-{sub.id}"' in page.text
    assert "$10.00 per month" in page.text
    assert f'id="cancel-{sub.id}"' in page.text
    assert f'id="change-plan-{sub.id}"' in page.text
    assert 'id="card-last4">4242<' in page.text
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert f'data-invoice="{invoice.id}"' in page.text
    assert 'id="return" href="https://app.example/account"' in page.text


def test_cancel_at_period_end_then_renew(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro], mode="at_period_end")
    customer, sub = _subscribed(client, basic)
    session = _portal(client, customer.id, config.id)
    canceled = _post(session.url, action="cancel", subscription=sub.id)
    assert canceled.status_code == 200
    assert "will be canceled at the end" in canceled.text
    assert f'id="cancels-{sub.id}"' in canceled.text
    after = client.v1.subscriptions.retrieve(sub.id)
    assert (after.status, after.cancel_at_period_end) == ("active", True)
    renewed = _post(session.url, action="renew", subscription=sub.id)
    assert "has been renewed" in renewed.text
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False
    assert sim.webhooks.flush(timeout=10)
    updates = [
        e
        for e in webhook_sink.events(webhook_sink.secret)
        if e.type == "customer.subscription.updated"
    ]
    assert [e.data.object.cancel_at_period_end for e in updates[-2:]] == [True, False]


def test_cancel_immediately_deletes_the_subscription(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro], mode="immediately")
    customer, sub = _subscribed(client, basic)
    page = _post(_portal(client, customer.id, config.id).url, action="cancel", subscription=sub.id)
    assert "has been canceled" in page.text
    assert 'id="no-subscriptions"' in page.text
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert sim.webhooks.flush(timeout=10)
    assert "customer.subscription.deleted" in webhook_sink.types(webhook_sink.secret)


def test_change_plan_goes_through_billing_with_the_configured_proration(
    client: stripe.StripeClient,
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    customer, sub = _subscribed(client, basic)
    page = _post(
        _portal(client, customer.id, config.id).url,
        action="change_plan",
        subscription=sub.id,
        price=pro.id,
    )
    assert "plan has been updated" in page.text
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.items.data[0].price.id == pro.id
    assert after.latest_invoice != sub.latest_invoice  # always_invoice billed the proration
    rejected = _post(
        _portal(client, customer.id, config.id).url,
        action="change_plan",
        subscription=sub.id,
        price="price_not_allowed",
    )
    assert rejected.status_code == 400
    assert "not available" in rejected.text


def test_update_card_sets_default_and_pays_open_invoices(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    customer, sub = _subscribed(client, basic, card="pm_card_chargeCustomerFail")
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete"
    session = _portal(client, customer.id, config.id)
    declined = _post(
        session.url,
        action="update_card",
        card_number="4000000000000002",
        card_expiry="12/34",
        card_cvc="123",
    )
    assert declined.status_code == 402
    assert "Your card was declined." in declined.text
    page = _post(
        session.url,
        action="update_card",
        card_number="5555555555554444",
        card_expiry="12/34",
        card_cvc="123",
    )
    assert "payment method has been updated" in page.text
    assert 'id="card-last4">4444<' in page.text
    customer = client.v1.customers.retrieve(customer.id)
    pm = client.v1.payment_methods.retrieve(customer.invoice_settings.default_payment_method)
    assert pm.card.last4 == "4444"
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_flow_with_redirect_returns_after_the_action(client: stripe.StripeClient) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro], mode="at_period_end")
    customer, sub = _subscribed(client, basic)
    session = _portal(
        client,
        customer.id,
        config.id,
        flow_data={
            "type": "subscription_cancel",
            "subscription_cancel": {"subscription": sub.id},
            "after_completion": {
                "type": "redirect",
                "redirect": {"return_url": "https://app.example/bye"},
            },
        },
    )
    assert session.flow.type == "subscription_cancel"
    response = httpx.post(
        session.url, data={"action": "cancel", "subscription": sub.id}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "https://app.example/bye"
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True


def test_portal_refuses_another_customers_subscription(client: stripe.StripeClient) -> None:
    basic, pro = _plans(client)
    config = _configuration(client, [basic, pro])
    _, other_sub = _subscribed(client, basic)
    customer = client.v1.customers.create(params={"email": "me@example.com"})
    response = _post(
        _portal(client, customer.id, config.id).url, action="cancel", subscription=other_sub.id
    )
    assert response.status_code == 404
    assert client.v1.subscriptions.retrieve(other_sub.id).cancel_at_period_end is False


def test_quantity_and_customer_details_update_when_the_configuration_allows(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    basic, _ = _plans(client)
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "customer_update": {"enabled": True, "allowed_updates": ["email", "name"]},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["quantity"],
                    "proration_behavior": "none",
                },
            },
            "default_return_url": "https://app.example/account",
        }
    )
    customer, sub = _subscribed(client, basic)
    session = _portal(client, customer.id, config.id)
    page = httpx.get(session.url)
    assert f'id="quantity-{sub.id}"' in page.text and f'id="price-{sub.id}"' not in page.text
    seats = _post(session.url, action="change_plan", subscription=sub.id, quantity="5")
    assert "plan has been updated" in seats.text
    assert client.v1.subscriptions.retrieve(sub.id).items.data[0].quantity == 5
    details = _post(session.url, action="update_customer", email="new@example.com", name="Ada")
    assert "billing information has been updated" in details.text
    updated = client.v1.customers.retrieve(customer.id)
    assert (updated.email, updated.name) == ("new@example.com", "Ada")
    refused = _post(session.url, action="cancel", subscription=sub.id)
    assert refused.status_code == 403
    assert sim.webhooks.flush(timeout=10)
    assert webhook_sink.types(webhook_sink.secret)[-1] == "customer.updated"


def test_a_products_adjustable_quantity_bounds_the_seats_chosen_in_the_portal(
    client: stripe.StripeClient,
) -> None:
    basic, pro = _plans(client)
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price", "quantity"],
                    "products": [
                        {
                            "product": basic.product,
                            "prices": [basic.id, pro.id],
                            "adjustable_quantity": {"enabled": True, "minimum": 2, "maximum": 5},
                        }
                    ],
                },
            },
            "default_return_url": "https://app.example/account",
        }
    )
    bounds = config.features.subscription_update.products[0].adjustable_quantity
    assert (bounds.enabled, bounds.minimum, bounds.maximum) == (True, 2, 5)
    customer, sub = _subscribed(client, basic)
    session = _portal(client, customer.id, config.id)
    for wrong in ("1", "6"):
        refused = _post(session.url, action="change_plan", subscription=sub.id, quantity=wrong)
        assert refused.status_code == 400 and "Choose a quantity from 2 to 5." in refused.text
    assert client.v1.subscriptions.retrieve(sub.id).items.data[0].quantity == 1
    _post(session.url, action="change_plan", subscription=sub.id, quantity="5")
    assert client.v1.subscriptions.retrieve(sub.id).items.data[0].quantity == 5
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing_portal.configurations.create(
            params={
                "features": {
                    "subscription_update": {
                        "enabled": True,
                        "default_allowed_updates": ["quantity"],
                        "products": [
                            {
                                "product": basic.product,
                                "prices": [basic.id],
                                "adjustable_quantity": {
                                    "enabled": True,
                                    "minimum": 3,
                                    "maximum": 2,
                                },
                            }
                        ],
                    }
                }
            }
        )
    assert raised.value.param.endswith("[adjustable_quantity][maximum]")
