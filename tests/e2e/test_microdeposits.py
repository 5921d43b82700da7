"""Bank accounts verified with micro-deposits, through Tollgate's API and stripesim's hosted
pages: with TOLLGATE_BANK_VERIFICATION=microdeposits a direct subscription paid by a new bank
account answers `action_required` with the invoice's page (like 3-D Secure), the customer is
emailed the link and sees it on the billing page; entering Stripe's test amounts starts the
debit (the plan as TOLLGATE_PROCESSING_ACCESS says) and it is paid days later; wrong amounts fail
it and change nothing. The customer's part runs in a real Chromium, at 1280 and 375 px."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import test_billing_page_browser as billing_browser
from tests.e2e.conftest import DAY, World
from tests.e2e.test_ach import SUCCESS, bank_account
from tests.e2e.test_bank_transfers import access, templates

# The billing page's browser fixtures: one Chromium, pages that may only reach 127.0.0.1.
browser, hosts, page = billing_browser.browser, billing_browser.hosts, billing_browser.page
screenshots = billing_browser.screenshots

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z


@pytest.fixture
def shop(make_world: Callable[..., World]) -> World:
    return make_world(
        TOLLGATE_BANK_VERIFICATION="microdeposits",
        TOLLGATE_SECRET_KEY="microdeposit-secret-" + "k" * 16,
    )


def subscribe_needing_verification(world: World, customer_id: str, clock: str) -> dict[str, Any]:
    """A customer on a test clock paying by a new bank account: subscribing needs the customer."""
    stripe_id = world.create_customer(customer_id, name="Verify Org", test_clock=clock)[
        "stripe_customer_id"
    ]
    bank_account(world, stripe_id, SUCCESS)
    answer = world.put_subscription(
        customer_id, expect=202, plan="pro", interval="month", trial_days=0
    )
    world.settle()
    return dict(answer)


def verification_page(invoice_url: str) -> str:
    """The micro-deposit page the hosted invoice links to while its debit waits for them."""
    shown = httpx.get(invoice_url).text
    found = re.search(r'id="verify-account" class="button" href="([^"]+)"', shown)
    assert found, shown
    return found.group(1)


def test_a_new_bank_account_answers_action_required_and_verifying_it_pays(shop: World) -> None:
    clock = shop.test_clock(T0)
    answer = subscribe_needing_verification(shop, "verify-org", clock)
    assert (answer["status"], answer["plan"]) == ("action_required", "pro")
    assert answer["url"].startswith(shop.sim.url + "/i/in_")
    assert access(shop, "verify-org") == ("free", "incomplete")
    assert templates(shop, "verify-org").count("payment_action_required") == 1
    # Asked again: the same answer, nothing new at Stripe.
    subscriptions = shop.stripe_count("subscription")
    again = shop.put_subscription(
        "verify-org", expect=202, plan="pro", interval="month", trial_days=0
    )
    assert (again["status"], again["url"]) == ("action_required", answer["url"])
    assert shop.stripe_count("subscription") == subscriptions

    verified = httpx.post(
        verification_page(answer["url"]), data={"amount_1": "32", "amount_2": "45"}
    )
    assert "Bank account verified." in verified.text
    shop.settle()
    # The debit processes: TOLLGATE_PROCESSING_ACCESS=keep gives the plan, the invoice is open.
    assert access(shop, "verify-org") == ("pro", "incomplete")
    invoices = shop.call("GET", "/v1/customers/verify-org/invoices")["data"]
    assert [i["status"] for i in invoices] == ["open"]
    shop.advance(clock, T0 + 5 * DAY)
    assert access(shop, "verify-org") == ("pro", "active")
    invoices = shop.call("GET", "/v1/customers/verify-org/invoices")["data"]
    assert [i["status"] for i in invoices] == ["paid"]
    assert templates(shop, "verify-org").count("payment_succeeded") == 1


def test_without_the_setting_a_bank_account_is_debited_at_once(world: World) -> None:
    stripe_id = world.create_customer("instant-org", name="Instant")["stripe_customer_id"]
    bank_account(world, stripe_id, SUCCESS)
    answer = world.put_subscription("instant-org", plan="pro", interval="month", trial_days=0)
    assert answer["status"] == "incomplete"  # processing, not waiting for the customer
    world.settle()
    assert "payment_action_required" not in templates(world, "instant-org")


# -- the customer, in Chromium ----------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not billing_browser.CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"
)


def _open_verification(shop: World, page: Any, customer_id: str, width: int, shots: Path) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(str(shop.call("POST", f"/v1/customers/{customer_id}/billing-session")["url"]))
    assert "micro-deposits" in page.inner_text("#payment-action")
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"billing-verify-{width}.png"), full_page=True)
    page.click("#confirm-payment")  # to the hosted invoice
    page.click("#verify-account")  # to the micro-deposit page
    assert page.inner_text("#title") == "Verify your bank account"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(shots / f"microdeposits-{width}.png"), full_page=True)


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("width", [1280, 375])
def test_the_customer_verifies_the_account_on_the_hosted_page(
    shop: World, page: Any, screenshots: Path, width: int
) -> None:
    clock = shop.test_clock(T0)
    subscribe_needing_verification(shop, "org_verify", clock)
    _open_verification(shop, page, "org_verify", width, screenshots)
    page.fill("#amount_1", "32")
    page.fill("#amount_2", "45")
    page.click("#verify")
    assert page.inner_text("#title") == "Bank account verified."
    page.click("#continue")
    assert page.inner_text("#status") == "open"  # the debit is processing
    assert page.locator("#verify-account").count() == 0
    shop.settle()
    assert access(shop, "org_verify") == ("pro", "incomplete")
    shop.advance(clock, T0 + 5 * DAY)
    page.goto(str(shop.call("POST", "/v1/customers/org_verify/billing-session")["url"]))
    assert page.inner_text("#plan-name") == "Pro"
    assert page.locator("#payment-action").count() == 0
    assert access(shop, "org_verify") == ("pro", "active")


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("width", [1280, 375])
def test_wrong_amounts_fail_the_verification_and_leave_the_plan(
    shop: World, page: Any, screenshots: Path, width: int
) -> None:
    clock = shop.test_clock(T0)
    subscribe_needing_verification(shop, "org_wrong", clock)
    _open_verification(shop, page, "org_wrong", width, screenshots)
    for left in ("2 verification attempts", "1 verification attempt"):
        page.fill("#amount_1", "10")
        page.fill("#amount_2", "11")
        page.click("#verify")
        assert left in page.inner_text("#error")
    page.fill("#amount_1", "10")
    page.fill("#amount_2", "11")
    page.click("#verify")
    assert page.inner_text("#title") == "Verification failed."
    page.screenshot(path=str(screenshots / f"microdeposits-failed-{width}.png"), full_page=True)
    shop.settle()
    assert access(shop, "org_wrong") == ("free", "incomplete")
    invoices = shop.call("GET", "/v1/customers/org_wrong/invoices")["data"]
    assert [i["status"] for i in invoices] == ["open"]
