"""The reconciliation rules: which difference is which drift, windows and the nightly slot."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from tollgate.domain.reconcile import (
    DriftKind,
    compare_object,
    compare_usage,
    heal_event_created,
    heal_event_type,
    ledger_drift,
    meter_event_moment,
    minute_window,
    nightly_since,
    nightly_slot,
    parse_window,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CHARGE = {
    "status": "succeeded",
    "refunded": False,
    "currency": "usd",
    "amount": 2900,
    "amount_refunded": 0,
}


def test_equal_copies_are_no_drift() -> None:
    assert compare_object("charge", "ch_1", local=dict(CHARGE), stripe=dict(CHARGE)) is None


def test_a_missing_copy_is_missing_locally_and_healable() -> None:
    drift = compare_object("charge", "ch_1", local=None, stripe=CHARGE)
    assert drift is not None
    assert (drift.kind, drift.local, drift.stripe, drift.healable) == (
        DriftKind.MISSING_LOCALLY,
        None,
        CHARGE,
        True,
    )


def test_a_local_object_stripe_lacks_is_reported_not_healed() -> None:
    drift = compare_object("charge", "ch_1", local=CHARGE, stripe=None)
    assert drift is not None
    assert (drift.kind, drift.healable) == (DriftKind.UNKNOWN_TO_STRIPE, False)


def test_only_the_differing_fields_are_kept_and_state_wins_over_money() -> None:
    refunded = {**CHARGE, "amount_refunded": 900}
    drift = compare_object("charge", "ch_1", local=CHARGE, stripe=refunded)
    assert drift is not None
    assert (drift.kind, drift.local, drift.stripe) == (
        DriftKind.AMOUNT_DIFFERS,
        {"amount_refunded": 0},
        {"amount_refunded": 900},
    )
    both = {**refunded, "refunded": True}
    drift = compare_object("charge", "ch_1", local=CHARGE, stripe=both)
    assert drift is not None and drift.kind is DriftKind.STATUS_DIFFERS


@pytest.mark.parametrize(
    ("object_type", "state", "event_type"),
    [
        ("subscription", {"status": "active"}, "customer.subscription.updated"),
        ("subscription", {"status": "canceled"}, "customer.subscription.deleted"),
        ("invoice", {"status": "paid"}, "invoice.paid"),
        ("invoice", {"status": "open"}, "invoice.finalized"),
        ("invoice", {"status": "void"}, "invoice.voided"),
        ("charge", {"status": "succeeded", "amount_refunded": 0}, "charge.succeeded"),
        ("charge", {"status": "succeeded", "amount_refunded": 5}, "charge.refunded"),
        ("charge", {"status": "failed", "amount_refunded": 0}, "charge.failed"),
        ("refund", {"status": "succeeded"}, "refund.updated"),
        ("dispute", {"status": "under_review"}, "charge.dispute.updated"),
        ("dispute", {"status": "lost"}, "charge.dispute.closed"),
    ],
)
def test_heal_event_type_is_the_event_stripe_sends_for_that_state(
    object_type: str, state: dict[str, object], event_type: str
) -> None:
    assert heal_event_type(object_type, state) == event_type


def test_a_healing_event_is_newer_than_what_the_mirror_holds() -> None:
    assert heal_event_created(NOW, None) == int(NOW.timestamp())
    ahead = int(NOW.timestamp()) + 60
    assert heal_event_created(NOW, ahead) == ahead + 1


def test_windows_are_durations_or_iso_times() -> None:
    assert parse_window("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_window("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_window("7d", NOW) == NOW - timedelta(days=7)
    assert parse_window("2026-11-19T00:00:00", NOW) == datetime(2026, 11, 19, tzinfo=UTC)
    for bad in ("yesterday", "0h", "2027-01-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_window(bad, NOW)


def test_the_nightly_slot_is_due_after_its_time_each_day() -> None:
    at = time(2, 0)
    assert nightly_slot(NOW.replace(hour=1, minute=59), at) is None
    assert nightly_slot(NOW.replace(hour=2, minute=0), at) == NOW.replace(hour=2, minute=0)
    assert nightly_slot(NOW.replace(hour=23), at) == NOW.replace(hour=2, minute=0)


def test_the_nightly_window_reaches_back_to_the_last_good_run() -> None:
    assert nightly_since(NOW, None) == NOW - timedelta(hours=25)
    three_days_ago = NOW - timedelta(days=3)
    assert nightly_since(NOW, three_days_ago) == three_days_ago - timedelta(hours=1)
    assert nightly_since(NOW, NOW - timedelta(hours=2)) == NOW - timedelta(hours=25)


# -- usage on meters and the credit ledger -------------------------------------------------------

PERIOD_START = datetime(2026, 11, 3, 9, 41, 17, tzinfo=UTC)
PERIOD_END = datetime(2026, 12, 3, 9, 41, 17, tzinfo=UTC)


def test_a_period_is_widened_to_whole_minutes_for_stripes_summaries() -> None:
    assert minute_window(PERIOD_START, PERIOD_END) == (
        datetime(2026, 11, 3, 9, 41, tzinfo=UTC),
        datetime(2026, 12, 3, 9, 42, tzinfo=UTC),
    )
    aligned = datetime(2026, 11, 3, 9, 41, tzinfo=UTC)
    assert minute_window(aligned, aligned + timedelta(days=30)) == (
        aligned,
        aligned + timedelta(days=30),
    )


def test_a_meter_events_moment_stays_inside_its_period() -> None:
    inside = PERIOD_START + timedelta(days=2)
    assert meter_event_moment(inside, PERIOD_START, PERIOD_END) == inside
    late = PERIOD_END + timedelta(minutes=5)  # usage of the period, sent after it ended
    assert meter_event_moment(late, PERIOD_START, PERIOD_END) == PERIOD_END - timedelta(seconds=1)
    early = PERIOD_START - timedelta(hours=1)
    assert meter_event_moment(early, PERIOD_START, PERIOD_END) == PERIOD_START


def test_usage_drift_only_when_the_meter_disagrees_or_is_missing() -> None:
    window = minute_window(PERIOD_START, PERIOD_END)
    same = compare_usage(
        "org:runs:p", feature="runs", window=window, sent=2500, meter_id="mtr_1",
        aggregated=Decimal(2500),
    )  # fmt: skip
    assert same is None
    more = compare_usage(
        "org:runs:p", feature="runs", window=window, sent=2500, meter_id="mtr_1",
        aggregated=Decimal("2900.5"),
    )  # fmt: skip
    assert more is not None and (more.kind, more.object_type) == (
        DriftKind.USAGE_DIFFERS,
        "meter_usage",
    )
    assert not more.healable
    assert more.local == {
        "feature": "runs",
        "start": "2026-11-03T09:41:00+00:00",
        "end": "2026-12-03T09:42:00+00:00",
        "overage_sent": 2500,
    }
    assert more.stripe == {"meter": "mtr_1", "aggregated_value": "2900.5"}
    gone = compare_usage(
        "org:runs:p", feature="runs", window=window, sent=0, meter_id=None, aggregated=Decimal(0)
    )
    assert gone is not None and gone.stripe == {"meter": None, "aggregated_value": 0}


def test_a_ledger_problem_is_a_drift_of_the_customer_it_names() -> None:
    problem = "credits of customer 'acme': accounts sum to 50, not 0"
    drift = ledger_drift(problem)
    assert (drift.kind, drift.object_type, drift.object_id) == (
        DriftKind.LEDGER_UNBALANCED,
        "credit_ledger",
        "acme",
    )
    assert drift.local == {"problem": problem} and drift.stripe is None and not drift.healable
    assert ledger_drift("books do not balance").object_id == "ledger"
