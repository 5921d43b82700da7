"""Monthly credits on an annual plan (`credits: {amount, every: month}`), granted as each month
of the year begins, once, each expiring when the next month begins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import World
from tollgate.clock import FrozenClock
from tollgate.jobs.credits import grant_period_credits
from tollgate.jobs.usage_controls import drip_plan_credits
from tollgate.services.credit_drip import drip_monthly_credits

EXAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "catalog.example.yaml"
T0 = 1_790_000_000


def drip_catalog(tmp_path: Path, **pro: object) -> str:
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["pro"].update(pro or {"credits": {"amount": 500, "every": "month"}})
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


def paying_for_pro(world: World, interval: str) -> World:
    """Return `world` with acme (on a test clock) subscribed to pro, paid through Checkout."""
    world.create_customer("acme", test_clock=world.test_clock(T0))
    session = world.checkout("acme", plan="pro", interval=interval, trial_days=0)
    assert world.pay(session["url"]).status_code == 303
    world.settle()
    return world


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_annual_plan_gets_its_credits_month_by_month(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = paying_for_pro(make_world(TOLLGATE_CATALOG=drip_catalog(tmp_path)), "year")
    assert drip_plan_credits(world.container) == 1
    assert drip_plan_credits(world.container) == 0  # once a month
    assert world.call("GET", "/v1/customers/acme/credits")["balance"] == 500

    # The month in progress is granted (those already over when first seen are not, late).
    app = world.container
    later = FrozenClock(app.clock.now() + timedelta(days=31))  # the next month has begun
    assert drip_monthly_credits(db=app.db, catalog=app.catalog, clock=later) == 1
    assert drip_monthly_credits(db=app.db, catalog=app.catalog, clock=later) == 0
    body = world.call("GET", "/v1/customers/acme/credits")
    reasons = [entry["reason"] for entry in body["entries"] if entry["kind"] == "grant"]
    assert len(reasons) == 2 and all("credits for the month from" in r for r in reasons)
    assert sum(entry["amount"] for entry in body["entries"] if entry["kind"] == "grant") == 1000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_plan_grants_its_on_start_credits_once_a_period(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    catalog = drip_catalog(tmp_path, on_start_credits=300)
    world = paying_for_pro(make_world(TOLLGATE_CATALOG=catalog), "month")
    assert grant_period_credits(world.container) == 1
    assert grant_period_credits(world.container) == 0  # once a period
    assert world.call("GET", "/v1/customers/acme/credits")["balance"] == 300
