"""The console in a real headless Chromium over SQLite and PostgreSQL, as an operator uses it:
sign in, find a past-due customer from the overview, replay a failed webhook, grant credits, a
readonly operator, a form without its CSRF token, an email as its customer reads it, heal from
the reconciliation page, and the pages at 1280 px and 375 px (screenshots in docs/screenshots)."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import stripe

from tests.console.conftest import NOW, SECRET, T0, charge_obj, customer_obj, event_obj
from tests.e2e.conftest import serve
from tests.integration.test_webhooks import subscription_obj
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.services.operators import create_operator

CHROMIUM = Path("/usr/bin/chromium")
# The README's screenshots are rewritten only when asked (TOLLGATE_UPDATE_SCREENSHOTS=1), so a
# test run leaves the tree as it was; otherwise they go to a scratch folder.
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("TOLLGATE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "tollgate-screenshots"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "console password 1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


@dataclass
class Console:
    url: str
    container: Container
    clock: FrozenClock

    def deliver(self, event: dict[str, Any]) -> int:
        payload = orjson.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload.decode(), SECRET, int(self.clock.now().timestamp())
        )
        answer = httpx.post(
            f"{self.url}/webhooks/stripe",
            content=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
            timeout=30,
        )
        return answer.status_code

    def customer(self, app_id: str, name: str) -> str:
        cus_id = f"cus_{secrets.token_hex(7)}"
        obj = customer_obj(cus_id, app_id=app_id, email=f"billing@{app_id}.example")
        obj["name"] = name
        assert self.deliver(event_obj("customer.created", obj)) == 200
        return cus_id

    def subscribe(self, cus_id: str, status: str, **kw: Any) -> str:
        sub_id = f"sub_{secrets.token_hex(7)}"
        obj = subscription_obj(sub_id, cus_id, status=status, **kw)
        assert self.deliver(event_obj("customer.subscription.created", obj)) == 200
        return sub_id

    def rename(self, old: str, new: str) -> None:
        with self.container.db.engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


@pytest.fixture
def desk(migrated_url: str, make_settings: Callable[..., Settings]) -> Iterator[Console]:
    """The console served over a migrated SQLite file or PostgreSQL schema (each test runs on
    both), with operators of each role, five customers and last month's charges."""
    url = migrated_url
    clock = FrozenClock(NOW)
    container = build_container(make_settings(url, STRIPE_WEBHOOK_SECRETS=SECRET), clock=clock)
    for name, role in (("ada", "admin"), ("sam", "support"), ("rita", "readonly")):
        create_operator(db=container.db, clock=clock, name=name, role=role, password=PASSWORD)
    with serve(container) as base:
        world = Console(base, container, clock)
        stripe_ids = []
        for number, (status, name) in enumerate(
            [
                ("active", "Acme Inc"),
                ("past_due", "Globex"),
                ("trialing", "Initech"),
                ("active", "Umbrella"),
                ("canceled", "Hooli"),
            ]
        ):
            cus_id = world.customer(f"org-{number}", name)
            stripe_ids.append(cus_id)
            world.subscribe(
                cus_id, status, trial_end=T0 + 14 * 86_400 if status == "trialing" else None
            )
        # Last month's charges: two by card, one by ACH debit (the fees page).
        for number, amount, method in (
            (0, 12_000, "card"),
            (1, 2_900, "card"),
            (3, 90_000, "us_bank_account"),
        ):
            charge = charge_obj(f"ch_{secrets.token_hex(6)}", stripe_ids[number], amount=amount)
            charge["created"] = int(NOW.timestamp()) - 86_400
            charge["payment_method_details"] = {"type": method}
            world.deliver(event_obj("charge.succeeded", charge))
        yield world
    container.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("console-chromium")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    opened = browser.new_page()
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        opened.close()


def _sign_in(page: Any, url: str, name: str) -> None:
    page.goto(f"{url}/console")
    assert page.url.endswith("/console/sign-in")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url == f"{url}/console", page.locator("main").inner_text()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


WIDEST = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + e.textContent.slice(0, 40))"""


def _no_horizontal_scroll(page: Any, width: int) -> None:
    wide = page.evaluate(WIDEST)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, (page.url, wide)


def test_sign_in_and_find_a_past_due_customer_from_the_overview(desk: Console, page: Any) -> None:
    _sign_in(page, desk.url, "ada")
    assert page.get_by_role("heading", name="Overview").is_visible()
    _shot(page, "overview")
    page.get_by_role("link", name="past due 1").click()
    page.wait_for_url("**/console/customers?status=past_due")
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "Globex" in rows.first.inner_text()
    _shot(page, "customers")
    page.get_by_role("link", name="Globex").click()
    assert page.get_by_role("heading", name="Globex").is_visible()
    assert "past due" in page.locator("main").inner_text()
    _shot(page, "customer")


def test_replay_a_failed_webhook_and_see_it_succeed(desk: Console, page: Any) -> None:
    cus_id = desk.customer("late", "Late Co")
    event = event_obj("customer.subscription.created", subscription_obj("sub_late", cus_id))
    desk.rename("subscription_items", "subscription_items_away")
    try:
        assert desk.deliver(event) == 500
    finally:
        desk.rename("subscription_items_away", "subscription_items")
    _sign_in(page, desk.url, "sam")
    page.get_by_role("link", name="Webhook failures 1").click()
    page.get_by_role("link", name="customer.subscription.created").click()
    assert page.locator("#event-status").inner_text() == "failed"
    _shot(page, "webhook")
    page.get_by_text("Replay", exact=True).click()
    page.get_by_role("button", name="Confirm replay").click()
    page.wait_for_url(f"**/console/webhooks/{event['id']}?done=replayed")
    assert page.locator("#event-status").inner_text() == "succeeded"
    page.goto(f"{desk.url}/console/customers/late")
    assert "active" in page.locator("main").inner_text()


def test_grant_credits_and_see_the_ledger_and_the_timeline(desk: Console, page: Any) -> None:
    _sign_in(page, desk.url, "sam")
    page.goto(f"{desk.url}/console/customers/org-0")
    page.get_by_text("Grant credits", exact=True).click()
    page.get_by_label("Credits", exact=True).fill("500")
    page.get_by_label("Reason").fill("sorry for the outage")
    page.get_by_role("button", name="Confirm grant").click()
    page.wait_for_url("**/console/customers/org-0?done=credits")
    ledger = page.locator("section", has=page.get_by_role("heading", name="Credits ledger"))
    assert "+500" in ledger.inner_text() and "sorry for the outage" in ledger.inner_text()
    timeline = page.locator("section", has=page.get_by_role("heading", name="Timeline"))
    granted = timeline.locator("li", has_text="grant_credits").inner_text()
    assert "operator:sam" in granted
    _shot(page, "customer-credits")


def test_a_readonly_operator_cannot_act(desk: Console, page: Any) -> None:
    _sign_in(page, desk.url, "rita")
    page.goto(f"{desk.url}/console/customers/org-1")
    assert page.get_by_text("can look but not act").is_visible()
    assert page.locator("form[action*='/actions/']").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{desk.url}/console/customers/org-1/actions/grant-credits",
        form={"csrf_token": token, "amount": "5", "key": "x"},
    )
    assert answer.status == 403
    page.goto(f"{desk.url}/console/webhooks?status=failed")
    assert page.get_by_text("Replay all failed").count() == 0


def test_a_form_without_its_csrf_token_is_refused(desk: Console, page: Any) -> None:
    _sign_in(page, desk.url, "ada")
    page.goto(f"{desk.url}/console/customers/org-3")
    page.get_by_text("Grant credits", exact=True).click()
    page.evaluate(
        "document.querySelectorAll(\"form[action$='grant-credits'] input[name=csrf_token]\")"
        ".forEach(input => input.remove())"
    )
    page.get_by_label("Credits", exact=True).fill("100")
    page.get_by_role("button", name="Confirm grant").click()
    assert page.get_by_role("heading", name="Refused").is_visible()
    page.goto(f"{desk.url}/console/customers/org-3")
    assert "No credits yet." in page.locator("main").inner_text()


def test_the_console_fits_1280_and_375_pixels(desk: Console, page: Any) -> None:
    _sign_in(page, desk.url, "ada")
    paths = [
        "/console",
        "/console/customers",
        "/console/customers/org-1",
        "/console/webhooks",
        "/console/outbox",
        "/console/reconciliation",
        "/console/catalog",
        "/console/api-keys",
        "/console/fees",
        "/console/operators",
    ]
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        for path in paths:
            page.goto(f"{desk.url}{path}")
            _no_horizontal_scroll(page, width)
    page.set_viewport_size({"width": 375, "height": 900})
    page.goto(f"{desk.url}/console")
    _shot(page, "overview-375")
    page.goto(f"{desk.url}/console/customers/org-1")
    _shot(page, "customer-375")
    page.set_viewport_size({"width": 1280, "height": 900})
    for path, name in (
        ("/console/fees", "fees"),
        ("/console/outbox", "outbox"),
        ("/console/catalog", "catalog"),
    ):
        page.goto(f"{desk.url}{path}")
        _shot(page, name)


def test_an_admin_adds_an_operator_who_then_sets_their_own_password(
    desk: Console, page: Any
) -> None:
    _sign_in(page, desk.url, "ada")
    page.get_by_role("link", name="Operators").click()
    page.get_by_text("Add an operator", exact=True).click()
    page.get_by_label("Name").fill("Grace")
    page.get_by_label("support").check()
    page.get_by_role("button", name="Confirm add").click()
    given = page.locator("#new-password").inner_text()
    assert len(given) >= 12
    assert page.get_by_role("combobox", name="Role of grace").input_value() == "support"
    _shot(page, "operators")
    page.set_viewport_size({"width": 375, "height": 900})
    _no_horizontal_scroll(page, 375)
    _shot(page, "operators-375")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.context.clear_cookies()
    new = "grace's own long passphrase"
    for password in (given, new):
        page.goto(f"{desk.url}/console/sign-in")
        page.get_by_label("Name").fill("grace")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{desk.url}/console")
        assert "grace" in page.locator(".who").inner_text()
        if password == new:
            break
        page.goto(f"{desk.url}/console/operators")
        assert page.get_by_text("Add an operator").count() == 0  # support: no admin forms
        page.get_by_label("Current password").fill(given)
        page.get_by_label("New password", exact=True).fill(new)
        page.get_by_label("New password again").fill(new)
        page.get_by_role("button", name="Change password").click()
        page.wait_for_url("**/console/sign-in?done=password")
        assert page.get_by_text("Your password was changed").is_visible()


def test_an_email_reads_as_its_customer_reads_it(desk: Console, page: Any) -> None:
    from tollgate.notify.samples import sample_facts
    from tollgate.services.outbox import queue_email

    facts = sample_facts("payment_failed_soft", desk.container.catalog, NOW)
    with desk.container.db.engine.begin() as connection:
        queue_email(
            connection,
            customer_id="org-1",
            template="payment_failed_soft",
            cause="browser-email",
            facts=facts,
            now=NOW,
        )
    _sign_in(page, desk.url, "rita")
    page.goto(f"{desk.url}/console/outbox?kind=email")
    page.get_by_role("link", name="payment_failed_soft").first.click()
    page.wait_for_url("**/console/outbox/email_*")
    frame = page.locator("iframe#mail-frame")
    assert frame.get_attribute("sandbox") == ""
    assert frame.get_attribute("srcdoc").startswith("<!doctype html>")
    body = page.frame_locator("iframe#mail-frame").locator("body")
    assert "Globex" in body.inner_text()  # the customer's name, as the email greets it
    # The email's own inline styles apply inside the frame (the page's CSP lets them).
    assert body.evaluate("b => getComputedStyle(b).maxWidth") == "560px"
    text = page.locator("section", has=page.get_by_role("heading", name="Its text part"))
    assert "Globex" in text.inner_text()
    _shot(page, "email")
    page.set_viewport_size({"width": 375, "height": 900})
    _no_horizontal_scroll(page, 375)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_an_admin_heals_the_last_7_days_from_the_reconciliation_page(
    desk: Console, page: Any
) -> None:
    _sign_in(page, desk.url, "ada")
    page.goto(f"{desk.url}/console/reconciliation")
    page.get_by_text("Reconcile and heal now", exact=True).click()
    page.get_by_label("7 days").check()
    _shot(page, "reconciliation")
    page.get_by_role("button", name="Confirm reconcile").click()
    page.wait_for_url("**/console/reconciliation/*?done=healed")
    assert page.get_by_role("status").inner_text().startswith("Reconciliation ran")
    window = page.locator("dl.facts dd").first.inner_text()
    assert window.startswith((NOW - timedelta(days=7)).strftime("%Y-%m-%d %H:%M"))
    # The hand-made subscriptions are unknown to the simulator: each drift can be checked again
    # alone, as a run of its own that names the object.
    rows = page.locator("tbody tr")
    assert rows.count() >= 1 and "unknown to stripe" in rows.first.inner_text()
    object_id = rows.first.locator("code").inner_text()
    page.get_by_role("button", name=f"Check {object_id} against Stripe again").click()
    page.wait_for_url("**/console/reconciliation/*?done=rechecked")
    assert page.get_by_role("status").inner_text().startswith("The object was compared")
    assert page.locator("dl.facts dd").first.inner_text().startswith(object_id)
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and object_id in rows.first.inner_text()
    # Each side as the CLI prints it: key=value pairs.
    assert "status=" in rows.first.inner_text() and "{" not in rows.first.inner_text()
    _shot(page, "reconciliation-recheck")
    page.set_viewport_size({"width": 375, "height": 900})
    _no_horizontal_scroll(page, 375)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{desk.url}/console/reconciliation")
    assert object_id in page.locator("tbody tr").first.inner_text()


def test_a_support_operator_cannot_check_a_drift_again(desk: Console, page: Any) -> None:
    from tollgate.services.reconcile import run_reconcile

    report = run_reconcile(desk.container, since=NOW - timedelta(days=7), trigger="cli")
    assert report.drifts >= 1
    _sign_in(page, desk.url, "sam")
    page.goto(f"{desk.url}/console/reconciliation/{report.run_id}")
    assert page.locator("tbody tr").count() == report.drifts
    assert page.locator("button", has_text="Check again").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    with desk.container.db.engine.connect() as connection:
        before = connection.execute(sa.text("SELECT count(*) FROM reconciliation_runs"))
        before = before.scalar_one()
    answer = page.request.post(
        f"{desk.url}/console/reconciliation/recheck",
        form={"csrf_token": token, "object_id": "sub_123"},
    )
    assert answer.status == 403
    with desk.container.db.engine.connect() as connection:
        after = connection.execute(sa.text("SELECT count(*) FROM reconciliation_runs"))
        assert after.scalar_one() == before
    # An admin sees the button on each drift.
    page.context.clear_cookies()
    _sign_in(page, desk.url, "ada")
    page.goto(f"{desk.url}/console/reconciliation/{report.run_id}")
    assert page.locator("button", has_text="Check again").count() == report.drifts
