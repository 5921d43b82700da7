"""The same write that goes through Stripe sent eight times at once, as a client retrying after a
timeout does: no 5xx, a repeat answers as a repeat, and one effect in Tollgate and in Stripe
(one customer, one subscription, one pending change, one refund).

Tollgate served over HTTP with stripesim behind it (tests/e2e/conftest.py's `World`), on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.e2e.conftest import World
from tests.e2e.test_addons import ADDONS
from tests.e2e.test_auto_topup import topup_catalog
from tests.e2e.test_concurrent_requests import at_once
from tests.e2e.test_coupons import COUPONS, catalog_with
from tests.e2e.test_payment_limits import card_customer
from tests.e2e.test_plan_migration import pro_subscribers_and_v2

CHECKOUT = {"success_url": "https://app.example/done", "cancel_url": "https://app.example/back"}


def count(world: World, sql: str) -> int:
    with world.db.engine.connect() as connection:
        return int(connection.execute(sa.text(sql)).scalar_one())


def subscriber(world: World, customer_id: str) -> str:
    """A Pro (monthly) subscriber paying by card; return its Stripe customer id."""
    stripe_id = card_customer(world, customer_id)
    world.put_subscription(customer_id, plan="pro", interval="month", trial_days=0)
    world.settle()
    return stripe_id


def stripe_subscriptions(world: World, stripe_id: str) -> list[Any]:
    listed = world.stripe.v1.subscriptions.list(params={"customer": stripe_id, "status": "all"})
    return list(listed.data)


def test_a_customer_created_at_once_is_one_stripe_customer(world: World) -> None:
    body = {"id": "acme", "email": "billing@acme.example"}
    assert at_once(world.http, "POST", "/v1/customers", body) == [200] * 7 + [201]
    world.settle()
    assert count(world, "SELECT count(*) FROM customers") == 1
    assert world.stripe_count("customer") == 1


def test_a_subscription_put_at_once_is_one_subscription(world: World) -> None:
    stripe_id = card_customer(world, "acme")
    body = {"plan": "pro", "interval": "month", "trial_days": 0}
    assert at_once(world.http, "PUT", "/v1/customers/acme/subscription", body) == [200] * 8
    world.settle()
    assert len(stripe_subscriptions(world, stripe_id)) == 1
    assert len(world.invoices(stripe_id)) == 1


def test_a_plan_change_put_at_once_changes_the_plan_once(world: World) -> None:
    stripe_id = subscriber(world, "acme")
    body = {"plan": "pro", "interval": "year", "proration": "always_invoice"}
    assert at_once(world.http, "PUT", "/v1/customers/acme/subscription", body) == [200] * 8
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    assert subscription["items"].data[0].price.lookup_key == "tollgate_pro_year_usd"
    assert len(world.invoices(stripe_id)) == 2


def test_a_change_at_period_end_put_at_once_is_one_pending_change(world: World) -> None:
    subscriber(world, "acme")
    body = {"plan": "team", "interval": "month", "seats": 2, "at_period_end": True}
    assert at_once(world.http, "PUT", "/v1/customers/acme/subscription", body) == [200] * 8
    pending = "SELECT count(*) FROM plan_changes WHERE status = 'pending'"
    assert count(world, pending) == 1
    assert world.subscription("acme")["pending_change"]["seats"] == 2


def test_two_changes_at_period_end_at_once_leave_one_pending(world: World) -> None:
    subscriber(world, "acme")
    path = "/v1/customers/acme/subscription"
    two = {"plan": "team", "interval": "month", "seats": 2, "at_period_end": True}
    three = {**two, "seats": 3}
    assert at_once(world.http, "PUT", path, two, also=three) == [200] * 8
    pending = "SELECT count(*) FROM plan_changes WHERE status = 'pending'"
    assert count(world, pending) == 1
    assert world.subscription("acme")["pending_change"]["seats"] in (2, 3)


def test_seats_put_at_once_are_set_once(world: World) -> None:
    stripe_id = card_customer(world, "acme")
    world.put_subscription("acme", plan="team", interval="month", seats=2, trial_days=0)
    world.settle()
    body = {"plan": "team", "interval": "month", "seats": 5}
    assert at_once(world.http, "PUT", "/v1/customers/acme/subscription", body) == [200] * 8
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    assert subscription["items"].data[0].quantity == 5


def test_a_cancel_sent_at_once_cancels_once(world: World) -> None:
    stripe_id = subscriber(world, "acme")
    path = "/v1/customers/acme/subscription?at_period_end=true"
    assert at_once(world.http, "DELETE", path, None) == [200] * 8
    assert at_once(world.http, "POST", "/v1/customers/acme/subscription/resume", None) == [200] * 8
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    assert not subscription.cancel_at_period_end
    # Cancel now: a repeat that arrives once the first has ended the subscription finds none to
    # cancel (404), as the same request sent after the first answered does.
    statuses = at_once(world.http, "DELETE", "/v1/customers/acme/subscription", None)
    assert 200 in statuses and set(statuses) <= {200, 404}
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    assert subscription.status == "canceled"
    assert len(world.invoices(stripe_id)) == 1


def test_checkout_and_portal_sessions_asked_at_once_are_one_session(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG=topup_catalog(tmp_path))
    world.create_customer("acme")
    body = {"plan": "pro", "interval": "month", **CHECKOUT}
    assert at_once(world.http, "POST", "/v1/customers/acme/checkout", body) == [200] * 8
    assert world.stripe_count("checkout.session") == 1
    pack = {"pack": "starter", **CHECKOUT}
    assert at_once(world.http, "POST", "/v1/customers/acme/credits/checkout", pack) == [200] * 8
    assert world.stripe_count("checkout.session") == 2
    portal = {"return_url": "https://app.example/billing"}
    assert at_once(world.http, "POST", "/v1/customers/acme/portal", portal) == [200] * 8
    assert world.stripe_count("billing_portal.session") == 1
    assert world.stripe_count("billing_portal.configuration") == 1


def test_a_customer_patched_at_once_has_one_tax_id(world: World) -> None:
    stripe_id = str(world.create_customer("acme")["stripe_customer_id"])
    body = {
        "name": "Acme GmbH",
        "address": {"country": "DE", "postal_code": "10115"},
        "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
    }
    assert at_once(world.http, "PATCH", "/v1/customers/acme", body) == [200] * 8
    world.settle()
    listed = world.stripe.v1.customers.tax_ids.list(stripe_id).data
    assert [tax_id.value for tax_id in listed] == ["DE123456789"]
    assert [t["value"] for t in world.customer("acme")["tax_ids"]] == ["DE123456789"]
    assert count(world, "SELECT count(*) FROM customer_tax_ids WHERE deleted = false") == 1


def test_a_refund_sent_at_once_with_one_key_refunds_once(world: World) -> None:
    stripe_id = subscriber(world, "acme")
    (charge,) = world.stripe.v1.charges.list(params={"customer": stripe_id}).data
    body = {"charge": charge.id, "amount": {"amount": 500, "currency": "usd"}}
    path = "/v1/customers/acme/refunds"
    headers = {"Idempotency-Key": "refund-1"}
    assert at_once(world.http, "POST", path, body, headers=headers) == [200] * 7 + [201]
    assert int(world.stripe.v1.charges.retrieve(charge.id).amount_refunded) == 500
    world.settle()
    assert count(world, "SELECT count(*) FROM refunds") == 1
    assert count(world, "SELECT count(*) FROM audit_log WHERE action = 'refund'") == 1


def test_an_add_on_and_a_discount_sent_at_once_are_made_once(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    catalog = catalog_with(tmp_path, addons=ADDONS, coupons=COUPONS)
    world = make_world(TOLLGATE_CATALOG=str(catalog))
    stripe_id = subscriber(world, "acme")
    path = "/v1/customers/acme/addons/extra_runs"
    assert at_once(world.http, "PUT", path, {"quantity": 2}) == [200] * 8
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    held = {i.price.lookup_key: i.to_dict().get("quantity") for i in subscription["items"].data}
    assert held["tollgate_addon_extra_runs_month_usd"] == 2
    # The repeats' one change is audited once (each of them reached the audit, as the first).
    assert count(world, "SELECT count(*) FROM audit_log WHERE object_type = 'addon'") == 1
    discount = {"coupon": "launch20"}
    assert at_once(world.http, "POST", "/v1/customers/acme/discounts", discount) == [201] * 8
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    assert len(subscription.discounts) == 1
    assert count(world, "SELECT count(*) FROM audit_log WHERE object_type = 'discount'") == 1


def test_a_plan_migration_started_at_once_is_one_migration(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = pro_subscribers_and_v2(make_world, tmp_path, 2)
    body = {"from_version": 1, "to_version": 2, "at": "now", "customers": ["cust-00001"]}
    statuses = at_once(world.http, "POST", "/v1/plans/pro/migrations", body)
    # 202 while the first runs; 200 once it has finished (it moves one subscriber)
    assert set(statuses) <= {200, 202} and 202 in statuses, statuses
    assert count(world, "SELECT count(*) FROM plan_migrations") == 1
    unfinished = "SELECT count(*) FROM plan_migrations WHERE status != 'done'"
    deadline = time.monotonic() + 30
    while count(world, unfinished):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    world.settle()
    assert world.subscription("cust-00001")["plan_version"] == 2


def test_two_plan_changes_at_once_leave_one_subscription_on_one_of_them(world: World) -> None:
    stripe_id = subscriber(world, "acme")
    path = "/v1/customers/acme/subscription"
    yearly = {"plan": "pro", "interval": "year"}
    team = {"plan": "team", "interval": "month", "seats": 5}
    statuses = at_once(world.http, "PUT", path, yearly, also=team)
    assert all(status in (200, 409) for status in statuses) and 200 in statuses, statuses
    world.settle()
    (subscription,) = stripe_subscriptions(world, stripe_id)
    keys = {item.price.lookup_key for item in subscription["items"].data}
    assert keys & {"tollgate_pro_year_usd", "tollgate_team_month_usd"}
    assert "tollgate_pro_month_usd" not in keys
    shown = world.subscription("acme")
    assert (shown["plan"], shown["interval"]) in {("pro", "year"), ("team", "month")}


def test_two_sets_of_tax_ids_at_once_leave_one_of_them(world: World) -> None:
    stripe_id = str(world.create_customer("acme")["stripe_customer_id"])
    first = {"tax_ids": [{"type": "eu_vat", "value": "DE123456789"}]}
    second = {"tax_ids": [{"type": "eu_vat", "value": "DE987654321"}]}
    statuses = at_once(world.http, "PATCH", "/v1/customers/acme", first, also=second)
    assert all(status in (200, 409) for status in statuses) and 200 in statuses, statuses
    world.settle()
    listed = [tax_id.value for tax_id in world.stripe.v1.customers.tax_ids.list(stripe_id).data]
    assert listed in (["DE123456789"], ["DE987654321"])
    shown = [t["value"] for t in world.customer("acme")["tax_ids"]]
    assert shown == listed


def test_a_tax_id_change_sent_while_another_is_in_stripe_waits_for_it(world: World) -> None:
    # The first change's list of the customer's tax IDs answers a second late. A second change
    # sent meanwhile waits for the first to finish, then lists what it left and replaces it.
    # Before, it listed the same empty set and added its own; the first then added its own to
    # what it had listed: both stayed, neither set.
    stripe_id = str(world.create_customer("acme")["stripe_customer_id"])
    faults = world.sim.sim.faults
    faults.timeout_seconds = 1.0
    faults.queued.append(
        {"method": "GET", "path": f"/v1/customers/{stripe_id}/tax_ids", "kind": "timeout"}
    )
    statuses: list[int] = []

    def send(value: str) -> None:
        body = {"tax_ids": [{"type": "eu_vat", "value": value}]}
        with httpx.Client(base_url=world.base_url, headers=world.http.headers, timeout=60) as api:
            statuses.append(api.patch("/v1/customers/acme", json=body).status_code)

    first = threading.Thread(target=send, args=("DE123456789",))
    first.start()
    deadline = time.monotonic() + 10
    while faults.queued:  # the first change's list has begun
        assert time.monotonic() < deadline, "the first change never listed its tax IDs"
        time.sleep(0.01)
    time.sleep(0.2)
    send("DE987654321")
    first.join()
    assert statuses == [200, 200]
    listed = [tax_id.value for tax_id in world.stripe.v1.customers.tax_ids.list(stripe_id).data]
    assert listed == ["DE987654321"]
    world.settle()
    assert [t["value"] for t in world.customer("acme")["tax_ids"]] == listed
