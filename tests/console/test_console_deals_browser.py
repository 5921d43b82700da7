"""Issue 20's deals in the console, in a real headless Chromium: support gives an active Pro
customer an enterprise deal's 5,000,000 runs until a date from the customer page (keyboard and
labels), sees entitlements follow, removes it, at 1280 px and 375 px."""

from __future__ import annotations

from typing import Any

from tests.console.test_console_browser import (  # noqa: F401 (fixtures)
    Console,
    _no_horizontal_scroll,
    _shot,
    _sign_in,
    browser,
    desk,
    page,
    pytestmark,
)


def test_support_gives_a_deal_from_the_customer_page_and_takes_it_back(
    desk: Console,  # noqa: F811 (the console browser tests' fixture)
    page: Any,  # noqa: F811
) -> None:
    _sign_in(page, desk.url, "sam")
    page.goto(f"{desk.url}/console/customers/org-0")
    deals = page.locator("#deals")
    assert "No override: the plan decides." in deals.inner_text()
    deals.get_by_text("Override a feature", exact=True).click()
    page.get_by_label("Feature", exact=True).select_option("runs")
    page.get_by_label("Limit").fill("5000000")
    page.get_by_label("Ends (optional)").fill("2099-01-01")
    page.get_by_role("button", name="Confirm override").click()
    page.wait_for_url("**/console/customers/org-0?done=override")
    assert "5,000,000" in page.locator("#overrides").inner_text()
    entitlements = page.locator("section", has=page.get_by_role("heading", name="Entitlements"))
    assert "5,000,000 included" in entitlements.inner_text()
    _shot(page, "customer-deals")
    page.set_viewport_size({"width": 375, "height": 900})
    page.reload()
    _no_horizontal_scroll(page, 375)
    _shot(page, "customer-deals-375")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Remove the runs override").click()
    page.wait_for_url("**/console/customers/org-0?done=override-removed")
    assert "No override: the plan decides." in page.locator("#deals").inner_text()
    assert "5,000,000" not in entitlements.inner_text()
