"""Metering stories over HTTP against stripesim: hard limits under concurrency, overage billed
once through a crash, renewals, downgrades and past-due grace changing decisions.

Each story runs on SQLite, PostgreSQL, and PostgreSQL with the counters in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DAY, World
from tests.redis_space import redis_space
from tollgate.bootstrap import build_container
from tollgate.clock import FrozenClock
from tollgate.services.meter_usage import sync_meter_usage
from tollgate.services.usage import flush_usage

pytestmark = pytest.mark.parametrize(
    ("database_url", "counted_in"),
    [
        ("sqlite", "database"),
        pytest.param("postgresql", "database", marks=pytest.mark.postgres),
        pytest.param("postgresql", "redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
    ids=["sqlite", "postgresql", "postgresql+redis"],
    indirect=["database_url"],
)

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z
HOUR = 3600


@pytest.fixture
def counted_in() -> str:
    return "database"  # each test is parametrised over this (see pytestmark)


@pytest.fixture
def counters(counted_in: str) -> Iterator[dict[str, str]]:
    """The settings that put usage counters in Redis (under this test's prefix), or none."""
    if counted_in == "database":
        yield {}
        return
    with redis_space() as settings:
        yield settings


@pytest.fixture
def world(make_world: Callable[..., World], counters: dict[str, str]) -> World:
    world = make_world(**counters)
    assert (world.container.usage_counters is not None) == bool(counters)
    return world


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def record(world: World, events: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(world.call("POST", "/v1/usage", json={"events": events}))


def runs(customer: str, start: int, n: int, value: int, ts: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{customer}-{i}",
            "customer": customer,
            "meter": "runs",
            "value": value,
            "timestamp": iso(ts),
        }
        for i in range(start, start + n)
    ]


def pro_customer(world: World, customer_id: str, clock: str, card: str | None = None) -> Any:
    world.create_customer(customer_id, test_clock=clock)
    session = world.checkout(customer_id, plan="pro", interval="month", trial_days=0)
    paid = world.pay(session["url"], **({"card": card} if card else {}))
    assert paid.status_code == 303, paid.text
    world.settle()
    return world.customer(customer_id)


def meter_total(world: World, stripe_customer_id: str, start: int, end: int) -> int:
    meters = world.stripe.v1.billing.meters.list().data
    meter = next(m for m in meters if m.event_name == "tollgate_runs")
    summaries = world.stripe.v1.billing.meters.event_summaries.list(
        meter.id,
        params={
            "customer": stripe_customer_id,
            "start_time": start - start % 60,
            "end_time": end - end % 60,
        },
    )
    return int(sum(summary.aggregated_value for summary in summaries.data))


def free_runs(client: int, batch: int) -> list[dict[str, Any]]:
    return [
        {"id": f"c{client}-b{batch}-{i}", "customer": "free-org", "meter": "runs", "value": 1}
        for i in range(20)
    ]


def test_the_free_hard_limit_holds_under_20_concurrent_clients(world: World) -> None:
    world.create_customer("free-org")

    def client(n: int) -> dict[tuple[int, int], int]:
        accepted = {}
        with httpx.Client(base_url=world.base_url, headers=dict(world.http.headers)) as http:
            for batch in range(5):
                answer = http.post("/v1/usage", json={"events": free_runs(n, batch)})
                assert answer.status_code == 200, answer.text
                accepted[(n, batch)] = answer.json()["accepted"]
        return accepted

    with ThreadPoolExecutor(20) as pool:
        batches = {key: n for found in pool.map(client, range(20)) for key, n in found.items()}
    assert sum(batches.values()) == 1000  # of 2,000 runs tried
    usage = world.call("GET", "/v1/customers/free-org/usage")["meters"]["runs"]
    assert (usage["used"], usage["percentage"]) == (1000, 100.0)
    check = world.call("GET", "/v1/customers/free-org/entitlements/runs")
    assert check["allowed"] is False and check["code"] == "limit_exceeded"

    # Whole batches sent again: what counted is a duplicate, what was refused is refused again.
    for (n, batch), accepted in sorted(batches.items())[:10]:
        again = record(world, free_runs(n, batch))
        assert (again["accepted"], again["duplicates"]) == (0, accepted)
        assert [r["error"]["code"] for r in again["rejected"]] == ["limit_exceeded"] * (
            20 - accepted
        )
    assert world.call("GET", "/v1/customers/free-org/usage")["meters"]["runs"]["used"] == 1000


def test_pro_overage_is_billed_once_through_a_crash_and_the_renewal_resets_the_counter(
    world: World, make_settings: Any, counters: dict[str, str]
) -> None:
    clock = world.test_clock(T0)
    customer = pro_customer(world, "pro-org", clock)
    cus = customer["stripe_customer_id"]
    # 100,000 included; 102,500 used -> 2,500 over -> 3 started blocks of 1,000 at $0.50.
    assert record(world, runs("pro-org", 0, 100, 1_000, T0 + 60))["accepted"] == 100
    assert record(world, runs("pro-org", 5000, 5, 500, T0 + 120))["accepted"] == 5
    retried = record(world, runs("pro-org", 0, 100, 1_000, T0 + 60))  # the whole batch again
    assert (retried["accepted"], retried["duplicates"], retried["rejected"]) == (0, 100, [])
    usage = world.call("GET", "/v1/customers/pro-org/usage")["meters"]["runs"]
    assert (usage["used"], usage["overage"]) == (102_500, 2_500)
    assert usage["estimated_overage"] == {"amount": 150, "currency": "usd"}
    # Counted in Redis, the overage is queued when the usage is folded into the database
    # counters (the worker does it every second); counted in the database, it already is.
    container = world.container
    folded = flush_usage(
        db=container.db, catalog=container.catalog, clock=container.clock, grace=container.grace
    )
    assert folded.overage == (1 if counters else 0)

    # The job sends, Stripe acts, but the answer never arrives (a timeout: the job "crashes").
    settings = make_settings(world.db.url, STRIPE_TIMEOUT=1, STRIPE_MAX_RETRIES=0)
    impatient = build_container(settings)
    try:
        with world.sim.sim.lock:
            world.sim.sim.faults.timeout_seconds = 3
            world.sim.sim.faults.queued.append(
                {"kind": "timeout", "method": "POST", "path": "/v1/billing/meter_events"}
            )
        first = sync_meter_usage(db=impatient.db, gateway=impatient.stripe, clock=impatient.clock)
        assert (first.claimed, first.sent, first.retrying) == (1, 0, 1)
    finally:
        impatient.close()
    # Restarted, the job sends the same claim again; Stripe counts its identifier once.
    again = sync_meter_usage(
        db=world.container.db,
        gateway=world.container.stripe,
        clock=_later(world, HOUR),
    )
    # (Stripe answers the repeat from its idempotency record, or as a known identifier.)
    assert again.sent + again.already_sent == 1 and again.retrying == 0, again
    assert meter_total(world, cus, T0, T0 + 31 * DAY) == 2_500
    quiet = sync_meter_usage(
        db=world.db, gateway=world.container.stripe, clock=world.container.clock
    )
    assert (quiet.claimed, quiet.sent, quiet.already_sent) == (0, 0, 0)

    world.advance(clock, T0 + 30 * DAY + 2 * HOUR)  # the renewal invoices the overage
    renewal = world.invoices(cus)[-1]
    lines = sorted(line.amount for line in renewal.lines.data if line.amount)
    assert renewal.billing_reason == "subscription_cycle"
    assert (renewal.total, lines) == (2900 + 150, [150, 2900])

    fresh = world.call("GET", "/v1/customers/pro-org/usage")["meters"]["runs"]
    assert fresh["used"] == 0 and fresh["period_start"].startswith(iso(T0 + 30 * DAY)[:10])
    assert record(world, runs("pro-org", 9000, 1, 7, T0 + 30 * DAY + 3 * HOUR))["accepted"] == 1
    assert world.call("GET", "/v1/customers/pro-org/usage")["meters"]["runs"]["used"] == 7


def _later(world: World, seconds: int) -> FrozenClock:
    return FrozenClock(world.container.clock.now() + timedelta(seconds=seconds))


def test_canceling_keeps_the_plan_to_period_end_then_the_default_plan_applies(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    pro_customer(world, "leaving-org", clock)
    world.put_subscription("leaving-org", plan="free", interval="month")
    world.settle()
    assert world.customer("leaving-org")["status"] == "canceling"
    kept = world.call("GET", "/v1/customers/leaving-org/entitlements/marketplace")
    assert kept["allowed"] is True and kept["reason"] == "Pro plan includes Marketplace."

    world.advance(clock, T0 + 30 * DAY + 2 * HOUR)
    granted = world.call("GET", "/v1/customers/leaving-org/entitlements")
    assert (granted["plan"], granted["status"], granted["access_plan"]) == ("free", "none", "free")
    gone = world.call("GET", "/v1/customers/leaving-org/entitlements/marketplace")
    assert gone["allowed"] is False and gone["reason"].startswith("Free plan does not include")


def test_past_due_keeps_access_for_the_grace_period_then_reduces_it(
    make_world: Any, counters: dict[str, str]
) -> None:
    # The dunning policy reduces access after the grace period from the first failure.
    world = make_world(
        TOLLGATE_PAST_DUE_GRACE_DAYS=3,
        TOLLGATE_DUNNING_POLICY="1:payment_failed_soft:reduced",
        **counters,
    )
    start = int(time.time())  # Tollgate's clock is real time: the test clock starts there too
    clock = world.test_clock(start)
    world.create_customer("late-org", test_clock=clock)
    # A card that attaches but whose charges fail: the trial converts into past_due.
    session = world.checkout("late-org", plan="pro", interval="month", trial_days=1)
    assert world.pay(session["url"], card="4000 0000 0000 0341").status_code == 303
    world.settle()
    assert world.call("GET", "/v1/customers/late-org/entitlements/marketplace")["allowed"]

    world.advance(clock, start + DAY + 2 * HOUR)
    assert world.customer("late-org")["status"] == "past_due"
    within = world.call("GET", "/v1/customers/late-org/entitlements/marketplace")
    assert within["allowed"] is True  # the grace counts from the unpaid period's start

    # Four days on (the cache is told the time; Tollgate's own clock stays real for webhooks).
    cache = world.container.entitlements
    cache.clock = FrozenClock(datetime.fromtimestamp(start + 5 * DAY, UTC))
    cache.clear()
    denied = world.call("GET", "/v1/customers/late-org/entitlements/marketplace")
    assert (denied["allowed"], denied["code"]) == (False, "payment_overdue")
    assert denied["reason"] == (
        "Payment overdue: the Pro subscription is limited to the Free plan. "
        "Free plan does not include Marketplace; pay the overdue invoice to restore it."
    )
    assert world.call("GET", "/v1/customers/late-org/entitlements")["access"] == "reduced"
