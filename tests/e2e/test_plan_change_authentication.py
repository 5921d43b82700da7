"""3-D Secure on plan changes (issue 21): an upgrade billed now (`always_invoice`) whose payment
needs the card holder answers 202 `action_required` with the proration invoice's page, emails
the link, and changes the plan only once the payment succeeds (Stripe's
`pending_if_incomplete`); a failed challenge leaves the plan as it was, and a declined card is
a 402 that changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import EXAMPLE_CATALOG
from tests.e2e.conftest import World
from tests.e2e.test_three_d_secure import DECLINED_AFTER_ATTACH, THREE_DS_2, access, emails
from tests.e2e.test_three_d_secure import challenge_of as challenge_of


def business_catalog(tmp_path: Path) -> str:
    """The example catalog and Business, $99.00 a month: an upgrade from Pro's $29.00."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["business"] = {
        "name": "Business",
        "prices": [{"interval": "month", "currency": "usd", "amount": "99.00"}],
        "features": {"workflows": "unlimited", "marketplace": True},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


@pytest.fixture
def shop(make_world: Callable[..., World], tmp_path: Path) -> World:
    return make_world(
        TOLLGATE_CATALOG=business_catalog(tmp_path),
        TOLLGATE_IMMEDIATE_PRORATION_BEHAVIOR="always_invoice",
        TOLLGATE_SECRET_KEY="plan-change-secret-" + "k" * 16,
    )


def monthly_pro_paying_with(world: World, customer_id: str, card: str) -> tuple[str, str]:
    """A customer on Pro monthly (paid by a plain card), whose default card is then `card`."""
    stripe_id = str(world.create_customer(customer_id, name="Upgrade Org")["stripe_customer_id"])
    visa = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": visa.id}}
    )
    world.put_subscription(customer_id, plan="pro", interval="month", trial_days=0)
    other = world.stripe.v1.payment_methods.attach(card, params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": other.id}}
    )
    world.settle()
    sub = world.stripe.v1.subscriptions.list(params={"customer": stripe_id}).data[0]
    return stripe_id, str(sub.id)


def upgrade_needing_action(world: World, customer_id: str) -> dict[str, Any]:
    answer = world.put_subscription(customer_id, expect=202, plan="business", interval="month")
    assert answer["status"] == "action_required"
    assert answer["url"].startswith(world.sim.url + "/i/in_")
    assert answer["plan"] == "pro"  # not changed yet
    world.settle()
    return dict(answer)


def test_an_upgrade_needing_authentication_waits_and_applies_once_confirmed(shop: World) -> None:
    _, sub_id = monthly_pro_paying_with(shop, "up-org", THREE_DS_2)
    answer = upgrade_needing_action(shop, "up-org")
    pending = shop.stripe.v1.subscriptions.retrieve(sub_id)
    assert pending.pending_update is not None and pending.status == "active"
    assert shop.subscription("up-org")["plan"] == "pro"
    assert access(shop, "up-org") == ("pro", "active")
    sent = [template for template, _ in emails(shop, "up-org")]
    assert sent.count("payment_action_required") == 1
    # Asked again while it waits: the same answer, nothing new in Stripe.
    invoices = shop.stripe_count("invoice")
    again = shop.put_subscription("up-org", expect=202, plan="business", interval="month")
    assert (again["status"], again["url"]) == ("action_required", answer["url"])
    assert shop.stripe_count("invoice") == invoices

    confirmed = httpx.post(challenge_of(answer["url"]), data={"action": "complete"})
    assert "Authentication complete" in confirmed.text
    shop.settle()
    assert access(shop, "up-org") == ("business", "active")
    assert shop.stripe.v1.subscriptions.retrieve(sub_id).pending_update is None
    paid = shop.stripe.v1.invoices.retrieve(answer["url"].rsplit("/", 1)[1])
    assert paid.status == "paid"


def test_a_failed_challenge_leaves_the_plan_as_it_was(shop: World) -> None:
    _, sub_id = monthly_pro_paying_with(shop, "fail-org", THREE_DS_2)
    answer = upgrade_needing_action(shop, "fail-org")
    failed = httpx.post(challenge_of(answer["url"]), data={"action": "fail"})
    assert "Authentication failed" in failed.text
    shop.settle()
    assert shop.subscription("fail-org")["plan"] == "pro"
    assert shop.stripe.v1.subscriptions.retrieve(sub_id).pending_update is not None
    invoice = shop.stripe.v1.invoices.retrieve(answer["url"].rsplit("/", 1)[1])
    assert invoice.status == "open"
    assert access(shop, "fail-org") == ("pro", "active")


def test_a_declined_card_on_an_upgrade_is_a_402_and_changes_nothing(shop: World) -> None:
    stripe_id, sub_id = monthly_pro_paying_with(shop, "poor-org", DECLINED_AFTER_ATTACH)
    refused = shop.put_subscription("poor-org", expect=402, plan="business", interval="month")
    assert refused["error"]["type"] == "card_declined"
    shop.settle()
    after = shop.stripe.v1.subscriptions.retrieve(sub_id)
    assert (after.status, after.pending_update) == ("active", None)
    assert shop.subscription("poor-org")["plan"] == "pro"
    open_invoices = shop.stripe.v1.invoices.list(params={"customer": stripe_id, "status": "open"})
    assert open_invoices.data == []
