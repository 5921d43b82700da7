"""Issue 20: add-ons sold as their own subscription items raise what the customer may use.

On SQLite and PostgreSQL, Tollgate over HTTP with stripesim's webhooks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import World
from tests.e2e.test_coupons import catalog_with
from tests.e2e.test_plan_versions import paying_customer, sync

T0 = 1_790_000_000
ADDONS = {
    "extra_runs": {
        "name": "10,000 more runs",
        "prices": [{"interval": "month", "currency": "usd", "amount": "5.00"}],
        "grants": {"runs": 10000},
        "plans": ["pro"],
        "max_quantity": 20,
    },
    "sso_pack": {
        "name": "Single sign-on",
        "prices": [{"interval": "month", "currency": "usd", "amount": "49.00"}],
        "grants": {"sso": True},
    },
}


def features(world: World, customer_id: str) -> dict[str, Any]:
    return dict(world.call("GET", f"/v1/customers/{customer_id}/entitlements")["features"])


def test_an_add_on_raises_the_limit_and_adds_a_feature(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    lines = [change.describe() for change in sync(world, catalog_with(tmp_path, addons=ADDONS))]
    assert "+ product tg_addon_extra_runs (10,000 more runs)" in lines
    assert "+ price tollgate_addon_extra_runs_month_usd: $5.00/month" in lines
    world.container.live_catalog.refresh()
    paying_customer(world, "grower", world.test_clock(T0))
    assert features(world, "grower")["runs"]["included"] == 100_000

    bought = world.call("PUT", "/v1/customers/grower/addons/extra_runs", json={"quantity": 2})
    assert bought["quantity"] == 2
    world.call("PUT", "/v1/customers/grower/addons/sso_pack", json={"quantity": 1})
    world.settle()
    granted = features(world, "grower")
    assert granted["runs"]["included"] == 120_000
    assert granted["sso"]["enabled"] is True
    subscription_id = world.subscription("grower")["stripe_subscription_id"]
    items = world.stripe.v1.subscriptions.retrieve(subscription_id)["items"].data
    held = {i.price.lookup_key: i.to_dict().get("quantity") for i in items}
    assert held["tollgate_addon_extra_runs_month_usd"] == 2
    assert held["tollgate_addon_sso_pack_month_usd"] == 1
    assert held["tollgate_pro_month_usd"] == 1
    assert world.subscription("grower")["plan"] == "pro"  # the add-ons are not the plan

    too_many = world.call(
        "PUT", "/v1/customers/grower/addons/extra_runs", 400, json={"quantity": 21}
    )
    assert too_many["error"]["param"] == "quantity"
    unknown = world.call("PUT", "/v1/customers/grower/addons/nope", 400, json={"quantity": 1})
    assert "add-ons are: extra_runs, sso_pack" in unknown["error"]["message"]

    world.call("PUT", "/v1/customers/grower/addons/extra_runs", json={"quantity": 0})
    world.settle()
    assert features(world, "grower")["runs"]["included"] == 100_000
