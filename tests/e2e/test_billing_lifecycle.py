"""The billing lifecycle through Tollgate's HTTP API, with stripesim's webhooks moving the mirror.

Every story signs a customer up through `POST /v1/customers`, drives Stripe only through
Tollgate (plus the hosted pages a buyer uses, and test clocks for time), lets the simulator
deliver its signed events to Tollgate, and checks what `GET` answers and what Stripe billed.
Each runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CARD_DECLINED, DAY, World
from tollgate.clock import FrozenClock
from tollgate.services.subscriptions.pending_changes import apply_due_plan_changes

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z, where the stories' test clocks start
HOUR = 3600


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def test_sign_up_then_checkout_with_a_trial_then_paid_when_the_trial_ends(world: World) -> None:
    clock = world.test_clock(T0)
    created = world.create_customer("acme", name="Acme Inc", test_clock=clock)
    assert (created["plan"], created["status"], created["offline"]) == ("free", "none", False)
    assert created["stripe_customer_id"].startswith("cus_")
    stripe_customer = world.stripe.v1.customers.retrieve(created["stripe_customer_id"])
    assert stripe_customer.metadata["tollgate_customer_id"] == "acme"

    session = world.checkout("acme", plan="pro", interval="month")
    assert session["session_id"].startswith("cs_test_")
    paid = world.pay(session["url"])
    assert (
        paid.status_code == 303 and paid.headers["location"] == "https://app.example/billing/done"
    )
    world.settle()

    customer = world.customer("acme")
    assert (customer["plan"], customer["status"], customer["currency"]) == (
        "pro",
        "trialing",
        "usd",
    )
    subscription = world.subscription("acme")
    assert subscription["trial_end"] == iso(T0 + 14 * DAY)
    assert (subscription["interval"], subscription["cancel_at_period_end"]) == ("month", False)

    world.advance(clock, T0 + 14 * DAY + 2 * HOUR)
    assert world.customer("acme")["status"] == "active"
    amounts = [
        (i.billing_reason, i.amount_paid, i.status)
        for i in world.invoices(customer["stripe_customer_id"])
    ]
    assert amounts == [("subscription_create", 0, "paid"), ("subscription_cycle", 2900, "paid")]


def test_a_declined_card_at_checkout_leaves_the_customer_on_the_free_plan(world: World) -> None:
    world.create_customer("declined-org")
    session = world.checkout("declined-org", plan="pro", interval="month", trial_days=0)
    answer = world.pay(session["url"], card=CARD_DECLINED)
    assert answer.status_code == 402 and "declined" in answer.text
    world.settle()
    customer = world.customer("declined-org")
    assert (customer["plan"], customer["status"]) == ("free", "none")
    assert world.stripe_count("subscription") == 0 or all(
        sub.status == "canceled"
        for sub in world.stripe.v1.subscriptions.list(params={"status": "all"}).data
    )


# -- helpers ---------------------------------------------------------------------------------------

MONTH_END = T0 + 30 * DAY  # a month from 2026-09-21 is 30 days


def paying_customer(
    world: World, customer_id: str, clock: str, *, plan: str = "pro", seats: int | None = None
) -> Any:
    """Sign up on the test clock and pay Checkout for `plan` (monthly, no trial) at T0."""
    world.create_customer(customer_id, test_clock=clock)
    body: dict[str, Any] = {"plan": plan, "interval": "month", "trial_days": 0}
    if seats is not None:
        body["seats"] = seats
    paid = world.pay(world.checkout(customer_id, **body)["url"])
    assert paid.status_code == 303, paid.text
    world.settle()
    customer = world.customer(customer_id)
    assert (customer["plan"], customer["status"]) == (plan, "active")
    return customer


def stripe_subscription(world: World, customer_id: str) -> Any:
    subscription_id = world.subscription(customer_id)["stripe_subscription_id"]
    return world.stripe.v1.subscriptions.retrieve(subscription_id)


def bills(world: World, stripe_customer_id: str) -> list[tuple[str, int, str]]:
    return [
        (invoice.billing_reason, invoice.total, invoice.status)
        for invoice in world.invoices(stripe_customer_id)
    ]


# -- upgrades, downgrades, seats ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proration", "invoiced_now", "renewal"),
    [
        # Half a month left: 1/2 of 3 x $12 for Team, less 1/2 of $29 unused on Pro.
        ("create_prorations", [], 3600 + 1800 - 1450),
        ("always_invoice", [("subscription_update", 1800 - 1450, "paid")], 3600),
        ("none", [], 3600),
    ],
)
def test_an_upgrade_mid_period_applies_now_with_each_proration_behaviour(
    world: World, proration: str, invoiced_now: list[tuple[str, int, str]], renewal: int
) -> None:
    clock = world.test_clock(T0)
    customer = paying_customer(world, "upgrader", clock)
    world.advance(clock, T0 + 15 * DAY)
    changed = world.put_subscription(
        "upgrader", plan="team", interval="month", seats=3, proration=proration
    )
    assert (changed["plan"], changed["seats"], changed["pending_change"]) == ("team", 3, None)
    world.settle()
    assert world.customer("upgrader")["plan"] == "team"
    first = [("subscription_create", 2900, "paid")]
    assert bills(world, customer["stripe_customer_id"]) == first + invoiced_now
    world.advance(clock, MONTH_END + 2 * HOUR)
    assert bills(world, customer["stripe_customer_id"])[-1] == (
        "subscription_cycle",
        renewal,
        "paid",
    )


def test_the_immediate_proration_setting_applies_when_the_request_names_none(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_IMMEDIATE_PRORATION_BEHAVIOR="always_invoice")
    clock = world.test_clock(T0)
    customer = paying_customer(world, "upgrader", clock)
    world.advance(clock, T0 + 15 * DAY)
    world.put_subscription("upgrader", plan="team", interval="month", seats=3)
    world.settle()
    assert bills(world, customer["stripe_customer_id"])[-1] == (
        "subscription_update",
        350,
        "paid",
    )


def test_a_downgrade_waits_for_the_period_end_then_renews_on_the_cheaper_plan(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    customer = paying_customer(world, "downgrader", clock, plan="team", seats=3)
    world.advance(clock, T0 + 10 * DAY)
    answer = world.put_subscription("downgrader", plan="pro", interval="month")
    assert answer["plan"] == "team"
    assert answer["pending_change"] == {
        "plan": "pro",
        "interval": "month",
        "seats": None,
        "effective_at": iso(MONTH_END),
    }
    world.settle()
    assert world.subscription("downgrader")["pending_change"]["plan"] == "pro"
    assert world.customer("downgrader")["plan"] == "team"  # paid for until the period ends

    container = world.container
    early = apply_due_plan_changes(
        db=world.db,
        catalog=container.catalog,
        gateway=container.stripe,
        settings=container.settings,
        clock=FrozenClock(datetime.fromtimestamp(T0 + 10 * DAY, UTC)),
    )
    assert early.applied == []  # not due yet
    world.advance(clock, MONTH_END - HOUR)
    due = apply_due_plan_changes(
        db=world.db,
        catalog=container.catalog,
        gateway=container.stripe,
        settings=container.settings,
        clock=FrozenClock(datetime.fromtimestamp(MONTH_END - 5 * 60, UTC)),
    )
    assert len(due.applied) == 1
    world.advance(clock, MONTH_END + 2 * HOUR)
    assert (
        world.customer("downgrader")["plan"],
        world.subscription("downgrader")["pending_change"],
    ) == (
        "pro",
        None,
    )
    # The change made no proration: the period was paid as Team, the renewal bills Pro.
    assert bills(world, customer["stripe_customer_id"]) == [
        ("subscription_create", 3600, "paid"),
        ("subscription_cycle", 2900, "paid"),
    ]


def test_a_downgrade_asked_for_now_applies_now(world: World) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "hasty", clock, plan="team", seats=3)
    answer = world.put_subscription(
        "hasty", plan="pro", interval="month", at_period_end=False, proration="none"
    )
    assert (answer["plan"], answer["pending_change"]) == ("pro", None)
    world.settle()
    assert world.customer("hasty")["plan"] == "pro"


@pytest.mark.parametrize(("behaviour", "after_fewer"), [("exact", 2), ("incremental", 5)])
def test_seats_follow_the_member_count_up_and_down_per_the_seat_setting(
    make_world: Callable[..., World], behaviour: str, after_fewer: int
) -> None:
    world = make_world(TOLLGATE_SEAT_CHANGE_BEHAVIOR=behaviour)
    clock = world.test_clock(T0)
    paying_customer(world, "team-org", clock, plan="team", seats=3)
    more = world.put_subscription("team-org", plan="team", interval="month", seats=5)
    assert more["seats"] == 5
    fewer = world.put_subscription("team-org", plan="team", interval="month", seats=2)
    assert fewer["seats"] == after_fewer and fewer["pending_change"] is None
    world.settle()
    assert world.subscription("team-org")["seats"] == after_fewer
    item = stripe_subscription(world, "team-org")["items"].data
    assert [i.quantity for i in item if i.price.recurring.usage_type == "licensed"] == [after_fewer]
    too_many = world.put_subscription(
        "team-org", expect=400, plan="team", interval="month", seats=201
    )
    assert too_many["error"]["param"] == "seats"


# -- canceling ------------------------------------------------------------------------------------


def test_cancel_at_period_end_then_resume_keeps_the_plan(world: World) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "waverer", clock)
    canceled = world.call(
        "DELETE", "/v1/customers/waverer/subscription", params={"at_period_end": "true"}
    )
    assert (canceled["status"], canceled["cancel_at_period_end"]) == ("canceling", True)
    world.settle()
    assert world.customer("waverer")["status"] == "canceling"
    resumed = world.call("POST", "/v1/customers/waverer/subscription/resume")
    assert (resumed["status"], resumed["cancel_at_period_end"]) == ("active", False)
    world.settle()
    world.advance(clock, MONTH_END + 2 * HOUR)
    assert (world.customer("waverer")["plan"], world.customer("waverer")["status"]) == (
        "pro",
        "active",
    )


def test_cancel_at_period_end_then_the_customer_falls_back_to_the_default_plan(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    customer = paying_customer(world, "leaver", clock)
    world.call("DELETE", "/v1/customers/leaver/subscription", params={"at_period_end": "true"})
    world.settle()
    assert (world.customer("leaver")["plan"], world.customer("leaver")["status"]) == (
        "pro",
        "canceling",
    )
    world.advance(clock, MONTH_END + HOUR)
    after = world.customer("leaver")
    assert (after["plan"], after["status"]) == ("free", "none")
    assert world.subscription("leaver")["stripe_subscription_id"] is None
    # The period's (zero) overage is billed at the end; nothing more is charged.
    assert [
        (reason, total) for reason, total, _ in bills(world, customer["stripe_customer_id"])
    ] == [
        ("subscription_create", 2900),
        ("subscription_cycle", 0),
    ]


def test_cancel_now_ends_at_once_and_a_new_checkout_is_possible(world: World) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "quitter", clock)
    ended = world.call("DELETE", "/v1/customers/quitter/subscription")
    assert ended["status"] == "canceled"
    world.settle()
    assert (world.customer("quitter")["plan"], world.customer("quitter")["status"]) == (
        "free",
        "none",
    )
    assert world.checkout("quitter", plan="pro", interval="year")["url"]


# -- direct subscriptions -------------------------------------------------------------------------


def test_an_annual_invoiced_enterprise_plan_is_sent_an_invoice_due_in_thirty_days(
    world: World,
) -> None:
    world.create_customer("bigco", name="BigCo")
    answer = world.put_subscription("bigco", plan="enterprise", interval="year")
    assert (answer["plan"], answer["interval"], answer["status"]) == (
        "enterprise",
        "year",
        "active",
    )
    assert answer["collection_method"] == "send_invoice"
    world.settle()
    customer = world.customer("bigco")
    assert (customer["plan"], customer["status"]) == ("enterprise", "active")
    (invoice,) = world.invoices(customer["stripe_customer_id"])
    assert (invoice.total, invoice.status, invoice.collection_method) == (
        1_200_000,
        "open",
        "send_invoice",
    )
    assert invoice.due_date - invoice.created >= 30 * DAY - 60
    again = world.put_subscription("bigco", plan="enterprise", interval="year")
    assert again["stripe_subscription_id"] == answer["stripe_subscription_id"]
    assert world.stripe_count("subscription") == 1


def test_a_trial_without_a_card_is_canceled_at_its_end_when_set_to_cancel(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_TRIAL_END_BEHAVIOR="cancel")
    clock = world.test_clock(T0)
    world.create_customer("tryer", test_clock=clock)
    started = world.put_subscription("tryer", plan="pro", interval="month")
    assert (started["status"], started["trial_end"]) == ("trialing", iso(T0 + 14 * DAY))
    world.settle()
    assert world.customer("tryer")["status"] == "trialing"
    world.advance(clock, T0 + 14 * DAY + HOUR)
    after = world.customer("tryer")
    assert (after["plan"], after["status"]) == ("free", "none")
    assert [b for b in bills(world, after["stripe_customer_id"]) if b[1]] == []


# -- Connect --------------------------------------------------------------------------------------


def test_a_connected_account_customer_is_billed_on_its_account_with_the_platform_fee(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_APPLICATION_FEE_PERCENT="10")
    account = world.stripe.v1.accounts.create(params={"type": "express", "country": "US"}).id
    created = world.create_customer("tenant-1", stripe_account=account)
    assert created["stripe_account"] == account
    assert world.stripe_count("customer") == 0  # nothing on the platform
    assert world.stripe_count("customer", account) == 1
    paid = world.pay(world.checkout("tenant-1", plan="pro", interval="month", trial_days=0)["url"])
    assert paid.status_code == 303, paid.text
    world.settle()
    customer = world.customer("tenant-1")
    assert (customer["plan"], customer["status"]) == ("pro", "active")
    subscription = world.stripe.v1.subscriptions.retrieve(
        world.subscription("tenant-1")["stripe_subscription_id"],
        options={"stripe_account": account},
    )
    assert subscription.application_fee_percent == 10
    (invoice,) = world.invoices(customer["stripe_customer_id"], account)
    assert (invoice.total, invoice.status) == (2900, "paid")


def test_a_pending_downgrade_is_dropped_by_asking_for_the_current_plan_again(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "undecided", clock, plan="team", seats=3)
    assert world.put_subscription("undecided", plan="pro", interval="month")["pending_change"]
    kept = world.put_subscription("undecided", plan="team", interval="month", seats=3)
    assert (kept["plan"], kept["pending_change"]) == ("team", None)
    assert world.subscription("undecided")["pending_change"] is None
    report = apply_due_plan_changes(
        db=world.db,
        catalog=world.container.catalog,
        gateway=world.container.stripe,
        settings=world.container.settings,
        clock=FrozenClock(datetime.fromtimestamp(MONTH_END, UTC)),
    )
    assert report.applied == []


def test_moving_to_the_free_plan_cancels_at_period_end_and_checkout_is_refused_meanwhile(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "saver", clock)
    refused = world.checkout("saver", expect=409, plan="pro", interval="year")
    assert refused["error"]["type"] == "already_subscribed"
    answer = world.put_subscription("saver", plan="free", interval="month")
    assert (answer["status"], answer["cancel_at_period_end"]) == ("canceling", True)
    world.settle()
    world.advance(clock, MONTH_END + HOUR)
    assert (world.customer("saver")["plan"], world.customer("saver")["status"]) == (
        "free",
        "none",
    )


def test_the_same_sign_up_sent_eight_times_at_once_makes_one_customer(world: World) -> None:
    body = {"id": "rush", "email": "billing@rush.example", "name": "Rush"}
    barrier = threading.Barrier(8)

    def sign_up(_: int) -> tuple[int, Any]:
        with httpx.Client(base_url=world.base_url, headers=world.http.headers) as http:
            barrier.wait()
            answer = http.post("/v1/customers", json=body, timeout=60)
            return answer.status_code, answer.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(sign_up, range(8)))
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    assert len({body["stripe_customer_id"] for _, body in answers}) == 1
    assert world.stripe_count("customer") == 1
    world.settle()
    assert world.customer("rush")["stripe_customer_id"] == answers[0][1]["stripe_customer_id"]
