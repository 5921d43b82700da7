"""Issue 20 on the customer's billing page, in a real headless Chromium: a grandfathered Pro v1
customer sees its version, its coupon, the coupon's discount on the next invoice, and buys and
removes an add-on (each confirmed) that raises its runs allowance. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from tests.e2e.conftest import DAY, World
from tests.e2e.test_addons import ADDONS, features
from tests.e2e.test_billing_page_browser import (  # noqa: F401 (fixtures)
    _link,
    _reload_until,
    browser,
    hosts,
    page,
    pytestmark,
    screenshots,
)
from tests.e2e.test_coupons import COUPONS
from tests.e2e.test_plan_versions import EXAMPLE, dearer_catalog, paying_customer, sync
from tollgate.db.models import AuditLog

T0 = 1_790_000_000
MINUS = "\u2212"


def _with_extras(path: Path) -> Path:
    data = yaml.safe_load((path if path.exists() else EXAMPLE).read_text())
    data.update(coupons=COUPONS, addons=ADDONS)
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_grandfathered_customer_sees_its_version_its_discount_and_buys_an_add_on(
    make_world: Callable[..., World],
    page: Any,  # noqa: F811 (the billing page tests' fixture)
    screenshots: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = make_world(
        TOLLGATE_SECRET_KEY="browser-tests-secret-" + "k" * 16, TOLLGATE_CATALOG_REFRESH=0.1
    )
    first = tmp_path / "v1"
    first.mkdir()
    sync(world, _with_extras(first / "catalog.yaml"))
    world.container.live_catalog.refresh()
    clock = world.test_clock(T0)
    paying_customer(world, "org_grand", clock)
    # Pro rises to $39 (v2); this customer keeps v1 until moved.
    sync(world, _with_extras(dearer_catalog(tmp_path)))
    world.container.live_catalog.refresh()
    world.call("POST", "/v1/customers/org_grand/discounts", 201, json={"coupon": "launch20"})
    world.settle()

    page.goto(_link(world, "org_grand"))
    _reload_until(page, world, "#plan", "Launch offer")
    assert page.inner_text("#plan-name") == "Pro · v1 — price kept until you move"
    assert "Launch offer 20 % off, forever" in page.inner_text("#discounts")
    # The add-ons Pro allows, with their prices; buying one is confirmed first.
    assert "$5.00 a month each · +10,000 runs" in page.inner_text("#addon-extra_runs")
    assert page.inner_text("#addon-extra_runs-held") == "Not added"
    assert not page.is_visible("#addon-extra_runs-confirm")
    page.focus("#addon-extra_runs-add")
    page.keyboard.press("Enter")  # the confirmation opens from the keyboard
    assert "Add 10,000 more runs ($5.00 a month each)" in page.inner_text("#addon-extra_runs")
    page.click("#addon-extra_runs-confirm")
    page.wait_for_url("**/billing?done=addon")
    _reload_until(page, world, "#addon-extra_runs-held", "You have 1")
    assert features(world, "org_grand")["runs"]["included"] == 110_000  # v1's 100,000 + 10,000
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "billing-page-pricing.png"), full_page=True)

    # The renewal invoice carries the coupon's discount, on the page and in the JSON.
    world.advance(clock, T0 + 30 * DAY + 7200)
    _reload_until(page, world, "#invoices", f"Launch offer {MINUS}$")
    invoice = world.call("GET", "/v1/customers/org_grand/invoices")["data"][0]
    discount = invoice["discounts"][0]
    assert (discount["coupon"], discount["name"]) == ("launch20", "Launch offer")
    off = discount["amount"]["amount"]
    assert invoice["total"]["amount"] == invoice["subtotal"]["amount"] - off
    shown = f"Launch offer {MINUS}${off / 100:.2f}"
    assert shown in page.inner_text("#invoices")

    # Removing the add-on is confirmed too, and the allowance drops back.
    page.click("#addon-extra_runs-remove")
    page.click("#addon-extra_runs-remove-confirm")
    page.wait_for_url("**/billing?done=addon")
    _reload_until(page, world, "#addon-extra_runs-held", "Not added")
    assert features(world, "org_grand")["runs"]["included"] == 100_000
    with world.db.transaction() as session:
        actors = session.execute(
            sa.select(AuditLog.actor, AuditLog.object_type).where(
                AuditLog.object_id == "org_grand/extra_runs"
            )
        ).all()
    assert actors == [("customer:org_grand", "addon")] * 2

    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(screenshots / "billing-page-pricing-375.png"), full_page=True)
