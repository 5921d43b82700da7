"""The pure rules behind customers and subscriptions: plan and status, timing, seats, input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tollgate.catalog_file import load_catalog_file
from tollgate.domain.errors import InvalidRequest
from tollgate.domain.subscriptions import (
    ChangeTiming,
    CurrentTerms,
    change_timing,
    check_metadata,
    check_seats,
    collection_for,
    customer_currency,
    customer_plan,
    request_id,
    seats_after,
    subscription_terms,
    trial_days_for,
)

CATALOG = load_catalog_file(Path(__file__).resolve().parents[2] / "catalog.example.yaml")
LATER = datetime(2026, 12, 1, tzinfo=UTC)


def plan_of(**given: object) -> tuple[str | None, str]:
    values: dict[str, object] = {
        "subscription_plan": None,
        "subscription_status": None,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "assigned_plan": None,
        "offline": False,
        "default_plan": "free",
    }
    values.update(given)
    found = customer_plan(**values)  # type: ignore[arg-type]
    return found.plan, found.status


def test_a_live_subscription_decides_plan_and_status() -> None:
    assert plan_of(subscription_plan="pro", subscription_status="trialing") == ("pro", "trialing")
    assert plan_of(subscription_plan="pro", subscription_status="past_due") == ("pro", "past_due")


def test_a_pending_cancel_is_canceling() -> None:
    canceling = plan_of(
        subscription_plan="pro", subscription_status="active", cancel_at_period_end=True
    )
    assert canceling == ("pro", "canceling")
    assert plan_of(subscription_plan="pro", subscription_status="active", cancel_at=LATER) == (
        "pro",
        "canceling",
    )


def test_without_a_live_subscription_the_default_plan_with_status_none() -> None:
    assert plan_of() == ("free", "none")
    assert plan_of(subscription_plan="pro", subscription_status="canceled") == ("free", "none")
    assert plan_of(default_plan=None) == (None, "none")


def test_an_offline_customer_is_active_on_its_own_plan() -> None:
    assert plan_of(offline=True, assigned_plan="enterprise") == ("enterprise", "active")
    assert plan_of(offline=True) == ("free", "none")


def test_a_currency_fixed_by_a_subscription_wins_over_the_asked_one() -> None:
    assert customer_currency(fixed="eur", requested="usd", catalog_currency="usd") == ("eur", True)
    assert customer_currency(fixed=None, requested="eur", catalog_currency="usd") == ("eur", False)
    assert customer_currency(fixed=None, requested=None, catalog_currency="usd") == ("usd", False)


def terms(plan: str, interval: str = "month", seats: int | None = None):  # type: ignore[no-untyped-def]
    return subscription_terms(CATALOG, plan_id=plan, interval=interval, currency="usd", seats=seats)


def current(plan: str, interval: str, seats: int, amount: int) -> CurrentTerms:
    return CurrentTerms(plan, interval, "usd", seats, amount)


@pytest.mark.parametrize(
    ("now", "wanted", "timing"),
    [
        (current("pro", "month", 1, 2900), terms("team", seats=3), ChangeTiming.NOW),
        (current("team", "month", 3, 1200), terms("pro"), ChangeTiming.PERIOD_END),
        (current("pro", "month", 1, 2900), terms("pro", "year"), ChangeTiming.NOW),
        (current("pro", "year", 1, 29000), terms("pro", "month"), ChangeTiming.PERIOD_END),
        (current("team", "month", 3, 1200), terms("team", seats=5), ChangeTiming.NOW),
        (current("team", "month", 3, 1200), terms("team", seats=2), ChangeTiming.PERIOD_END),
        (current("pro", "month", 1, 2900), terms("pro"), ChangeTiming.NOTHING),
    ],
)
def test_upgrades_apply_now_and_downgrades_at_period_end(
    now: CurrentTerms, wanted: object, timing: ChangeTiming
) -> None:
    assert change_timing(now, wanted, at_period_end=None) is timing  # type: ignore[arg-type]


def test_the_request_can_ask_for_now_or_period_end() -> None:
    downgrade = (current("team", "month", 3, 1200), terms("pro"))
    assert change_timing(*downgrade, at_period_end=False) is ChangeTiming.NOW
    upgrade = (current("pro", "month", 1, 2900), terms("team", seats=3))
    assert change_timing(*upgrade, at_period_end=True) is ChangeTiming.PERIOD_END


def test_incremental_seats_never_go_down() -> None:
    assert seats_after(5, 2, "exact") == 2
    assert seats_after(5, 2, "incremental") == 5
    assert seats_after(5, 8, "incremental") == 8


def test_seats_stay_within_the_plans_bounds() -> None:
    team = CATALOG.plan("team")
    assert check_seats(team, None) == 2
    assert check_seats(team, 200) == 200
    for bad in (1, 201, 0, -4):
        with pytest.raises(InvalidRequest) as raised:
            check_seats(team, bad)
        assert raised.value.param == "seats"
    assert check_seats(CATALOG.plan("pro"), None) == 1
    with pytest.raises(InvalidRequest, match="not priced per seat"):
        check_seats(CATALOG.plan("pro"), 3)


def test_terms_carry_the_overage_prices_of_the_currency() -> None:
    team = subscription_terms(CATALOG, plan_id="team", interval="year", currency="eur", seats=4)
    assert (team.lookup_key, team.quantity) == ("tollgate_team_year_eur", 4)
    assert team.overage_lookup_keys == {"runs": "tollgate_team_runs_year_eur"}
    with pytest.raises(InvalidRequest, match="it is priced in usd"):
        subscription_terms(CATALOG, plan_id="pro", interval="month", currency="eur", seats=None)
    with pytest.raises(InvalidRequest, match="is free"):
        subscription_terms(CATALOG, plan_id="free", interval="month", currency="usd", seats=None)


def test_collection_follows_the_plan_unless_asked() -> None:
    enterprise = CATALOG.plan("enterprise")
    assert collection_for(enterprise, method=None, days_until_due=None).days_until_due == 30
    assert collection_for(enterprise, method=None, days_until_due=10).days_until_due == 10
    auto = collection_for(enterprise, method="charge_automatically", days_until_due=None)
    assert (auto.method, auto.days_until_due) == ("charge_automatically", None)
    with pytest.raises(InvalidRequest, match="1 to 365"):
        collection_for(enterprise, method="send_invoice", days_until_due=None)


def test_trial_days_come_from_the_plan_unless_given() -> None:
    assert trial_days_for(CATALOG.plan("pro"), None) == 14
    assert trial_days_for(CATALOG.plan("pro"), 0) == 0
    with pytest.raises(InvalidRequest):
        trial_days_for(CATALOG.plan("pro"), 731)


def test_request_ids_are_stable_for_the_same_request_in_the_same_state() -> None:
    asked = {"plan": "pro", "interval": "month"}
    assert request_id(None, asked, 3) == request_id(None, dict(reversed(asked.items())), 3)
    assert request_id(None, asked, 3) != request_id(None, asked, 4)
    assert request_id("app-key-1", asked, 3) == request_id("app-key-1", {}, 9)
    assert len(request_id("k" * 300, asked)) == 32


def test_metadata_is_checked_as_stripe_would() -> None:
    assert check_metadata({"seats": 4, "tier": "a"}) == {"seats": "4", "tier": "a"}
    for bad in ({"x" * 41: "v"}, {"k": "v" * 501}, {"k": {"nested": 1}}, {"a[b]": "v"}):
        with pytest.raises(InvalidRequest):
            check_metadata(bad)
