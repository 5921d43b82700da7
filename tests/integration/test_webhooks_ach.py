"""Bank debits (issue 21) at the webhook route: `charge.pending` holds access as
TOLLGATE_PROCESSING_ACCESS says until the debit settles; Checkout's delayed-payment events apply.

Events are hand-built from Stripe's published example objects, as in test_webhooks.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient

from tests.integration.test_webhooks import (
    SECRET,
    Hooks,
    charge_obj,
    event_obj,
    example,
    known_customer,
    new_id,
)
from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.config import ConfigError, Settings
from tollgate.db.models import Customer, Subscription
from tollgate.db.unit_of_work import Database


@pytest.fixture
def hooks(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Hooks]:
    container = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET))
    with TestClient(create_app(container)) as api:
        yield Hooks(api, container)
    container.close()


def bank_charge(ch_id: str, cus_id: str, status: str) -> dict[str, Any]:
    obj = charge_obj(ch_id, cus_id, payment_intent=new_id("pi"), status=status)
    obj["payment_method_details"] = {
        "type": "us_bank_account",
        "us_bank_account": {"bank_name": "STRIPE TEST BANK", "last4": "6789"},
    }
    return obj


def test_a_pending_debit_holds_access_until_none_is_pending(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    first, second = new_id("ch"), new_id("ch")
    hooks.deliver(event_obj("charge.pending", bank_charge(first, cus_id, "pending")))
    assert hooks.get(Customer, "acme").processing_access == "full"  # keep, the default
    hooks.deliver(event_obj("charge.pending", bank_charge(second, cus_id, "pending")))
    hooks.deliver(event_obj("charge.succeeded", bank_charge(first, cus_id, "succeeded")))
    assert hooks.get(Customer, "acme").processing_access == "full"  # one still processing
    hooks.deliver(event_obj("charge.failed", bank_charge(second, cus_id, "failed")))
    assert hooks.get(Customer, "acme").processing_access is None
    # A late `charge.pending` for a settled debit changes nothing.
    hooks.deliver(event_obj("charge.pending", bank_charge(first, cus_id, "pending")))
    assert hooks.get(Customer, "acme").processing_access is None


def test_a_card_charge_never_touches_the_processing_hold(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    hooks.deliver(event_obj("charge.succeeded", charge_obj(new_id("ch"), cus_id)))
    assert hooks.get(Customer, "acme").processing_access is None


def test_with_wait_a_pending_debit_gives_the_default_plan(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    container = build_container(
        make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET, TOLLGATE_PROCESSING_ACCESS="wait")
    )
    with TestClient(create_app(container)) as api:
        waiting = Hooks(api, container)
        cus_id = known_customer(waiting)
        waiting.deliver(event_obj("charge.pending", bank_charge(new_id("ch"), cus_id, "pending")))
        assert waiting.get(Customer, "acme").processing_access == "default"
    container.close()


def test_a_bad_processing_access_setting_is_refused(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(
        ConfigError, match="TOLLGATE_PROCESSING_ACCESS: Input should be 'keep' or 'wait'"
    ):
        make_settings(db.url, TOLLGATE_PROCESSING_ACCESS="sometimes")


def test_payment_intent_processing_is_acknowledged(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    intent = example("payment_intent")
    intent.update(id=new_id("pi"), customer=cus_id, status="processing")
    answer = hooks.deliver(event_obj("payment_intent.processing", intent))
    assert answer["status"] == "succeeded"


def _session(customer_id: str, subscription_id: str, payment_status: str) -> dict[str, Any]:
    session = example("checkout.session")
    session.update(
        id=new_id("cs_test"),
        mode="subscription",
        status="complete",
        payment_status=payment_status,
        customer=customer_id,
        subscription=subscription_id,
        client_reference_id="ach-org",
    )
    return session


def test_checkout_delayed_payment_events(hooks: Hooks, client: stripe.StripeClient) -> None:
    product = client.v1.products.create(
        params={"name": "Pro", "metadata": {"tollgate_plan": "pro"}}
    )
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "metadata": {"tollgate_plan": "pro", "tollgate_interval": "month"},
        }
    )
    customer = client.v1.customers.create(params={"email": "ach@acme.example"})
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 7}
    )
    failed = _session(customer.id, subscription.id, "unpaid")
    answer = hooks.deliver(
        event_obj("checkout.session.async_payment_failed", failed, created=int(time.time()))
    )
    assert answer["status"] == "succeeded"
    assert hooks.get(Customer, "ach-org").stripe_customer_id == customer.id
    assert hooks.get(Subscription, subscription.id) is None  # nothing granted for it

    paid = _session(customer.id, subscription.id, "paid")
    hooks.deliver(
        event_obj("checkout.session.async_payment_succeeded", paid, created=int(time.time()))
    )
    mirrored = hooks.get(Subscription, subscription.id)
    assert (mirrored.customer_id, mirrored.plan) == ("ach-org", "pro")
