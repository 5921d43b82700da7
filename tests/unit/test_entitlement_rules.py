"""The pure entitlement decision and metering rules: statuses, limits, thresholds, reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.catalog_file import load_catalog_file
from tollgate.domain.catalog import Aggregation
from tollgate.domain.deals import Deals, FeatureOverride
from tollgate.domain.entitlements import Access, Code, CustomerState, entitlements, use_terms
from tollgate.domain.metering import (
    Counter,
    calendar_month,
    crossed_thresholds,
    overage_minor,
    overage_units,
    usage_timestamp_problem,
)

CATALOG = load_catalog_file(Path(__file__).parents[2] / "catalog.example.yaml")
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
PERIOD = calendar_month(NOW)
GRACE = timedelta(days=7)
STATUSES = [
    "trialing",
    "active",
    "canceling",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "paused",
    "none",
]


def state(plan: str = "pro", status: str = "active", **fields: object) -> CustomerState:
    return CustomerState(customer_id="acme", plan=plan, status=status, period=PERIOD, **fields)  # type: ignore[arg-type]


def granted(plan: str = "pro", status: str = "active", now: datetime = NOW, **fields: object):  # type: ignore[no-untyped-def]
    return entitlements(CATALOG, state(plan, status, **fields), now=now, grace=GRACE)


@pytest.mark.parametrize("status", ["trialing", "active", "canceling"])
def test_trialing_active_and_canceling_get_the_plan(status: str) -> None:
    decision = granted("pro", status).decide("marketplace")
    assert decision.allowed and decision.code is Code.ALLOWED
    assert decision.reason == "Pro plan includes Marketplace."


@pytest.mark.parametrize("status", ["unpaid", "canceled", "none", "incomplete_expired", "paused"])
def test_ended_or_unpaid_subscriptions_get_the_default_plan(status: str) -> None:
    result = granted("pro", status)
    assert result.access is Access.DEFAULT and result.access_plan == "free"
    assert not result.decide("marketplace").allowed
    assert result.features["runs"].limit == 1000


def test_past_due_keeps_the_plan_for_the_grace_period_then_reduces_it() -> None:
    since = NOW - timedelta(days=3)
    within = granted("pro", "past_due", past_due_since=since)
    assert within.access is Access.FULL and within.decide("marketplace").allowed
    assert within.valid_until == since + GRACE  # the cache knows when time alone changes it

    after = granted("pro", "past_due", now=since + GRACE, past_due_since=since)
    decision = after.decide("marketplace")
    assert after.access is Access.REDUCED and not decision.allowed
    assert decision.code is Code.PAYMENT_OVERDUE
    assert decision.reason.startswith(
        "Payment overdue: the Pro subscription is limited to the Free"
    )
    assert decision.reason.endswith("pay the overdue invoice to restore it.")


def test_a_dunning_policy_sets_access_while_past_due() -> None:
    held = granted("pro", "past_due", past_due_since=NOW, dunning_access="default")
    assert held.access is Access.DEFAULT and not held.decide("marketplace").allowed
    kept = granted("pro", "past_due", past_due_since=NOW - 30 * GRACE, dunning_access="full")
    assert kept.access is Access.FULL
    # "reduced" is the policy's "reduce after the grace period": the grace rule itself.
    graced = granted("pro", "past_due", past_due_since=NOW, dunning_access="reduced")
    assert graced.access is Access.FULL
    lapsed = granted("pro", "past_due", past_due_since=NOW - GRACE, dunning_access="reduced")
    assert lapsed.access is Access.REDUCED


def test_free_hard_limit_denies_the_1001st_run_with_an_upgrade_hint() -> None:
    result = granted("free", "none", usage={"runs": 1000})
    decision = result.decide("runs", 1)
    assert not decision.allowed and decision.code is Code.LIMIT_EXCEEDED
    assert decision.reason == "Free plan: 1,000 runs a month, 1,000 used; upgrade to Pro for more."
    assert (decision.limit, decision.used, decision.remaining) == (1000, 1000, 0)
    assert granted("free", "none", usage={"runs": 999}).decide("runs", 1).allowed


def test_pro_soft_limit_allows_with_warnings_and_names_the_overage_rate() -> None:
    at_85 = granted("pro", "active", usage={"runs": 85_000}).decide("runs", 1)
    assert at_85.allowed
    assert at_85.reason == (
        "Pro plan: 100,000 runs a month included, 85,000 used (85 %); "
        "beyond that $0.50 per 1,000 runs."
    )
    assert at_85.warning == "Workflow runs: 80 % of the 100,000 included is used."
    past = granted("pro", "active", usage={"runs": 150_000}).decide("runs", 1)
    assert past.allowed and past.warning is not None and "more is billed" in past.warning
    assert granted("pro", "active", usage={"runs": 10}).decide("runs").warning is None


def test_limit_features_count_what_the_app_has() -> None:
    free = granted("free", "none")
    assert free.decide("workflows", 1, in_use=0).allowed
    denied = free.decide("workflows", 1, in_use=1)
    assert not denied.allowed
    assert denied.reason == "Free plan: up to 1 workflow, 1 in use; upgrade to Pro for more."
    assert granted("pro").decide("workflows", 500, in_use=10_000).allowed


def test_max_aggregation_compares_the_new_reading_not_a_sum() -> None:
    result = granted("pro", usage={"storage_gb": 8})
    assert result.decide("storage_gb", 9).allowed  # 9 GB is the new level, not 17


def test_credit_priced_features_need_a_balance() -> None:
    from tollgate.domain.entitlements import entitlements as decide_all

    broke = decide_all(
        CATALOG, state("pro", credit_balance=0), now=NOW, grace=GRACE, credit_prices={"runs": 2}
    ).decide("runs", 1)
    assert not broke.allowed and broke.code is Code.INSUFFICIENT_CREDITS
    assert "buy credits" in broke.reason
    overdraft = decide_all(
        CATALOG,
        state("pro", credit_balance=0, credit_allowance=10),
        now=NOW,
        grace=GRACE,
        credit_prices={"runs": 2},
    )
    assert overdraft.decide("runs", 5).allowed and not overdraft.decide("runs", 6).allowed


@given(
    plan=st.sampled_from(sorted(CATALOG.plans)),
    status=st.sampled_from(STATUSES),
    used=st.integers(0, 20_000_000),
    quantity=st.integers(0, 5_000_000),
    feature=st.sampled_from(sorted(CATALOG.features)),
    days_past_due=st.integers(0, 30),
)
def test_every_decision_follows_the_access_plan_and_explains_itself(
    plan: str, status: str, used: int, quantity: int, feature: str, days_past_due: int
) -> None:
    result = granted(
        plan,
        status,
        usage={"runs": used, "storage_gb": used, "cpu_seconds": used},
        past_due_since=NOW - timedelta(days=days_past_due),
    )
    decision = result.decide(feature, quantity)
    assert decision.reason and decision.reason.endswith(".")
    applied = CATALOG.plans[result.access_plan or "free"]
    full = status in ("trialing", "active", "canceling") or (
        status == "past_due" and days_past_due < GRACE.days
    )
    assert result.access_plan == (plan if full else "free")
    grant = applied.features.get(feature)
    if grant is None or not grant.enabled:
        assert not decision.allowed
        return
    aggregation = CATALOG.features[feature].aggregation
    if grant.hard and grant.limit is not None and feature in ("runs", "storage_gb", "cpu_seconds"):
        after = used + quantity if aggregation is Aggregation.SUM else max(used, quantity)
        assert decision.allowed == (after <= grant.limit)
        assert decision.remaining == max(0, grant.limit - used)
    elif feature in ("runs", "storage_gb", "cpu_seconds"):
        assert decision.allowed  # soft limits and unlimited features never refuse


# -- metering rules ---------------------------------------------------------------------------


def test_calendar_months_are_half_open_in_utc() -> None:
    december = calendar_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (december.start, december.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert december.end not in december and december.start in december


def test_timestamps_outside_the_open_period_or_far_ahead_are_refused() -> None:
    assert usage_timestamp_problem(NOW, PERIOD, NOW) is None
    assert usage_timestamp_problem(NOW + timedelta(minutes=4), PERIOD, NOW) is None
    assert "future" in str(usage_timestamp_problem(NOW + timedelta(minutes=6), PERIOD, NOW))
    before = usage_timestamp_problem(PERIOD.start - timedelta(seconds=1), PERIOD, NOW)
    assert before is not None and "before the open billing period" in before


def test_last_aggregation_keeps_the_latest_reading_whatever_the_arrival_order() -> None:
    early, late = NOW - timedelta(hours=1), NOW
    first = Counter(0)
    first.add(Aggregation.LAST, 5, late, "b")
    first.add(Aggregation.LAST, 9, early, "a")
    second = Counter(0)
    second.add(Aggregation.LAST, 9, early, "a")
    second.add(Aggregation.LAST, 5, late, "b")
    assert first.value == second.value == 5


def test_thresholds_are_crossed_once_on_the_way_up() -> None:
    grant = CATALOG.plans["pro"].features["runs"]
    assert crossed_thresholds(grant, 0, 79_999) == []
    assert crossed_thresholds(grant, 79_999, 80_000) == [80]
    assert crossed_thresholds(grant, 10, 200_000) == [80, 100]
    assert crossed_thresholds(grant, 100_000, 200_000) == []


def test_overage_is_billed_per_started_block() -> None:
    grant = CATALOG.plans["pro"].features["runs"]
    assert overage_units(grant, 102_500) == 2_500
    assert overage_units(CATALOG.plans["free"].features["runs"], 5_000) == 0  # hard: never billed
    assert grant.overage is not None
    assert overage_minor(grant.overage, 2_500, "usd") == 150  # 3 blocks of 1,000 at $0.50
    assert overage_minor(grant.overage, 0, "usd") == 0


_DEALS = [
    None,
    Deals(overrides=(FeatureOverride("runs", unlimited=True),)),
    Deals(overrides=(FeatureOverride("runs", limit=50),)),
    Deals(overrides=(FeatureOverride("storage_gb", enabled=True, limit=5),)),
    Deals(grants={"runs": 500, "cpu_seconds": 20}),
]


@given(
    plan=st.sampled_from([*CATALOG.plans, None]),
    status=st.sampled_from(STATUSES),
    feature=st.sampled_from(["runs", "storage_gb", "cpu_seconds"]),
    used=st.integers(0, 300_000),
    quantity=st.integers(0, 3_000),
    held=st.sampled_from([0, 0, 1, 40, 2_000]),
    late=st.integers(0, 20),
    interval=st.sampled_from([None, "month", "year"]),
    deals=st.sampled_from(_DEALS),
)
def test_terms_kept_for_many_uses_answer_as_the_full_decision(
    plan: str | None,
    status: str,
    feature: str,
    used: int,
    quantity: int,
    held: int,
    late: int,
    interval: str | None,
    deals: Deals | None,
) -> None:
    facts: dict[str, object] = {
        "interval": interval,
        "deals": deals,
        "past_due_since": NOW - timedelta(days=late) if status == "past_due" else None,
    }
    terms = use_terms(CATALOG, state(plan, status, **facts), feature, now=NOW, grace=GRACE)  # type: ignore[arg-type]
    usage = {"usage": {feature: used}, "held": {feature: held} if held else {}}
    full = granted(plan, status, **facts, **usage).decide(feature, quantity)  # type: ignore[arg-type]
    answer = terms.allowed(used, quantity, held) if terms is not None else None
    assert answer == (full if full.allowed and terms is not None else None)
    if status == "active" and plan in ("pro", "team") and feature == "runs":
        assert terms is not None  # the common case is answered from the terms
