"""The customer's billing page in a real headless Chromium: buy Pro through the simulator's
hosted Checkout, watch usage move the bar and the chart, cancel and resume, and see that a
forged link or an expired JWT shows no data. Every request stays on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import World
from tests.web.jwks import Issuer, serve_issuer
from tollgate.db.models import AuditLog

CHROMIUM = Path("/usr/bin/chromium")
# The README's screenshots are rewritten only when asked (TOLLGATE_UPDATE_SCREENSHOTS=1), so a
# test run leaves the tree clean; otherwise they go to the run's temporary folder.
README_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1100, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    if os.environ.get("TOLLGATE_UPDATE_SCREENSHOTS") == "1":
        return README_SCREENSHOTS
    return tmp_path


@pytest.fixture
def hosts() -> list[str]:
    return []


@pytest.fixture
def page(browser: Any, hosts: list[str]) -> Iterator[Any]:
    browser.clear_cookies()
    opened = browser.new_page()
    opened.set_default_timeout(20_000)
    opened.on(
        "request",
        lambda request: hosts.append(
            # blob: and data: URLs are made in the page itself (ReDoc's worker)
            urlsplit(request.url).hostname or "127.0.0.1"
            if request.url.startswith(("blob:", "data:"))
            else urlsplit(request.url).hostname or request.url
        ),
    )
    try:
        yield opened
    finally:
        opened.close()
        # No request left the machine: no CDN, no font host, no analytics.
        assert hosts and set(hosts) <= {"127.0.0.1"}, sorted(set(hosts))


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as served:
        served.add_rsa("rsa-1")
        yield served


@pytest.fixture
def shop(make_world: Callable[..., World], issuer: Issuer) -> World:
    return make_world(TOLLGATE_SECRET_KEY="browser-tests-secret-" + "k" * 16, **issuer.settings())


def _link(world: World, customer_id: str) -> str:
    return str(world.call("POST", f"/v1/customers/{customer_id}/billing-session")["url"])


def _record(world: World, customer_id: str, runs: int, tag: str) -> None:
    event = {"id": f"{customer_id}-{tag}", "customer": customer_id, "meter": "runs", "value": runs}
    answer = world.call("POST", "/v1/usage", json={"events": [event]})
    assert answer["accepted"] == 1, answer


def _reload_until(page: Any, world: World, selector: str, text: str) -> None:
    for _ in range(40):
        world.settle()
        page.goto(page.url.split("?")[0])
        if text in page.inner_text(selector):
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"{selector} never said {text!r}: {page.inner_text(selector)!r}")


def test_buy_pro_watch_usage_cancel_and_resume(shop: World, page: Any, screenshots: Path) -> None:
    shop.create_customer("org_browser", name="Acme Robotics")
    page.goto(_link(shop, "org_browser"))
    assert page.url.endswith("/billing")
    assert page.inner_text("#plan-name") == "Free"
    # Buy Pro: the preview first, then the simulator's hosted Checkout.
    page.select_option("#plan-select", "pro")
    page.check("input[name=interval][value=month]")
    page.click("#preview")
    assert "14-day free trial" in page.inner_text("#confirm")
    page.click("#confirm-change")
    page.wait_for_selector("#checkout-form")
    if page.locator("#email").count() and not page.input_value("#email"):
        page.fill("#email", "billing@org_browser.example")
    page.click("#submit")
    page.wait_for_url("**/billing?checkout=success")
    _reload_until(page, shop, "#status", "Trial")
    assert page.inner_text("#plan-name") == "Pro"
    assert "trial ends on" in page.inner_text("#status-words")
    # Usage moves the bar (80 % state) and the chart.
    before = page.locator("#meter-runs svg.chart rect.current").count()
    _record(shop, "org_browser", 85_000, "a")
    page.reload()
    meter = page.locator("#meter-runs")
    assert meter.get_attribute("data-state") == "warn"
    assert "85,000 runs" in meter.inner_text() and "80 % or more used" in meter.inner_text()
    fill = float(page.locator("#meter-runs svg.bar rect.fill").get_attribute("width") or 0)
    assert fill == 85.0
    page.click("#meter-runs summary")
    assert page.locator("#meter-runs svg.chart rect.current").count() > before  # the chart moved
    heights = page.eval_on_selector_all(
        "#meter-runs svg.chart rect.current", "rects => rects.map(r => +r.getAttribute('height'))"
    )
    assert max(heights) > 0
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "billing-page.png"), full_page=True)
    # Cancel at period end, with a confirmation (opened from the keyboard), then resume.
    page.focus("#cancel-open")
    page.keyboard.press("Enter")
    page.focus("#cancel-confirm")
    page.keyboard.press("Enter")
    page.wait_for_url("**/billing?done=canceled")
    _reload_until(page, shop, "#status", "Canceling")
    assert "ends on" in page.inner_text("#status-words")
    page.click("#resume")
    page.wait_for_url("**/billing?done=resumed")
    _reload_until(page, shop, "#status", "Trial")
    with shop.db.transaction() as session:
        done = session.execute(
            sa.select(AuditLog.actor, AuditLog.action).where(AuditLog.object_id == "org_browser")
        ).all()
    for action in ("checkout", "cancel", "resume"):
        assert ("customer:org_browser", action) in done
    # The pricing table marks the plan.
    page.goto(page.url.split("/billing")[0] + "/pricing")
    assert "Current plan" in page.inner_text("#plan-card-pro")
    page.screenshot(path=str(screenshots / "pricing-table.png"), full_page=True)


def test_the_page_fits_375_px_without_horizontal_scroll(
    shop: World, page: Any, screenshots: Path
) -> None:
    shop.create_customer("org_narrow", name="A Very Long Organisation Name For Narrow Screens")
    _record(shop, "org_narrow", 900, "narrow")
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(_link(shop, "org_narrow"))
    page.click("#meter-runs summary")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(screenshots / "billing-page-375.png"), full_page=True)
    # Every field has a label, every image a text, and the cancel confirmation opens by keyboard.
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
             .map(e => e.name)"""
    )
    assert unlabelled == []
    assert page.evaluate("[...document.images].every(i => i.hasAttribute('alt'))")
    page.focus("#plan-select")
    assert page.evaluate("document.activeElement.id") == "plan-select"
    page.goto(page.url.split("/billing")[0] + "/pricing")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_a_forged_link_and_an_expired_jwt_see_no_data(
    shop: World, page: Any, issuer: Issuer
) -> None:
    shop.create_customer("org_secret", name="Secret Org")
    link = _link(shop, "org_secret")
    head, _, token = link.rpartition("/")
    body, _, mac = token.partition(".")
    page.goto(f"{head}/{body}.{mac[:-3]}abc")
    assert "not valid" in page.inner_text("#message-title")
    assert "Secret Org" not in page.content() and "org_secret" not in page.content()
    page.goto(f"{shop.base_url}/billing")
    assert "Secret Org" not in page.content()
    expired = issuer.token("rsa-1", org="org_secret", expires_in=-120)
    answer = page.goto(f"{shop.base_url}/billing/sign-in?token={expired}")
    assert answer is not None and answer.status == 401
    assert "expired" in page.inner_text("#message")
    assert "Secret Org" not in page.content()
    fresh = issuer.token("rsa-1", org="org_secret")
    page.goto(f"{shop.base_url}/billing/sign-in?token={fresh}")
    assert page.url.endswith("/billing") and "Secret Org" in page.content()


def test_docs_and_redoc_render_offline(shop: World, page: Any) -> None:
    page.goto(f"{shop.base_url}/docs")
    page.wait_for_selector(".swagger-ui .information-container")
    assert "Tollgate" in page.inner_text(".swagger-ui .information-container")
    page.goto(f"{shop.base_url}/redoc")
    page.wait_for_selector("redoc h1, .api-info h1", timeout=30_000)
    assert "Tollgate" in page.inner_text("body")
