"""The buyer's side of payment-method limits and authentication (issue 21), in Chromium at
1280 and 375 px: hosted Checkout refusing a card above the plan's card limit and taking one
within it, a 3-D Secure card added in the Portal (challenge completed, then failed), and a plan
change whose payment needs the card holder, confirmed or failed from the billing page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e import test_billing_page_browser as billing_browser
from tests.e2e.conftest import World
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
    page.click("#submit")
    assert "Cards cannot pay for this purchase" in page.inner_text("#error")
    fits(page, width)
    shot(page, screenshots, "checkout-card-refused", width)
    shop.settle()
    assert access(shop, "yearly") == ("free", "none")

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
