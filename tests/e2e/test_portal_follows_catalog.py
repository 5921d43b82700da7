"""Issue 20: the Customer Portal follows the catalog, and a plan switch made there in a real
browser reaches Tollgate's mirror and entitlements. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import World
from tests.e2e.test_plan_versions import EXAMPLE, paying_customer, sync, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
T0 = 1_790_000_000

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
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield context
        finally:
            context.close()


def test_a_plan_switch_in_the_hosted_portal_changes_entitlements(
    world: World, browser: Any, tmp_path: Path
) -> None:
    sync(world, EXAMPLE)  # plan versions recorded: the Portal offers the current ones
    world.container.live_catalog.refresh()
    paying_customer(world, "switcher", world.test_clock(T0))
    granted = world.call("GET", "/v1/customers/switcher/entitlements")["features"]
    assert granted["runs"]["included"] == 100_000

    url = world.call(
        "POST", "/v1/customers/switcher/portal", json={"return_url": "https://app.example/b"}
    )["url"]
    configs = world.stripe.v1.billing_portal.configurations.list().data
    ours = [c for c in configs if c.metadata.to_dict().get("tollgate_portal") == "true"]
    assert len(ours) == 1
    update = ours[0].features.subscription_update
    assert sorted(p.product for p in update.products) == ["tg_plan_pro", "tg_plan_team"]
    assert ours[0].features.subscription_cancel.cancellation_reason.enabled is True
    bounds = {
        p.product: p.adjustable_quantity.to_dict() for p in update.products
    }  # seats within each per-seat plan's min and max; Pro has no seats to choose
    assert bounds["tg_plan_team"] == {"enabled": True, "minimum": 2, "maximum": 200}
    assert bounds["tg_plan_pro"]["enabled"] is False
    assert update.proration_behavior == world.container.settings.immediate_proration_behavior
    # Opening it again reuses the configuration (nothing in the catalog changed).
    world.call("POST", "/v1/customers/switcher/portal", json={"return_url": "https://a.example/"})
    assert len(world.stripe.v1.billing_portal.configurations.list().data) == len(configs)

    team = world.stripe.v1.prices.list(params={"lookup_keys": ["tollgate_team_month_usd"]}).data[0]
    subscription_id = world.subscription("switcher")["stripe_subscription_id"]
    page = browser.new_page()
    page.set_viewport_size({"width": 375, "height": 812})
    try:
        page.goto(url)
        page.select_option(f"#price-{subscription_id}", team.id)
        page.fill(f"#quantity-{subscription_id}", "1")  # below Team's minimum of 2 seats
        page.click(f"#change-plan-{subscription_id}")
        assert "Choose a quantity from 2 to 200." in page.inner_text("body")
        page.select_option(f"#price-{subscription_id}", team.id)
        page.fill(f"#quantity-{subscription_id}", "2")
        page.click(f"#change-plan-{subscription_id}")
        page.wait_for_selector("#notice")
        page.screenshot(path=str(tmp_path / "portal-switched.png"), full_page=True)
        world.settle()
        wait_for(lambda: world.customer("switcher")["plan"] == "team")
        # Canceling asks for a reason and a confirmation; it ends at the period's end.
        page.click(f"#cancel-open-{subscription_id}")
        page.select_option(f"#reason-{subscription_id}", "too_expensive")
        page.click(f"#cancel-{subscription_id}")
        page.wait_for_selector("#notice")
    finally:
        page.close()
    world.settle()
    wait_for(lambda: world.customer("switcher")["status"] == "canceling")
    canceled = world.stripe.v1.subscriptions.retrieve(subscription_id)
    assert canceled.cancellation_details.feedback == "too_expensive"
    granted = world.call("GET", "/v1/customers/switcher/entitlements")["features"]
    assert granted["runs"]["included"] == 250_000
    assert world.subscription("switcher")["seats"] == 2
