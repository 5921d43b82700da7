"""Voiding usage reported to Stripe: the overage is compensated once with a meter event
adjustment (cancel by identifier) and the rest sent again; closed periods refuse.

Runs on SQLite, PostgreSQL, and PostgreSQL with the counters in Redis.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import DAY, World
from tests.e2e.test_metering import (
    HOUR,
    T0,
    counted_in,
    counters,
    meter_total,
    pro_customer,
    record,
    runs,
    world,
)
from tollgate.db.models import AuditLog
from tollgate.jobs.usage_controls import send_meter_adjustments
from tollgate.services.meter_usage import sync_meter_usage
from tollgate.services.usage import flush_usage

__all__ = ["counted_in", "counters", "world"]

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


def settle_usage(world: World) -> None:
    """What the worker does: fold Redis's counts, cancel voided meter events, send overage."""
    app = world.container
    flush_usage(db=app.db, catalog=app.catalog, clock=app.clock, grace=app.grace)
    send_meter_adjustments(app)
    sync_meter_usage(db=app.db, gateway=app.stripe, clock=app.clock)


def void(world: World, ids: list[str], reason: str = "double-counted by a retry bug") -> Any:
    return dict(world.call("POST", "/v1/usage/void", json={"ids": ids, "reason": reason}))


def test_a_voided_event_reported_to_stripe_is_compensated_once(world: World) -> None:
    clock = world.test_clock(T0)
    cus = pro_customer(world, "pro-org", clock)["stripe_customer_id"]
    # 100,000 included; 102,500 used -> 2,500 over, reported to the meter.
    assert record(world, runs("pro-org", 0, 100, 1_000, T0 + 60))["accepted"] == 100
    assert record(world, runs("pro-org", 5000, 5, 500, T0 + 120))["accepted"] == 5
    settle_usage(world)
    assert meter_total(world, cus, T0, T0 + 31 * DAY) == 2_500

    report = void(world, ["pro-org-3"])
    assert (report["voided"], report["duplicates"], report["rejected"]) == (1, 0, [])
    usage = world.call("GET", "/v1/customers/pro-org/usage")["meters"]["runs"]
    assert (usage["used"], usage["overage"]) == (101_500, 1_500)
    settle_usage(world)  # the 2,500 event cancelled, 1,500 sent again
    assert meter_total(world, cus, T0, T0 + 31 * DAY) == 1_500
    settle_usage(world)
    assert void(world, ["pro-org-3"])["duplicates"] == 1  # once
    settle_usage(world)
    assert meter_total(world, cus, T0, T0 + 31 * DAY) == 1_500

    # Within what is still queued: lowered before it is sent, nothing cancelled.
    assert record(world, runs("pro-org", 7000, 1, 900, T0 + 180))["accepted"] == 1
    app = world.container
    flush_usage(db=app.db, catalog=app.catalog, clock=app.clock, grace=app.grace)
    assert void(world, ["pro-org-5000"])["voided"] == 1  # 500 of the 900 queued
    settle_usage(world)
    assert meter_total(world, cus, T0, T0 + 31 * DAY) == 1_900

    # The audit: who and why.
    with world.db.transaction() as session:
        rows = session.query(AuditLog).filter_by(object_type="usage_event").all()
        assert sorted(row.object_id for row in rows) == ["pro-org-3", "pro-org-5000"]
        assert rows[0].actor.startswith("api:") and rows[0].after == {
            "reason": "double-counted by a retry bug"
        }

    world.advance(clock, T0 + 30 * DAY + 2 * HOUR)  # the period closes and is invoiced
    closed = void(world, ["pro-org-4"])
    assert closed["voided"] == 0
    assert closed["rejected"][0]["error"]["code"] == "closed_period"
    assert "invoice is final" in closed["rejected"][0]["error"]["message"]


def test_bad_void_calls_are_refused_clearly(world: World) -> None:
    world.create_customer("acme", offline=True)
    for body, words in [
        ({"ids": [], "reason": "x"}, "ids"),
        ({"ids": ["a"], "reason": ""}, "reason"),
        ({"ids": ["a", "a"], "reason": "x"}, "repeat"),
        ({"ids": ["a"]}, "reason"),
    ]:
        answer = world.http.post("/v1/usage/void", json=body)
        assert answer.status_code == 400 and words in answer.text, answer.text
    report = void(world, ["nope"])
    assert report["rejected"][0]["error"]["code"] == "unknown_event"
