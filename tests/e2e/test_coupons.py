"""Issue 20: coupons and promotion codes in the catalog, synced to Stripe, applied to customers.

On SQLite and PostgreSQL, Tollgate over HTTP with stripesim's webhooks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import DAY, World
from tests.e2e.test_plan_versions import EXAMPLE, paying_customer, sync
from tollgate.catalog_file import load_catalog_file
from tollgate.domain.errors import CatalogError

T0 = 1_790_000_000
COUPONS = {
    "launch20": {
        "name": "Launch offer",
        "percent_off": 20,
        "duration": "forever",
        "plans": ["pro"],
        "promotion_codes": ["LAUNCH20"],
    },
    "ten_off": {
        "name": "Ten off",
        "amount_off": {"usd": "10.00", "eur": "9.00"},
        "duration": "repeating",
        "duration_in_months": 3,
        "max_redemptions": 50,
        "redeem_by": "2027-12-31",
        "plans": ["team"],
    },
}


def catalog_with(tmp_path: Path, **extra: Any) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(extra)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_catalog_coupon_is_synced_and_its_discount_shows_on_the_next_invoice(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    path = catalog_with(tmp_path, coupons=COUPONS)
    lines = [change.describe() for change in sync(world, path)]
    assert "+ coupon tollgate_launch20" in lines
    assert "+ coupon tollgate_ten_off" in lines  # one coupon for both currencies
    assert "+ promotion code LAUNCH20 for coupon tollgate_launch20" in lines
    assert sync(world, path) == []  # a second sync changes nothing
    launch = world.stripe.v1.coupons.retrieve("tollgate_launch20")
    assert (launch.percent_off, launch.duration) == (20, "forever")
    ten = world.stripe.v1.coupons.retrieve(
        "tollgate_ten_off", params={"expand": ["currency_options"]}
    )
    assert (ten.amount_off, ten.currency, ten.duration_in_months) == (1000, "usd", 3)
    assert ten.currency_options["eur"].amount_off == 900
    assert (ten.max_redemptions, ten.redeem_by) == (50, 1830297599)  # the end of 2027-12-31
    world.container.live_catalog.refresh()

    clock = world.test_clock(T0)
    world.create_customer("early", test_clock=clock)
    session = world.checkout("early", plan="pro", interval="month", trial_days=0)
    stripe_session = world.stripe.v1.checkout.sessions.retrieve(session["session_id"])
    assert stripe_session.allow_promotion_codes is True  # Pro has a code in the catalog
    assert world.pay(session["url"]).status_code == 303
    world.settle()

    refused = world.call("POST", "/v1/customers/early/discounts", 400, json={"coupon": "ten_off"})
    assert refused["error"]["param"] == "coupon"  # ten_off is for Team only
    unknown = world.call("POST", "/v1/customers/early/discounts", 400, json={"coupon": "nope"})
    assert "coupons are: launch20, ten_off" in unknown["error"]["message"]
    given = world.call(
        "POST", "/v1/customers/early/discounts", 201, json={"promotion_code": "launch20"}
    )
    assert given["coupon"] == "launch20"
    world.settle()
    shown = world.subscription("early")["discounts"]
    assert [(d["coupon"], d["name"], d["percent_off"], d["duration"]) for d in shown] == [
        ("launch20", "Launch offer", 20, "forever")
    ]

    world.advance(clock, T0 + 30 * DAY + 7200)
    customer = world.customer("early")
    renewal = [
        invoice
        for invoice in world.invoices(customer["stripe_customer_id"])
        if invoice.billing_reason == "subscription_cycle"
    ]
    assert [invoice.total for invoice in renewal] == [2320]  # $29 less 20 %
    mirrored = world.call("GET", "/v1/customers/early/invoices")["data"][0]
    assert mirrored["subtotal"] == {"amount": 2900, "currency": "usd"}
    assert mirrored["total"] == {"amount": 2320, "currency": "usd"}
    assert mirrored["total_discount"] == {"amount": 580, "currency": "usd"}
    assert [(d["coupon"], d["name"], d["amount"]["amount"]) for d in mirrored["discounts"]] == [
        ("launch20", "Launch offer", 580)
    ]


def test_an_amount_coupon_takes_its_euro_amount_off_a_euro_subscription(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    coupons = {"ten_off": {**COUPONS["ten_off"], "promotion_codes": ["TENOFF"]}}
    sync(world, catalog_with(tmp_path, coupons=coupons))
    world.container.live_catalog.refresh()
    clock = world.test_clock(T0)
    world.create_customer("lyon", currency="eur", test_clock=clock)
    session = world.checkout("lyon", plan="team", interval="month", seats=2, trial_days=0)
    assert world.pay(session["url"]).status_code == 303
    world.settle()
    assert (world.subscription("lyon")["currency"], world.subscription("lyon")["seats"]) == (
        "eur",
        2,
    )
    # The code names the one coupon, whose euro amount comes from its currency_options.
    world.call("POST", "/v1/customers/lyon/discounts", 201, json={"promotion_code": "TENOFF"})
    world.settle()
    (shown,) = world.subscription("lyon")["discounts"]
    assert shown["amount_off"] == {"amount": 900, "currency": "eur"}
    assert (shown["coupon"], shown["duration"], shown["duration_in_months"]) == (
        "ten_off",
        "repeating",
        3,
    )
    assert shown["end"] is not None

    world.advance(clock, T0 + 30 * DAY + 7200)
    renewal = world.call("GET", "/v1/customers/lyon/invoices")["data"][0]
    assert renewal["subtotal"] == {"amount": 2200, "currency": "eur"}  # 2 seats at 11.00
    assert renewal["total"] == {"amount": 1300, "currency": "eur"}  # less 9.00
    assert [(d["coupon"], d["amount"]["amount"]) for d in renewal["discounts"]] == [
        ("ten_off", 900)
    ]


def test_a_code_typed_at_checkout_discounts_the_subscription_tollgate_mirrors(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    sync(world, catalog_with(tmp_path, coupons=COUPONS))
    world.container.live_catalog.refresh()
    world.create_customer("buyer", test_clock=world.test_clock(T0))
    session = world.checkout("buyer", plan="pro", interval="month", trial_days=0)
    applied = httpx.post(session["url"], data={"apply_code": "1", "promotion_code": "launch20"})
    assert applied.status_code == 200 and "LAUNCH20" in applied.text
    assert world.pay(session["url"]).status_code == 303
    world.settle()
    (shown,) = world.subscription("buyer")["discounts"]
    assert (shown["coupon"], shown["percent_off"]) == ("launch20", 20)
    assert shown["promotion_code"] is not None
    first = world.call("GET", "/v1/customers/buyer/invoices")["data"][0]
    assert first["total"] == {"amount": 2320, "currency": "usd"}
    assert first["discounts"][0]["name"] == "Launch offer"


def test_an_amount_coupon_in_a_currency_no_plan_of_it_is_priced_in_is_refused(
    tmp_path: Path,
) -> None:
    coupon = {"amount_off": {"usd": "10.00", "gbp": "8.00"}, "plans": ["pro"]}
    path = catalog_with(tmp_path, coupons={"bad": coupon})
    with pytest.raises(CatalogError) as error:
        load_catalog_file(path)
    assert [str(problem) for problem in error.value.problems] == [
        "coupons.bad.amount_off.gbp: no plan it is for has a price in gbp"
    ]


@pytest.mark.parametrize(
    ("coupon", "problem"),
    [
        ({"percent_off": 150}, "coupons.bad.percent_off: must be more than 0 and at most 100"),
        ({"percent_off": 10, "amount_off": "1.00"}, "give one of percent_off or amount_off"),
        ({"percent_off": 10, "duration": "repeating"}, "coupons.bad.duration_in_months"),
        ({"percent_off": 10, "plans": ["gold"]}, "coupons.bad.plans: unknown plan 'gold'"),
        ({"percent_off": 10, "promotion_codes": ["NO SPACES"]}, "coupons.bad.promotion_codes"),
        ({"percent_off": 10, "colour": "red"}, "coupons.bad.colour: unknown key"),
        ({"amount_off": {}}, "coupons.bad.amount_off: give an amount in at least one currency"),
        ({"amount_off": {"usd": "-1.00"}}, "coupons.bad.amount_off.usd: amount '-1.00' must not"),
        ({"amount_off": {"usd": "0"}}, "coupons.bad.amount_off.usd: must be more than zero"),
        ({"amount_off": {"dollars": "1.00"}}, "coupons.bad.amount_off"),
    ],
)
def test_a_bad_coupon_is_named_by_its_path(
    tmp_path: Path, coupon: dict[str, Any], problem: str
) -> None:
    path = catalog_with(tmp_path, coupons={"bad": coupon})
    with pytest.raises(CatalogError) as error:
        load_catalog_file(path)
    assert any(problem in str(found) for found in error.value.problems), error.value.problems


def test_plans_without_codes_keep_checkout_closed_to_codes(world: World) -> None:
    sync(world, EXAMPLE)
    clock = world.test_clock(T0)
    paying_customer(world, "plain", clock)
    # The example catalog has no coupons: no code field at Checkout, and nothing to apply.
    answer = world.call("POST", "/v1/customers/plain/discounts", 400, json={"coupon": "x"})
    assert answer["error"]["param"] == "coupon"
