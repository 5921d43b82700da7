"""Bank transfers (`customer_balance`) through Tollgate's API, stripesim's test helper and
webhooks: an invoice paid in two transfers is paid once; an over-payment stays on the cash
balance and pays the next invoice; access waits for the money with TOLLGATE_PROCESSING_ACCESS=wait;
reconciliation finds nothing after."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.e2e import test_billing_page_browser as billing_browser
from tests.e2e.conftest import DAY, World
from tollgate.db.models import Notification
from tollgate.services.reconcile import list_drifts, reconcile

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z

# The billing page's browser fixtures: one Chromium, pages that may only reach 127.0.0.1.
browser, hosts, page = billing_browser.browser, billing_browser.hosts, billing_browser.page
screenshots = billing_browser.screenshots


def fund(world: World, stripe_customer_id: str, amount: int, reference: str = "") -> None:
    """A bank transfer of `amount` cents arrives at the customer's virtual account."""
    params: dict[str, Any] = {"amount": amount, "currency": "usd"}
    if reference:
        params["reference"] = reference
    world.stripe.v1.test_helpers.customers.fund_cash_balance(stripe_customer_id, params=params)
    world.settle()


def invoices(world: World, customer_id: str) -> list[tuple[str, int, int]]:
    listed = world.call("GET", f"/v1/customers/{customer_id}/invoices")["data"]
    return [
        (i["status"], i["amount_paid"]["amount"], i["amount_remaining"]["amount"]) for i in listed
    ]


def access(world: World, customer_id: str) -> tuple[str, str]:
    answer = world.call("GET", f"/v1/customers/{customer_id}/entitlements")
    return answer["access_plan"], answer["status"]


def templates(world: World, customer_id: str) -> list[str]:
    with world.db.transaction() as session:
        rows = session.scalars(
            sa.select(Notification.template)
            .where(Notification.customer_id == customer_id)
            .order_by(Notification.id)
        ).all()
    return list(rows)


def drifts(world: World) -> list[tuple[str, str]]:
    """What a reconciliation run (the last day, cash balances included) finds."""
    clock = world.container.clock
    report = reconcile(
        db=world.db,
        gateway=world.container.stripe,
        dunning=world.container.dunning_policy,
        clock=clock,
        since=clock.now() - timedelta(days=40),
    )
    return [(d.kind, d.object_id) for d in list_drifts(db=world.db, run_id=report.run_id)]


def subscribe_by_transfer(world: World, customer_id: str, **fields: Any) -> dict[str, Any]:
    world.create_customer(customer_id, name="Transfer Org", **fields)
    answer = world.put_subscription(
        customer_id,
        plan="pro",
        interval="month",
        trial_days=0,
        payment_method="customer_balance",
    )
    world.settle()
    return dict(answer)


def test_an_invoice_paid_in_two_transfers_is_paid_once(world: World) -> None:
    answer = subscribe_by_transfer(world, "wire-org")
    assert (answer["plan"], answer["status"]) == ("pro", "active")
    stripe_id = world.customer("wire-org")["stripe_customer_id"]
    [(status, paid, remaining)] = invoices(world, "wire-org")
    assert (status, paid) == ("open", 0)
    due = remaining
    transfers = world.call("GET", "/v1/customers/wire-org/bank-transfers")
    [waiting] = transfers["waiting"]
    assert waiting["amount_remaining"] == {"amount": due, "currency": "usd"}
    assert waiting["account"]["routing_number"] == "110000000"
    assert waiting["reference"]
    # TOLLGATE_PROCESSING_ACCESS=keep (the default): the plan at once, the invoice unpaid.
    assert access(world, "wire-org") == ("pro", "active")

    fund(world, stripe_id, 1_000, waiting["reference"])
    assert invoices(world, "wire-org") == [("open", 1_000, due - 1_000)]
    [waiting] = world.call("GET", "/v1/customers/wire-org/bank-transfers")["waiting"]
    assert waiting["amount_received"]["amount"] == 1_000
    assert "payment_succeeded" not in templates(world, "wire-org")

    fund(world, stripe_id, due - 1_000)
    assert invoices(world, "wire-org") == [("paid", due, 0)]
    transfers = world.call("GET", "/v1/customers/wire-org/bank-transfers")
    assert transfers == {"cash_balance": [], "waiting": []}
    assert templates(world, "wire-org").count("payment_succeeded") == 1
    assert access(world, "wire-org") == ("pro", "active")
    assert drifts(world) == []


def test_an_over_payment_stays_on_the_cash_balance_and_pays_the_next_invoice(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    subscribe_by_transfer(world, "over-org", test_clock=clock)
    stripe_id = world.customer("over-org")["stripe_customer_id"]
    [(_, _, due)] = invoices(world, "over-org")
    extra = due // 2
    fund(world, stripe_id, 2 * due + extra)
    assert invoices(world, "over-org") == [("paid", due, 0)]
    transfers = world.call("GET", "/v1/customers/over-org/bank-transfers")
    assert transfers == {
        "cash_balance": [{"amount": due + extra, "currency": "usd"}],
        "waiting": [],
    }
    assert drifts(world) == []

    # The next month's invoice is paid from the balance as soon as it is sent.
    world.advance(clock, T0 + 32 * DAY)
    assert invoices(world, "over-org") == [("paid", due, 0), ("paid", due, 0)]
    transfers = world.call("GET", "/v1/customers/over-org/bank-transfers")
    assert transfers == {"cash_balance": [{"amount": extra, "currency": "usd"}], "waiting": []}
    assert templates(world, "over-org").count("payment_succeeded") == 2

    # The one after takes what is left and waits for the rest.
    world.advance(clock, T0 + 62 * DAY)
    assert invoices(world, "over-org")[0] == ("open", extra, due - extra)
    transfers = world.call("GET", "/v1/customers/over-org/bank-transfers")
    assert transfers["cash_balance"] == []
    assert [w["amount_remaining"]["amount"] for w in transfers["waiting"]] == [due - extra]
    fund(world, stripe_id, due - extra)
    assert [status for status, _, _ in invoices(world, "over-org")] == ["paid"] * 3
    assert world.customer("over-org")["status"] == "active"
    assert drifts(world) == []


def test_with_wait_the_plan_waits_for_the_first_transfer(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_PROCESSING_ACCESS="wait")
    subscribe_by_transfer(world, "patient-org")
    stripe_id = world.customer("patient-org")["stripe_customer_id"]
    [(_, _, due)] = invoices(world, "patient-org")
    assert access(world, "patient-org") == ("free", "active")
    fund(world, stripe_id, due - 1)
    assert access(world, "patient-org") == ("free", "active")
    fund(world, stripe_id, 1)
    assert access(world, "patient-org") == ("pro", "active")


def test_bad_payment_methods_are_refused_and_change_nothing(world: World) -> None:
    world.create_customer("picky-org", name="Picky")
    refused = world.put_subscription(
        "picky-org", expect=400, plan="pro", interval="month", payment_method="cheque"
    )
    assert refused["error"]["param"] == "payment_method"
    refused = world.put_subscription(
        "picky-org",
        expect=400,
        plan="pro",
        interval="month",
        payment_method="customer_balance",
        collection_method="charge_automatically",
    )
    assert refused["error"]["param"] == "collection_method"
    assert world.subscription("picky-org")["status"] == "none"
    assert world.stripe_count("subscription") == 0


# -- the customer, in Chromium at 1280 and 375 px ------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not billing_browser.CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"
)


@pytest.fixture
def shop(make_world: Callable[..., World]) -> World:
    return make_world(TOLLGATE_SECRET_KEY="bank-transfer-secret-" + "k" * 16)


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("width", [1280, 375])
def test_the_billing_page_shows_where_to_send_the_money_then_the_over_payment(
    shop: World, page: Any, screenshots: Path, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    subscribe_by_transfer(shop, "org_wire")
    stripe_id = shop.customer("org_wire")["stripe_customer_id"]
    [(_, _, due)] = invoices(shop, "org_wire")
    page.goto(str(shop.call("POST", "/v1/customers/org_wire/billing-session")["url"]))
    section = page.locator("#bank-transfer")
    [waiting] = shop.call("GET", "/v1/customers/org_wire/bank-transfers")["waiting"]
    assert page.inner_text("#transfer-1 .transfer-reference") == waiting["reference"]
    assert page.inner_text("#transfer-1 .transfer-number") == waiting["account"]["account_number"]
    assert page.inner_text("#transfer-1 .transfer-routing") == "110000000"
    assert f"Send ${due / 100:,.2f}" in section.inner_text()
    assert page.inner_text("#plan-name") == "Pro"
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / f"billing-bank-transfer-{width}.png"), full_page=True)
    # Part of the money arrives: the page says what came and what is still to send.
    fund(shop, stripe_id, 1_000, waiting["reference"])
    page.reload()
    assert f"Send ${(due - 1_000) / 100:,.2f}" in section.inner_text()
    assert "$10.00 of" in page.inner_text("#transfer-1 .transfer-received")
    assert "$10.00 paid" in page.inner_text("#invoices .invoice-part-paid")
    page.screenshot(
        path=str(screenshots / f"billing-bank-transfer-part-{width}.png"), full_page=True
    )
    # The rest and 25.00 more: paid, and the over-payment shown as money kept for next time.
    fund(shop, stripe_id, due - 1_000 + 2_500)
    page.reload()
    assert page.locator(".transfer").count() == 0
    assert "$25.00 received and not yet used" in page.inner_text("#cash-balance")
    assert "Paid" in page.inner_text("#invoices")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(
        path=str(screenshots / f"billing-bank-transfer-paid-{width}.png"), full_page=True
    )
