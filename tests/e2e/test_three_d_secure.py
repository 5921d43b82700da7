"""3-D Secure through Tollgate's API and stripesim's hosted pages: a direct subscription whose card
needs its holder answers `action_required` with the invoice's page (not a bare 402), the customer
is emailed the link, and confirming on the page flips access; a failed challenge leaves the plan
where it was. The buyer's part runs in a real Chromium (hosted invoice and hosted Checkout)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e import test_billing_page_browser as billing_browser
from tests.e2e.conftest import World
from tollgate.db.models import Notification

# The billing page's browser fixtures: one Chromium, pages that may only reach 127.0.0.1.
browser, hosts, page = billing_browser.browser, billing_browser.hosts, billing_browser.page
screenshots = billing_browser.screenshots

THREE_DS_2 = "pm_card_threeDSecure2Required"  # 4000 0000 0000 3220
ON_SETUP = "4000 0025 0000 3155"
INSUFFICIENT_FUNDS = "4000 0000 0000 9995"
DECLINED_AFTER_ATTACH = "pm_card_chargeCustomerFail"  # 4000 0000 0000 0341


def customer_with_card(world: World, customer_id: str, card: str) -> str:
    """A Tollgate customer whose Stripe customer pays by default with the test card `card`."""
    stripe_id = str(world.create_customer(customer_id, name="Secure Org")["stripe_customer_id"])
    method = world.stripe.v1.payment_methods.attach(card, params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    return stripe_id


def access(world: World, customer_id: str) -> tuple[str, str]:
    answer = world.call("GET", f"/v1/customers/{customer_id}/entitlements")
    return answer["access_plan"], answer["status"]


def emails(world: World, customer_id: str) -> list[tuple[str, str]]:
    with world.db.transaction() as session:
        rows = session.execute(
            sa.select(Notification.template, Notification.cause)
            .where(Notification.customer_id == customer_id)
            .order_by(Notification.id)
        ).all()
    return [(row.template, row.cause) for row in rows]


def subscribe_needing_action(world: World, customer_id: str) -> dict[str, Any]:
    answer = world.put_subscription(
        customer_id, expect=202, plan="pro", interval="month", trial_days=0
    )
    assert answer["status"] == "action_required"
    assert answer["url"].startswith(world.sim.url + "/i/in_")
    world.settle()
    return dict(answer)


def challenge_of(invoice_url: str) -> str:
    """The 3-D Secure page the hosted invoice offers while its payment waits for the holder."""
    shown = httpx.get(invoice_url)
    found = re.search(r'href="(/3ds/pi_\w+)"', shown.text)
    assert found, shown.text
    return invoice_url.split("/i/")[0] + found.group(1)


def test_a_card_needing_authentication_answers_action_required_and_confirming_grants_the_plan(
    world: World,
) -> None:
    customer_with_card(world, "secure-org", THREE_DS_2)
    answer = subscribe_needing_action(world, "secure-org")
    assert answer["plan"] == "pro"
    # Incomplete until the holder confirms: no plan yet, the invoice open with its page.
    assert access(world, "secure-org") == ("free", "incomplete")
    invoices = world.call("GET", "/v1/customers/secure-org/invoices")["data"]
    assert [(i["status"], i["hosted_invoice_url"]) for i in invoices] == [("open", answer["url"])]
    sent = emails(world, "secure-org")
    assert [template for template, _ in sent].count("payment_action_required") == 1
    # Asked again (a retry), the same answer, and nothing new in Stripe.
    subscriptions = world.stripe_count("subscription")
    again = world.put_subscription(
        "secure-org", expect=202, plan="pro", interval="month", trial_days=0
    )
    assert (again["status"], again["url"]) == ("action_required", answer["url"])
    assert world.stripe_count("subscription") == subscriptions

    confirmed = httpx.post(challenge_of(answer["url"]), data={"action": "complete"})
    assert confirmed.status_code == 200 and "Authentication complete" in confirmed.text
    world.settle()
    assert access(world, "secure-org") == ("pro", "active")
    invoices = world.call("GET", "/v1/customers/secure-org/invoices")["data"]
    assert [i["status"] for i in invoices] == ["paid"]
    assert "payment_succeeded" in [template for template, _ in emails(world, "secure-org")]


def test_a_failed_challenge_leaves_the_plan_and_the_invoice_open(world: World) -> None:
    customer_with_card(world, "failed-org", THREE_DS_2)
    answer = subscribe_needing_action(world, "failed-org")
    failed = httpx.post(challenge_of(answer["url"]), data={"action": "fail"})
    assert "Authentication failed" in failed.text
    world.settle()
    assert access(world, "failed-org") == ("free", "incomplete")
    invoices = world.call("GET", "/v1/customers/failed-org/invoices")["data"]
    assert [i["status"] for i in invoices] == ["open"]


def test_a_declined_card_is_still_a_402_and_leaves_nothing(world: World) -> None:
    customer_with_card(world, "poor-org", DECLINED_AFTER_ATTACH)
    answer = world.put_subscription(
        "poor-org", expect=402, plan="pro", interval="month", trial_days=0
    )
    assert answer["error"]["type"] == "card_declined"
    world.settle()
    assert world.subscription("poor-org")["status"] == "none"
    assert access(world, "poor-org") == ("free", "none")


# -- the buyer, in Chromium --------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not billing_browser.CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"
)


@pytest.fixture
def shop(make_world: Callable[..., World]) -> World:
    return make_world(TOLLGATE_SECRET_KEY="three-d-secure-secret-" + "k" * 16)


def _billing_link(world: World, customer_id: str) -> str:
    return str(world.call("POST", f"/v1/customers/{customer_id}/billing-session")["url"])


@pytest.mark.browser
@needs_chromium
def test_the_customer_fails_then_completes_the_challenge_from_the_billing_page(
    shop: World, page: Any, screenshots: Path
) -> None:
    customer_with_card(shop, "org_3ds", THREE_DS_2)
    subscribe_needing_action(shop, "org_3ds")
    page.goto(_billing_link(shop, "org_3ds"))
    assert "is not complete" in page.inner_text("#payment-action")
    assert page.inner_text("#status") == "Incomplete"
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "billing-payment-action.png"), full_page=True)
    page.click("#confirm-payment")  # to the hosted invoice
    page.click("#confirm-payment")  # to the bank's challenge
    page.screenshot(path=str(screenshots / "three-d-secure.png"), full_page=True)
    page.click("#fail")
    assert page.inner_text("#title") == "Authentication failed."
    page.click("#continue")
    shop.settle()
    assert page.inner_text("#status") == "open"
    assert page.locator("#confirm-payment").count() == 0
    # Another card on the invoice page: one without the funds, then one that needs a challenge
    # too, completed this time.
    page.fill("#card_number", INSUFFICIENT_FUNDS)
    page.click("#pay")
    assert "insufficient funds" in page.inner_text("#error")
    page.fill("#card_number", ON_SETUP)
    page.click("#pay")
    assert "confirm this payment" in page.inner_text("#notice")
    page.click("#confirm-payment")
    page.click("#complete")
    assert page.inner_text("#title") == "Authentication complete."
    page.click("#continue")
    assert page.inner_text("#status") == "paid"
    shop.settle()
    assert access(shop, "org_3ds") == ("pro", "active")
    page.goto(_billing_link(shop, "org_3ds"))
    assert page.inner_text("#plan-name") == "Pro"
    assert page.locator("#payment-action").count() == 0


@pytest.mark.browser
@needs_chromium
def test_hosted_checkout_challenges_a_3ds_card_fail_then_complete(
    shop: World, page: Any, screenshots: Path
) -> None:
    shop.create_customer("org_checkout_3ds", name="Checkout Org")
    page.goto(_billing_link(shop, "org_checkout_3ds"))
    page.select_option("#plan-select", "pro")
    page.click("#preview")
    page.click("#confirm-change")
    page.wait_for_selector("#checkout-form")
    page.fill("#card_number", "4000 0000 0000 3220")
    page.click("#submit")
    assert "3D Secure" in page.inner_text("h1")
    page.screenshot(path=str(screenshots / "checkout-three-d-secure.png"), full_page=True)
    page.click("#fail")
    assert "unable to authenticate" in page.inner_text("#error")
    shop.settle()
    assert access(shop, "org_checkout_3ds") == ("free", "none")
    page.fill("#card_number", "4000 0000 0000 3220")
    page.click("#submit")
    page.click("#complete")
    page.wait_for_url("**/billing?checkout=success")
    shop.settle()
    assert access(shop, "org_checkout_3ds") == ("pro", "trialing")
