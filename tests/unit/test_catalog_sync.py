"""The catalog sync planner: what Stripe must hold, and the changes that get it there."""

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tollgate.domain.catalog import Catalog, Interval
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.domain.catalog_sync import (
    ArchivePrice,
    CatalogChange,
    CreateMeter,
    CreatePrice,
    CreateProduct,
    DesiredCatalog,
    DesiredPrice,
    ExistingMeter,
    ExistingPrice,
    ExistingProduct,
    ReplacePrice,
    UpdateMeter,
    UpdateProduct,
    UsageType,
    desired_stripe_catalog,
    plan_catalog_changes,
    price_fingerprint,
)
from tollgate.domain.errors import CatalogError

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.yaml"
EXAMPLE_DATA: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def example_data() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_DATA)


def desired_for(data: dict[str, Any] | None = None) -> DesiredCatalog:
    catalog: Catalog = parse_catalog(data if data is not None else example_data())
    return desired_stripe_catalog(catalog)


class StripeState:
    """What Stripe holds after syncing a desired catalog, as the gateway would read it back."""

    def __init__(self, desired: DesiredCatalog) -> None:
        self.meters = [
            ExistingMeter(f"mtr_{index}", meter.event_name, meter.display_name, "active")
            for index, meter in enumerate(desired.meters)
        ]
        self.products = [
            ExistingProduct(
                product.id, product.name, True, dict(product.metadata), product.unit_label
            )
            for product in desired.products
        ]
        self.prices = [
            stripe_price(price, f"price_{index}") for index, price in enumerate(desired.prices)
        ]

    def changes_to(self, desired: DesiredCatalog) -> list[CatalogChange]:
        return plan_catalog_changes(desired, self.products, self.prices, self.meters)

    def price(self, lookup_key: str) -> ExistingPrice:
        return next(price for price in self.prices if price.lookup_key == lookup_key)


def stripe_price(price: DesiredPrice, price_id: str, *, active: bool = True) -> ExistingPrice:
    """Read a price back the way Stripe returns it: strings, and transform_quantity or null."""
    transform = price.transform_quantity
    return ExistingPrice(
        id=price_id,
        lookup_key=price.lookup_key,
        product=price.product,
        active=active,
        fingerprint=price_fingerprint(
            currency=price.currency,
            interval=str(price.interval),
            usage_type=str(price.usage_type),
            unit_amount_decimal=price.unit_amount_decimal_text or str(price.unit_amount),
            meter_event_name=price.meter_event_name,
            divide_by=int(transform["divide_by"]) if transform else None,
        ),
    )


def kinds(changes: list[CatalogChange]) -> list[str]:
    return [change.kind for change in changes]


# What Stripe must hold


def test_each_priced_plan_gets_a_product_and_free_plans_get_none() -> None:
    desired = desired_for()
    plan_products = [product for product in desired.products if product.id.startswith("tg_plan_")]
    assert [(p.id, p.name, p.metadata) for p in plan_products] == [
        ("tg_plan_pro", "Pro", {"tollgate_plan": "pro"}),
        ("tg_plan_enterprise", "Enterprise", {"tollgate_plan": "enterprise"}),
        ("tg_plan_team", "Team", {"tollgate_plan": "team"}),
    ]


def test_each_metered_feature_with_overage_gets_a_product_and_a_summing_meter() -> None:
    desired = desired_for()
    feature_products = [p for p in desired.products if p.id.startswith("tg_feature_")]
    assert [(p.id, p.name, p.metadata) for p in feature_products] == [
        ("tg_feature_runs", "Workflow runs", {"tollgate_feature": "runs"}),
        ("tg_feature_storage_gb", "Storage", {"tollgate_feature": "storage_gb"}),
        ("tg_feature_cpu_seconds", "CPU time", {"tollgate_feature": "cpu_seconds"}),
    ]
    assert [(m.event_name, m.display_name, m.formula) for m in desired.meters] == [
        ("tollgate_runs", "Workflow runs", "sum"),
        ("tollgate_storage_gb", "Storage", "sum"),
        ("tollgate_cpu_seconds", "CPU time", "sum"),
    ]


def test_metered_feature_without_overage_anywhere_needs_no_meter_or_product() -> None:
    data = example_data()
    data["features"]["api_calls"] = {"type": "metered", "name": "API calls"}
    data["plans"]["pro"]["features"]["api_calls"] = {"included": 5000}
    desired = desired_for(data)
    assert "tollgate_api_calls" not in [meter.event_name for meter in desired.meters]
    assert "tg_feature_api_calls" not in [product.id for product in desired.products]


def test_base_prices_are_licensed_with_whole_unit_amounts() -> None:
    prices = {price.lookup_key: price for price in desired_for().prices}
    pro_month = prices["tollgate_pro_month_usd"]
    assert pro_month.product == "tg_plan_pro"
    assert (pro_month.interval, pro_month.currency) == (Interval.MONTH, "usd")
    assert pro_month.usage_type is UsageType.LICENSED
    assert (pro_month.unit_amount, pro_month.unit_amount_decimal) == (2900, None)
    assert pro_month.transform_quantity is None
    assert pro_month.metadata == {
        "tollgate_plan": "pro",
        "tollgate_interval": "month",
        "tollgate_plan_version": "1",
    }
    # Per-seat plans use the same shape: the subscription quantity carries the seats.
    assert prices["tollgate_team_year_eur"].unit_amount == 11000
    assert prices["tollgate_team_year_eur"].usage_type is UsageType.LICENSED


def test_overage_prices_are_metered_per_plan_feature_interval_and_currency() -> None:
    prices = {price.lookup_key: price for price in desired_for().prices}
    runs = prices["tollgate_team_runs_month_eur"]
    assert runs.product == "tg_feature_runs"
    assert runs.usage_type is UsageType.METERED
    assert runs.meter_event_name == "tollgate_runs"
    assert runs.unit_amount is None
    assert runs.unit_amount_decimal == Decimal(40)
    assert runs.transform_quantity == {"divide_by": 1000, "round": "up"}
    assert runs.metadata == {
        "tollgate_plan": "team",
        "tollgate_interval": "month",
        "tollgate_feature": "runs",
        "tollgate_plan_version": "1",
    }


def test_overage_price_per_single_unit_has_no_quantity_transform() -> None:
    prices = {price.lookup_key: price for price in desired_for().prices}
    cpu = prices["tollgate_enterprise_cpu_seconds_year_usd"]
    assert cpu.unit_amount_decimal == Decimal("0.5")
    assert cpu.unit_amount_decimal_text == "0.5"
    assert cpu.transform_quantity is None


def test_every_lookup_key_is_distinct_and_prefixed() -> None:
    keys = [price.lookup_key for price in desired_for().prices]
    assert len(keys) == len(set(keys)) == 20
    assert all(key.startswith("tollgate_") for key in keys)


def test_ids_whose_lookup_keys_collide_are_refused() -> None:
    data = example_data()
    data["plans"]["pro_runs"] = {
        "name": "Pro runs",
        "prices": [{"interval": "month", "currency": "usd", "amount": "5.00"}],
    }
    with pytest.raises(CatalogError) as caught:
        desired_for(data)
    assert str(caught.value) == (
        "plans.pro_runs: its Stripe lookup key tollgate_pro_runs_month_usd is also that of "
        "plan 'pro''s runs overage price; rename a plan or feature"
    )


def test_price_fingerprint_treats_stripe_strings_like_desired_decimals() -> None:
    from_stripe = price_fingerprint(
        currency="USD",
        interval="month",
        usage_type="licensed",
        unit_amount_decimal="2900.000",
        divide_by=1,
    )
    desired = {price.lookup_key: price for price in desired_for().prices}
    assert from_stripe == desired["tollgate_pro_month_usd"].fingerprint


# The changes that get Stripe there


def test_empty_stripe_gets_everything_created_dependencies_first() -> None:
    desired = desired_for()
    changes = plan_catalog_changes(desired, [], [], [])
    assert kinds(changes) == ["create_meter"] * 3 + ["create_product"] * 6 + ["create_price"] * 20
    assert [c.meter for c in changes if isinstance(c, CreateMeter)] == list(desired.meters)
    assert [c.product for c in changes if isinstance(c, CreateProduct)] == list(desired.products)
    created = [change for change in changes if isinstance(change, CreatePrice)]
    assert [change.price for change in created] == list(desired.prices)
    assert not any(change.transfer_lookup_key for change in created)


def test_identical_stripe_state_needs_no_changes() -> None:
    desired = desired_for()
    assert StripeState(desired).changes_to(desired) == []


def test_syncing_twice_is_a_no_op() -> None:
    desired = desired_for()
    state = StripeState(desired)
    state.prices.append(stripe_price(desired.prices[0], "price_old", active=False))
    assert state.changes_to(desired) == []


def test_changed_plan_amount_replaces_that_one_price() -> None:
    state = StripeState(desired_for())
    data = example_data()
    data["plans"]["pro"]["prices"][0]["amount"] = "39.00"
    changes = state.changes_to(desired_for(data))
    assert len(changes) == 1
    [change] = changes
    assert isinstance(change, ReplacePrice)
    assert change.old == state.price("tollgate_pro_month_usd")
    assert change.price.unit_amount == 3900
    assert change.describe() == (
        "~ price tollgate_pro_month_usd: $29.00/month -> $39.00/month "
        "(new price, lookup key moves, old price archived)"
    )


def test_changed_overage_unit_replaces_each_of_its_prices() -> None:
    state = StripeState(desired_for())
    data = example_data()
    data["plans"]["pro"]["features"]["runs"]["overage"]["per"] = 100
    changes = state.changes_to(desired_for(data))
    assert all(isinstance(change, ReplacePrice) for change in changes)
    assert [change.price.lookup_key for change in changes if isinstance(change, ReplacePrice)] == [
        "tollgate_pro_runs_month_usd",
        "tollgate_pro_runs_year_usd",
    ]
    assert changes[0].describe() == (
        "~ price tollgate_pro_runs_month_usd: $0.50 per 1000 tollgate_runs/month -> "
        "$0.50 per 100 tollgate_runs/month (new price, lookup key moves, old price archived)"
    )


def test_price_on_another_product_is_replaced() -> None:
    desired = desired_for()
    state = StripeState(desired)
    old = state.price("tollgate_pro_month_usd")
    state.prices[state.prices.index(old)] = ExistingPrice(
        old.id, old.lookup_key, "prod_manual", True, old.fingerprint
    )
    [change] = state.changes_to(desired)
    assert isinstance(change, ReplacePrice)
    assert change.describe().endswith("old price archived, product prod_manual -> tg_plan_pro)")


def test_removed_plan_has_its_prices_archived() -> None:
    state = StripeState(desired_for())
    data = example_data()
    del data["plans"]["team"]
    changes = state.changes_to(desired_for(data))
    archived = [change.old.id for change in changes if isinstance(change, ArchivePrice)]
    team_prices = sorted(
        (price for price in state.prices if (price.lookup_key or "").startswith("tollgate_team_")),
        key=lambda price: price.lookup_key or "",
    )
    assert len(changes) == len(archived) == 8
    assert archived == [price.id for price in team_prices]
    assert changes[0].describe() == (
        "- price tollgate_team_month_eur: €11.00/month (archived; current subscribers keep it)"
    )


def test_archivals_come_after_creations() -> None:
    state = StripeState(desired_for())
    data = example_data()
    data["plans"]["solo"] = data["plans"].pop("pro") | {"name": "Solo"}
    changes = state.changes_to(desired_for(data))
    order = kinds(changes)
    assert order.index("archive_price") > max(
        index for index, kind in enumerate(order) if kind != "archive_price"
    )
    assert order[0] == "create_product"


def test_prices_without_tollgate_lookup_keys_are_left_alone() -> None:
    desired = desired_for()
    state = StripeState(desired)
    fingerprint = state.prices[0].fingerprint
    state.prices.append(ExistingPrice("price_hand", "legacy_pro", "prod_x", True, fingerprint))
    state.prices.append(ExistingPrice("price_nokey", None, "tg_plan_pro", True, fingerprint))
    assert state.changes_to(desired) == []


def test_archived_product_is_reactivated() -> None:
    desired = desired_for()
    state = StripeState(desired)
    state.products[0] = ExistingProduct("tg_plan_pro", "Pro", False, {"tollgate_plan": "pro"})
    [change] = state.changes_to(desired)
    assert isinstance(change, UpdateProduct)
    assert change.product.id == "tg_plan_pro"
    assert change.describe() == "~ product tg_plan_pro: reactivated"


def test_renamed_plan_updates_its_product() -> None:
    state = StripeState(desired_for())
    data = example_data()
    data["plans"]["pro"]["name"] = "Professional"
    [change] = state.changes_to(desired_for(data))
    assert change.describe() == "~ product tg_plan_pro: name 'Pro' -> 'Professional'"


def test_product_metadata_is_restored_but_extra_keys_are_left_alone() -> None:
    desired = desired_for()
    state = StripeState(desired)
    state.products[1] = ExistingProduct("tg_plan_enterprise", "Enterprise", True, {"crm": "42"})
    state.products[2] = ExistingProduct(
        "tg_plan_team", "Team", True, {"tollgate_plan": "team", "crm": "7"}
    )
    [change] = state.changes_to(desired)
    assert change.describe() == "~ product tg_plan_enterprise: metadata set"


def test_missing_meter_is_created_and_inactive_one_reactivated() -> None:
    desired = desired_for()
    state = StripeState(desired)
    state.meters = [
        ExistingMeter("mtr_0", "tollgate_runs", "Workflow runs", "inactive"),
        ExistingMeter("mtr_1", "tollgate_storage_gb", "Disk", "active"),
    ]
    changes = state.changes_to(desired)
    assert [change.describe() for change in changes] == [
        "~ meter tollgate_runs: reactivated",
        "~ meter tollgate_storage_gb: display name 'Disk' -> 'Storage'",
        "+ meter tollgate_cpu_seconds (CPU time, sum)",
    ]
    assert isinstance(changes[0], UpdateMeter)
    assert changes[0].existing.id == "mtr_0"


def test_an_active_meter_wins_over_an_inactive_one_with_the_same_event_name() -> None:
    desired = desired_for()
    state = StripeState(desired)
    state.meters.insert(0, ExistingMeter("mtr_dead", "tollgate_runs", "Workflow runs", "inactive"))
    assert state.changes_to(desired) == []


def test_price_whose_key_an_archived_price_holds_is_created_taking_the_key() -> None:
    desired = desired_for()
    state = StripeState(desired)
    old = state.price("tollgate_pro_year_usd")
    state.prices[state.prices.index(old)] = ExistingPrice(
        old.id, old.lookup_key, old.product, False, old.fingerprint
    )
    [change] = state.changes_to(desired)
    assert isinstance(change, CreatePrice)
    assert change.transfer_lookup_key
    assert change.describe() == "+ price tollgate_pro_year_usd: $290.00/year"


def test_every_change_describes_itself_in_one_line() -> None:
    changes = plan_catalog_changes(desired_for(), [], [], [])
    lines = [change.describe() for change in changes]
    assert all("\n" not in line for line in lines)
    assert "+ meter tollgate_runs (Workflow runs, sum)" in lines
    assert "+ product tg_plan_pro (Pro)" in lines
    assert "+ price tollgate_enterprise_year_usd: $12,000.00/year" in lines
    assert "+ price tollgate_team_runs_month_eur: €0.40 per 1000 tollgate_runs/month" in lines
    assert (
        "+ price tollgate_enterprise_cpu_seconds_year_usd: $0.005 per tollgate_cpu_seconds/year"
        in lines
    )
