"""Reconciliation of usage: the overage Tollgate sent to a billing meter against Stripe's meter.

A Pro customer on a test clock goes over its included runs; the sync job sends the overage.
Reconciliation finds the meter agreeing, then reports (and never heals) a meter event that
Tollgate did not send. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.conftest import DAY, World
from tests.e2e.test_metering import T0, pro_customer, record, runs
from tollgate.clock import FrozenClock
from tollgate.services.meter_usage import sync_meter_usage
from tollgate.services.reconcile import list_drifts, reconcile


def _reconcile(world: World, later: timedelta) -> list[object]:
    # Later than the sync by more than Stripe needs to aggregate what was sent.
    clock = FrozenClock(world.container.clock.now() + later)
    report = reconcile(
        db=world.db,
        gateway=world.container.stripe,
        dunning=world.container.dunning_policy,
        clock=clock,
        since=datetime.fromtimestamp(T0, UTC) - timedelta(hours=1),
    )
    assert report.status == "succeeded"
    return list(list_drifts(db=world.db, run_id=report.run_id))


def test_overage_on_the_meter_is_compared_per_period_and_a_difference_reported(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    customer = pro_customer(world, "metered-org", clock)
    stripe_customer = customer["stripe_customer_id"]
    # 100,000 runs included; 102,500 used: 2,500 over.
    assert record(world, runs("metered-org", 0, 100, 1_000, T0 + 60))["accepted"] == 100
    assert record(world, runs("metered-org", 500, 5, 500, T0 + 120))["accepted"] == 5

    # Queued but not sent yet: nothing to compare.
    assert [d for d in _reconcile(world, timedelta(hours=1)) if d.kind == "usage_differs"] == []

    sent = sync_meter_usage(
        db=world.db, gateway=world.container.stripe, clock=world.container.clock
    )
    assert (sent.sent, sent.units) == (1, 2_500)
    # Just sent: Stripe may not have aggregated it yet, so the period waits for the next run.
    assert [d for d in _reconcile(world, timedelta(minutes=1)) if d.kind == "usage_differs"] == []
    # Settled and equal: no drift.
    assert [d for d in _reconcile(world, timedelta(hours=1)) if d.kind == "usage_differs"] == []

    # Someone reports usage to the meter behind Tollgate's back.
    world.stripe.v1.billing.meter_events.create(
        params={
            "event_name": "tollgate_runs",
            "identifier": "manual-correction-1",
            "timestamp": T0 + 180,
            "payload": {"stripe_customer_id": stripe_customer, "value": "400"},
        }
    )
    drifts = [d for d in _reconcile(world, timedelta(hours=1)) if d.kind == "usage_differs"]
    assert len(drifts) == 1
    drift = drifts[0]
    assert drift.object_type == "meter_usage" and not drift.healed
    assert drift.object_id.startswith("metered-org:runs:")
    assert drift.local is not None and drift.stripe is not None
    assert drift.local["overage_sent"] == 2_500 and drift.local["feature"] == "runs"
    # The period [T0, T0 + 30 days) widened to whole minutes, as Stripe's summaries need.
    start = datetime.fromisoformat(drift.local["start"])
    end = datetime.fromisoformat(drift.local["end"])
    assert start == datetime.fromtimestamp(T0 - T0 % 60, UTC)
    assert end - start >= timedelta(seconds=30 * DAY) and end.second == 0
    assert drift.stripe["aggregated_value"] == 2_900 and drift.stripe["meter"].startswith("mtr_")
    # Reported, not healed: Tollgate's outbox is unchanged and a later run reports it again.
    again = [d for d in _reconcile(world, timedelta(hours=2)) if d.kind == "usage_differs"]
    assert [(d.object_id, d.local, d.stripe) for d in again] == [
        (drift.object_id, drift.local, drift.stripe)
    ]
