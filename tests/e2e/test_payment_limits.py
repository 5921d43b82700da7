"""Payment-method limits by amount (issue 21), from the catalog (`payment_methods` per plan) and
TOLLGATE_CARD_LIMITS: Checkout offers only the methods that may pay, a plan no method may pay
is refused before Stripe is asked, subscriptions carry the methods their invoices may be paid
with, and a subscription or upgrade a card may not pay is refused for a card payer with a clear
4xx and nothing changed in Stripe or Tollgate, while a bank debit is accepted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import EXAMPLE_CATALOG
from tests.e2e.conftest import World
from tests.e2e.test_ach import SUCCESS, bank_account

CARD_FORM = {"card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123"}


def limits_catalog(tmp_path: Path) -> str:
    """The example catalog, Pro taking cards up to $200 (its year is $290) or ACH, and Vault
    ($500 a month) taking cards only, up to $300."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["pro"]["payment_methods"] = {
        "accept": ["card", "us_bank_account"],
        "card_limit": {"usd": 20000},
    }
    catalog["plans"]["vault"] = {
        "name": "Vault",
        "prices": [{"interval": "month", "currency": "usd", "amount": "500.00"}],
        "features": {"workflows": "unlimited"},
        "payment_methods": {"accept": ["card"], "card_limit": {"usd": 30000}},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


@pytest.fixture
def shop(make_world: Callable[..., World], tmp_path: Path) -> World:
    return make_world(TOLLGATE_CATALOG=limits_catalog(tmp_path))


def card_customer(world: World, customer_id: str) -> str:
    stripe_id = str(world.create_customer(customer_id)["stripe_customer_id"])
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    return stripe_id


def checkout_session(world: World, url: str) -> Any:
    return world.stripe.v1.checkout.sessions.retrieve(url.rsplit("/", 1)[1])


def test_a_card_above_the_limit_is_refused_while_ach_is_accepted(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_CARD_LIMITS="usd:2000,eur:2000")  # Pro is $29.00 a month
    card = card_customer(world, "card-org")
    refused = world.put_subscription(
        "card-org", expect=400, plan="pro", interval="month", trial_days=0
    )
    assert refused["error"]["type"] == "payment_method_not_allowed"
    assert "us_bank_account or customer_balance" in refused["error"]["message"]
    assert refused["error"]["param"] == "payment_method"
    assert not world.stripe.v1.subscriptions.list(params={"customer": card}).data
    assert world.subscription("card-org")["status"] == "none"
    # A trial charges nothing now: the card is not refused yet, but the subscription's invoices
    # are offered only the methods that may pay them.
    world.put_subscription("card-org", plan="pro", interval="month")
    trialing = world.stripe.v1.subscriptions.list(params={"customer": card}).data[0]
    assert trialing.payment_settings.payment_method_types == ["us_bank_account", "customer_balance"]

    bank = str(world.create_customer("bank-org")["stripe_customer_id"])
    bank_account(world, bank, SUCCESS)
    accepted = world.put_subscription("bank-org", plan="pro", interval="month", trial_days=0)
    assert (accepted["plan"], accepted["status"]) == ("pro", "incomplete")  # the debit processes


def test_checkout_offers_only_the_methods_that_may_pay_the_plan(shop: World) -> None:
    shop.create_customer("buyer")
    monthly = shop.checkout("buyer", plan="pro", interval="month")
    assert checkout_session(shop, monthly["url"]).payment_method_types == [
        "card",
        "us_bank_account",
    ]
    shop.create_customer("yearly-buyer")
    yearly = shop.checkout("yearly-buyer", plan="pro", interval="year")
    session = checkout_session(shop, yearly["url"])
    assert session.payment_method_types == ["us_bank_account"]
    page = httpx.get(yearly["url"])
    assert "Cards are not accepted for this purchase" in page.text
    refused = httpx.post(yearly["url"], data=CARD_FORM)
    assert refused.status_code == 400 and "Cards cannot pay for this purchase" in refused.text
    assert checkout_session(shop, yearly["url"]).status == "open"
    assert shop.pay(monthly["url"]).status_code == 303  # a card pays $29.00 a month
    shop.settle()
    paid = shop.stripe.v1.subscriptions.retrieve(
        checkout_session(shop, monthly["url"]).subscription
    )
    assert paid.payment_settings.payment_method_types == ["card", "us_bank_account"]


def test_checkout_refuses_a_plan_no_method_may_pay(shop: World) -> None:
    shop.create_customer("vault-buyer")
    sessions = shop.stripe_count("checkout.session")
    refused = shop.checkout("vault-buyer", expect=400, plan="vault", interval="month")
    assert refused["error"]["type"] == "payment_method_not_allowed"
    assert refused["error"]["param"] == "plan"
    assert "card only" in refused["error"]["message"]
    assert "at most 30000 minor units of usd" in refused["error"]["message"]
    assert shop.stripe_count("checkout.session") == sessions
    direct = shop.put_subscription("vault-buyer", expect=400, plan="vault", interval="month")
    assert direct["error"]["type"] == "payment_method_not_allowed"
    assert shop.stripe_count("subscription") == 0


def test_a_bank_payers_subscription_offers_its_invoices_to_the_bank_only(shop: World) -> None:
    bank = str(shop.create_customer("ach-org")["stripe_customer_id"])
    bank_account(shop, bank, SUCCESS)
    shop.put_subscription("ach-org", plan="pro", interval="year", trial_days=0)
    sub = shop.stripe.v1.subscriptions.list(params={"customer": bank}).data[0]
    assert sub.payment_settings.payment_method_types == ["us_bank_account"]
    invoice = shop.stripe.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.payment_settings.payment_method_types == ["us_bank_account"]


def test_an_upgrade_past_the_card_limit_is_refused_for_a_card_payer_and_nothing_changes(
    shop: World,
) -> None:
    card = card_customer(shop, "upgrader")
    shop.put_subscription("upgrader", plan="pro", interval="month", trial_days=0)
    shop.settle()
    before = shop.stripe.v1.subscriptions.list(params={"customer": card}).data[0]
    invoices = len(shop.invoices(card))
    refused = shop.put_subscription("upgrader", expect=400, plan="pro", interval="year")
    assert refused["error"]["type"] == "payment_method_not_allowed"
    assert refused["error"]["param"] == "payment_method"
    assert "a card may pay at most 20000 minor units of usd" in refused["error"]["message"]
    assert refused["error"]["message"].endswith("pay by us_bank_account")
    shop.settle()
    after = shop.stripe.v1.subscriptions.retrieve(before.id)
    assert after["items"]["data"][0]["price"]["id"] == before["items"]["data"][0]["price"]["id"]
    assert after.payment_settings.payment_method_types == ["card", "us_bank_account"]
    assert len(shop.invoices(card)) == invoices
    assert (shop.subscription("upgrader")["interval"], shop.subscription("upgrader")["status"]) == (
        "month",
        "active",
    )
    # Paying by bank, the same upgrade goes through, and its invoices are the bank's only.
    bank_account(shop, card, SUCCESS)
    changed = shop.put_subscription("upgrader", plan="pro", interval="year")
    assert changed["interval"] == "year"
    updated = shop.stripe.v1.subscriptions.retrieve(before.id)
    assert updated.payment_settings.payment_method_types == ["us_bank_account"]


def transfer_catalog(tmp_path: Path) -> str:
    """The example catalog, Pro taking cards and ACH only, and Wire ($900 a month) paid only by
    bank transfer."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["pro"]["payment_methods"] = {"accept": ["card", "us_bank_account"]}
    catalog["plans"]["wire"] = {
        "name": "Wire",
        "prices": [{"interval": "month", "currency": "usd", "amount": "900.00"}],
        "features": {"workflows": "unlimited"},
        "payment_methods": {"accept": ["customer_balance"]},
    }
    path = tmp_path / "transfer-catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


def test_a_plan_paid_only_by_transfer_is_subscribed_by_transfer_unasked(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG=transfer_catalog(tmp_path))
    stripe_id = str(world.create_customer("wire-org")["stripe_customer_id"])
    answer = world.put_subscription("wire-org", plan="wire", interval="month", trial_days=0)
    assert (answer["plan"], answer["collection_method"]) == ("wire", "send_invoice")
    [sub] = world.stripe.v1.subscriptions.list(params={"customer": stripe_id}).data
    assert sub.payment_settings.payment_method_types == ["customer_balance"]


def test_a_transfer_asked_for_a_plan_that_takes_none_is_refused_and_nothing_is_made(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG=transfer_catalog(tmp_path))
    stripe_id = str(world.create_customer("card-only-org")["stripe_customer_id"])
    refused = world.put_subscription(
        "card-only-org",
        expect=400,
        plan="pro",
        interval="month",
        trial_days=0,
        payment_method="customer_balance",
    )
    assert refused["error"]["type"] == "payment_method_not_allowed"
    assert refused["error"]["param"] == "payment_method"
    assert "pay by card or us_bank_account" in refused["error"]["message"]
    assert world.stripe.v1.subscriptions.list(params={"customer": stripe_id}).data == []
