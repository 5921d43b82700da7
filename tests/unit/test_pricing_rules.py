"""Issue 20's pure rules: which changes make a plan version, and how deals change a plan."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.domain.deals import Deals, FeatureOverride, plan_with_deals
from tollgate.domain.plan_versions import (
    PlanVersion,
    assign_plan_versions,
    plan_fingerprint,
    versioned_catalog,
)

EXAMPLE = yaml.safe_load((Path(__file__).resolve().parents[2] / "catalog.example.yaml").read_text())
NOW = datetime(2026, 12, 6, tzinfo=UTC)


def catalog(change: Any = None) -> Catalog:
    data = copy.deepcopy(EXAMPLE)
    if change is not None:
        change(data)
    return parse_catalog(data)


def history_of(found: Catalog, versions: dict[str, int] | None = None) -> list[PlanVersion]:
    return [
        PlanVersion(plan_id, (versions or {}).get(plan_id, 1), plan_fingerprint(plan), 1)
        for plan_id, plan in found.plans.items()
    ]


def test_a_price_or_feature_change_makes_a_new_version_and_a_name_change_does_not() -> None:
    history = history_of(catalog())

    def dearer(data: dict[str, Any]) -> None:
        data["plans"]["pro"]["prices"][0]["amount"] = "39.00"

    def renamed(data: dict[str, Any]) -> None:
        data["plans"]["pro"]["name"] = "Professional"
        data["plans"]["pro"]["trial_days"] = 30

    def more_runs(data: dict[str, Any]) -> None:
        data["plans"]["team"]["features"]["runs"]["included"] = 300000

    assert assign_plan_versions(catalog(dearer), history) == (
        {"free": 1, "pro": 2, "enterprise": 1, "team": 1},
        [PlanVersion("pro", 2, plan_fingerprint(catalog(dearer).plans["pro"]))],
    )
    assert assign_plan_versions(catalog(renamed), history)[1] == []
    assert [v.plan for v in assign_plan_versions(catalog(more_runs), history)[1]] == ["team"]


def test_undoing_a_change_returns_to_the_version_it_had() -> None:
    first = catalog()

    def dearer(data: dict[str, Any]) -> None:
        data["plans"]["pro"]["prices"][0]["amount"] = "39.00"

    history = [
        *history_of(first),
        PlanVersion("pro", 2, plan_fingerprint(catalog(dearer).plans["pro"])),
    ]
    versions, new = assign_plan_versions(first, history)
    assert versions["pro"] == 1 and new == []


def test_an_earlier_version_sees_features_added_since_as_off() -> None:
    old = catalog()

    def with_audit(data: dict[str, Any]) -> None:
        data["features"]["audit_log"] = {"type": "boolean", "name": "Audit log"}
        data["plans"]["pro"]["features"]["audit_log"] = True
        data["plans"]["pro"]["prices"][0]["amount"] = "39.00"

    new = versioned_catalog(catalog(with_audit), {"pro": 2}, {"pro": {1: old.plans["pro"]}})
    assert new.plans["pro"].version == 2
    v1 = new.plan_version("pro", 1)
    assert v1.features["audit_log"].enabled is False
    assert v1.prices[0].amount_minor == 2900
    assert new.with_plan_version("pro", 1).plans["pro"] is v1
    assert new.with_plan_version("pro", 2) is new


def test_deals_add_add_ons_then_overrides_win_then_grants_add() -> None:
    def with_addon(data: dict[str, Any]) -> None:
        data["addons"] = {
            "extra_runs": {
                "name": "More runs",
                "prices": [{"interval": "month", "currency": "usd", "amount": "5.00"}],
                "grants": {"runs": 10000, "sso": True},
            }
        }

    found = catalog(with_addon)
    pro = found.plans["pro"]
    deals = Deals(
        overrides=(
            FeatureOverride("workflows", limit=3),
            FeatureOverride("marketplace", enabled=False, ends_at=NOW + timedelta(days=1)),
        ),
        grants={"runs": 500},
        addons={"extra_runs": 2},
    )
    dealt = plan_with_deals(pro, deals, NOW, found.addons)
    assert dealt.features["runs"].included == 100_000 + 20_000 + 500
    assert dealt.features["sso"].enabled is True
    assert dealt.features["workflows"].limit == 3
    assert dealt.features["marketplace"].enabled is False
    later = plan_with_deals(pro, deals, NOW + timedelta(days=1), found.addons)
    assert later.features["marketplace"].enabled is True  # the override ended
    assert deals.valid_until(NOW) == NOW + timedelta(days=1)


def test_a_capacity_add_on_raises_a_limit_and_a_seat_cap_per_unit() -> None:
    def with_capacity(data: dict[str, Any]) -> None:
        data["plans"]["pro"]["features"]["workflows"] = 3
        data["plans"]["pro"]["seats"] = {"min": 1, "max": 5}
        data["addons"] = {
            "more_room": {
                "name": "5 more workflows and 2 more seats",
                "prices": [{"interval": "month", "currency": "usd", "amount": "9.00"}],
                "grants": {"workflows": 5, "seats": 2},
            }
        }

    found = catalog(with_capacity)
    pro = found.plans["pro"]
    assert (pro.features["workflows"].limit, pro.features["seats"].limit) == (3, 5)
    dealt = plan_with_deals(pro, Deals(addons={"more_room": 2}), NOW, found.addons)
    assert dealt.features["workflows"].limit == 3 + 2 * 5
    assert dealt.features["seats"].limit == 5 + 2 * 2
