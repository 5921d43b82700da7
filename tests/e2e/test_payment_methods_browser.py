"""The buyer's side of payment-method limits and authentication (issue 21), in Chromium at
1280 and 375 px: hosted Checkout refusing a card above the plan's card limit and taking one
within it, a 3-D Secure card added in the Portal (challenge completed, then failed), and a plan
change whose payment needs the card holder, confirmed or failed from the billing page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import test_billing_page_browser as billing_browser
from tests.e2e.conftest import DAY, World
from tests.e2e.test_ach import INSUFFICIENT, bank_account
from tests.e2e.test_payment_limits import limits_catalog
from tests.e2e.test_plan_change_authentication import business_catalog, monthly_pro_paying_with
from tests.e2e.test_three_d_secure import THREE_DS_2, access

browser, hosts, page = billing_browser.browser, billing_browser.hosts, billing_browser.page
screenshots = billing_browser.screenshots

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not billing_browser.CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"
    ),
]

WIDTHS = [1280, 375]
ON_SETUP = "4000 0025 0000 3155"


def at_width(page: Any, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})


def fits(page: Any, width: int) -> None:
    """Nothing on the page is wider than the window (no sideways scrolling on a phone)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def shot(page: Any, folder: Path, name: str, width: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_checkout_refuses_a_card_above_the_limit_and_takes_one_within_it(
    make_world: Any, tmp_path: Path, page: Any, screenshots: Path, width: int
) -> None:
    shop = make_world(TOLLGATE_CATALOG=limits_catalog(tmp_path))
    at_width(page, width)
    done = f"{shop.base_url}/healthz"
    shop.create_customer("yearly")
    yearly = shop.checkout("yearly", plan="pro", interval="year", success_url=done, cancel_url=done)
    page.goto(yearly["url"])
    assert "Cards are not accepted" in page.inner_text("#payment-methods")
    assert page.locator("#card_number").count() == 0
    page.click("#submit")  # no bank account given
    assert "Your account holder name is incomplete" in page.inner_text("#error")
    fits(page, width)
    shot(page, screenshots, "checkout-card-refused", width)
    shop.settle()
    assert access(shop, "yearly") == ("free", "none")
    # A card posted anyway (a hand-made form) is refused as well.
    refused = httpx.post(yearly["url"], data={"payment_method_type": "card", "card_number": "4242"})
    assert refused.status_code == 400
    assert "Cards cannot pay for this purchase" in refused.text

    shop.create_customer("monthly")
    monthly = shop.checkout(
        "monthly", plan="pro", interval="month", success_url=done, cancel_url=done
    )
    page.goto(monthly["url"])
    fits(page, width)
    page.click("#submit")  # the test card the page offers
    page.wait_for_url(done)
    shop.settle()
    assert access(shop, "monthly") == ("pro", "trialing")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_3ds_card_added_in_the_portal_is_challenged_fail_then_complete(
    world: World, page: Any, screenshots: Path, width: int
) -> None:
    at_width(page, width)
    stripe_id = str(world.create_customer("portal-org")["stripe_customer_id"])
    visa = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": visa.id}}
    )
    world.put_subscription("portal-org", plan="pro", interval="month", trial_days=0)
    portal = world.call(
        "POST", "/v1/customers/portal-org/portal", json={"return_url": f"{world.base_url}/healthz"}
    )
    page.goto(portal["url"])
    assert page.inner_text("#card-last4") == "4242"
    page.fill("#card_number", ON_SETUP)
    page.click("#update-card")
    assert "3D Secure" in page.inner_text("h1")
    fits(page, width)
    shot(page, screenshots, "portal-card-three-d-secure", width)
    page.click("#fail")
    assert "unable to authenticate" in page.inner_text("#error")
    assert page.inner_text("#card-last4") == "4242"  # the old card stays the default
    fits(page, width)
    page.fill("#card_number", ON_SETUP)
    page.click("#update-card")
    page.click("#complete")
    assert "payment method has been updated" in page.inner_text("#notice")
    assert page.inner_text("#card-last4") == "3155"
    default = world.stripe.v1.customers.retrieve(stripe_id).invoice_settings.default_payment_method
    assert world.stripe.v1.payment_methods.retrieve(default).card.last4 == "3155"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_plan_change_needing_authentication_is_failed_then_confirmed_from_the_billing_page(
    make_world: Any, tmp_path: Path, page: Any, screenshots: Path, width: int
) -> None:
    shop = make_world(
        TOLLGATE_CATALOG=business_catalog(tmp_path),
        TOLLGATE_IMMEDIATE_PRORATION_BEHAVIOR="always_invoice",
        TOLLGATE_SECRET_KEY="plan-change-browser-" + "k" * 16,
    )
    at_width(page, width)
    monthly_pro_paying_with(shop, "switch-org", THREE_DS_2)
    link = shop.call("POST", "/v1/customers/switch-org/billing-session")["url"]
    page.goto(link)
    page.select_option("#plan-select", "business")
    page.click("#preview")
    page.click("#confirm-change")  # the payment needs the card holder: to the hosted invoice
    page.wait_for_url("**/i/in_*")
    fits(page, width)
    page.click("#confirm-payment")  # to the bank's challenge
    page.click("#fail")
    assert page.inner_text("#title") == "Authentication failed."
    shop.settle()
    assert access(shop, "switch-org") == ("pro", "active")
    page.goto(link)
    assert "Your plan change waits for its payment of $70.00" in page.inner_text("#payment-action")
    assert page.inner_text("#plan-name") == "Pro"
    fits(page, width)
    shot(page, screenshots, "billing-plan-change-action", width)
    page.click("#confirm-payment")
    page.fill("#card_number", ON_SETUP)
    page.click("#pay")
    page.click("#confirm-payment")
    page.click("#complete")
    assert page.inner_text("#title") == "Authentication complete."
    shop.settle()
    assert access(shop, "switch-org") == ("business", "active")
    page.goto(link)
    assert page.inner_text("#plan-name") == "Business"
    assert page.locator("#payment-action").count() == 0
    fits(page, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_checkout_takes_a_bank_account_above_the_card_limit_and_waits_for_the_debit(
    make_world: Any, tmp_path: Path, page: Any, screenshots: Path, width: int
) -> None:
    """Pro's year ($290) is above its $200 card limit: the page offers no card, takes Stripe's
    test bank account, and the invoice stays unpaid until the debit settles (about 4 days)."""
    shop = make_world(TOLLGATE_CATALOG=limits_catalog(tmp_path))
    at_width(page, width)
    done = f"{shop.base_url}/healthz"
    clock = shop.test_clock(T0)
    shop.create_customer("ach-buyer", test_clock=clock)
    yearly = shop.checkout(
        "ach-buyer", plan="pro", interval="year", trial_days=0, success_url=done, cancel_url=done
    )
    page.goto(yearly["url"])
    assert page.locator("#card_number").count() == 0
    assert "US bank account" in page.inner_text("#bank-fields legend")
    page.fill("#account_holder_name", "Ach Buyer")
    page.fill("#routing_number", "110000001")
    page.fill("#account_number", "000123456789")
    page.click("#submit")
    assert "test routing number 110000000" in page.inner_text("#error")
    assert page.input_value("#account_number") == "000123456789"  # what the buyer typed stays
    fits(page, width)
    shot(page, screenshots, "checkout-bank-refused-routing", width)
    page.fill("#routing_number", "110000000")
    page.click("#submit")
    page.wait_for_url(done)
    shop.settle()
    stripe_id = shop.customer("ach-buyer")["stripe_customer_id"]
    (invoice,) = shop.invoices(stripe_id)
    assert invoice.status == "open" and invoice.amount_due == 29000
    methods = shop.stripe.v1.payment_methods.list(params={"customer": stripe_id}).data
    assert [(m.type, m.us_bank_account.last4) for m in methods] == [("us_bank_account", "6789")]
    # TOLLGATE_PROCESSING_ACCESS=keep: the plan at once, the invoice unpaid while processing.
    assert access(shop, "ach-buyer") == ("pro", "incomplete")
    shop.advance(clock, T0 + 4 * DAY - 3600)
    assert shop.invoices(stripe_id)[0].status == "open"
    shop.advance(clock, T0 + 4 * DAY + 3600)
    assert shop.invoices(stripe_id)[0].status == "paid"
    assert access(shop, "ach-buyer") == ("pro", "active")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_portal_adds_a_bank_account_to_a_subscription_paid_by_bank(
    make_world: Any, tmp_path: Path, page: Any, screenshots: Path, width: int
) -> None:
    shop = make_world(TOLLGATE_CATALOG=limits_catalog(tmp_path))
    at_width(page, width)
    stripe_id = str(shop.create_customer("bank-org")["stripe_customer_id"])
    bank_account(shop, stripe_id, INSUFFICIENT)
    shop.put_subscription("bank-org", plan="pro", interval="year", trial_days=0)
    portal = shop.call(
        "POST", "/v1/customers/bank-org/portal", json={"return_url": f"{shop.base_url}/healthz"}
    )
    page.goto(portal["url"])
    assert page.inner_text("#bank-last4") == "2227"
    page.fill("#account_holder_name", "Bank Org")
    page.fill("#account_number", "000999999999")
    page.click("#add-bank")
    assert "test account numbers" in page.inner_text("#error")
    assert page.inner_text("#bank-last4") == "2227"
    page.fill("#account_holder_name", "Bank Org")
    page.fill("#account_number", "000123456789")
    page.click("#add-bank")
    assert "bank account has been added" in page.inner_text("#notice")
    assert page.inner_text("#bank-last4") == "6789"
    fits(page, width)
    shot(page, screenshots, "portal-bank-added", width)
    default = shop.stripe.v1.customers.retrieve(stripe_id).invoice_settings.default_payment_method
    assert shop.stripe.v1.payment_methods.retrieve(default).us_bank_account.last4 == "6789"


T0 = 1_790_000_000  # 2026-09-21T14:13:20Z
