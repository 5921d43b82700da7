"""The catalog format: parsing, every validation rule, and the model's helpers."""

import copy
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tollgate.catalog_file import example_catalog_path, load_catalog_file
from tollgate.domain.catalog import (
    Aggregation,
    Catalog,
    CollectionMethod,
    FeatureType,
    Interval,
    Overage,
    PlanPrice,
    SeatPolicy,
)
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.domain.errors import (
    CatalogError,
    CatalogProblem,
    Conflict,
    InvalidRequest,
    NotFound,
    TollgateError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_EXAMPLE = REPO_ROOT / "catalog.example.yaml"
PACKAGED_EXAMPLE = REPO_ROOT / "src" / "tollgate" / "catalog.example.yaml"
EXAMPLE_DATA: dict[str, Any] = yaml.safe_load(ROOT_EXAMPLE.read_text(encoding="utf-8"))


def example_data() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_DATA)


def example_catalog() -> Catalog:
    return parse_catalog(example_data())


def problems_after(change: Callable[[dict[str, Any]], object]) -> list[str]:
    """Apply `change` to the example data and return the problems it causes, as text."""
    data = example_data()
    change(data)
    with pytest.raises(CatalogError) as caught:
        parse_catalog(data)
    return [str(problem) for problem in caught.value.problems]


def minimal(**extra: Any) -> dict[str, Any]:
    return {"plans": {"free": {"name": "Free"}}, **extra}


# The example file


def test_both_copies_of_the_example_catalog_are_identical() -> None:
    assert ROOT_EXAMPLE.read_bytes() == PACKAGED_EXAMPLE.read_bytes()


@pytest.mark.parametrize("path", [ROOT_EXAMPLE, PACKAGED_EXAMPLE])
def test_example_catalog_file_loads(path: Path) -> None:
    catalog = load_catalog_file(path)
    assert list(catalog.plans) == ["free", "pro", "enterprise", "team"]
    assert catalog.currency == "usd"
    assert catalog.default_plan == "free"


def test_example_catalog_is_found_inside_the_installed_package() -> None:
    assert example_catalog_path().read_bytes() == ROOT_EXAMPLE.read_bytes()


def test_example_features_have_their_types_and_aggregations() -> None:
    catalog = example_catalog()
    assert catalog.features["runs"].type is FeatureType.METERED
    assert catalog.features["runs"].unit == "run"
    assert catalog.features["storage_gb"].aggregation is Aggregation.MAX
    assert catalog.features["workflows"].type is FeatureType.LIMIT
    assert catalog.features["sso"].name == "Single sign-on"
    assert catalog.features["seats"].type is FeatureType.SEATS


def test_free_plan_has_no_prices_and_a_hard_included_quota() -> None:
    free = example_catalog().plan("free")
    assert free.is_free
    assert free.prices == ()
    runs = free.feature("runs")
    assert (runs.enabled, runs.included, runs.hard, runs.limit) == (True, 1000, True, 1000)
    assert runs.overage is None
    assert runs.warn_at == (80, 100)
    assert free.feature("workflows").limit == 1


def test_pro_plan_has_prices_trial_and_soft_metered_overage() -> None:
    pro = example_catalog().plan("pro")
    assert not pro.is_free
    assert pro.trial_days == 14
    assert pro.prices == (
        PlanPrice(Interval.MONTH, "usd", 2900),
        PlanPrice(Interval.YEAR, "usd", 29000),
    )
    runs = pro.feature("runs")
    assert runs.hard is False
    assert runs.limit is None
    assert runs.included == 100000
    assert runs.overage == Overage({"usd": Decimal(50)}, per=1000)
    assert pro.feature("workflows").limit is None
    assert pro.feature("workflows").enabled
    assert pro.feature("marketplace").enabled


def test_enterprise_plan_is_custom_invoiced_with_a_sub_cent_overage() -> None:
    enterprise = example_catalog().plan("enterprise")
    assert enterprise.custom
    assert enterprise.collection_method is CollectionMethod.SEND_INVOICE
    assert enterprise.days_until_due == 30
    assert enterprise.feature("cpu_seconds").overage == Overage({"usd": Decimal("0.5")}, per=1)
    assert enterprise.intervals == (Interval.YEAR,)


def test_team_plan_is_per_seat_in_two_currencies() -> None:
    team = example_catalog().plan("team")
    assert team.per_seat
    assert team.seats == SeatPolicy(min=2, max=200)
    assert team.currencies == ("eur", "usd")
    assert team.intervals == (Interval.MONTH, Interval.YEAR)
    overage = team.feature("runs").overage
    assert overage is not None
    assert overage.amount_in("EUR") == Decimal(40)
    assert overage.amount_in("usd") == Decimal(45)


def test_features_a_plan_does_not_list_are_off() -> None:
    free = example_catalog().plan("free")
    assert free.feature("sso").enabled is False
    storage = free.feature("storage_gb")
    assert (storage.enabled, storage.included, storage.hard, storage.limit) == (False, 0, True, 0)
    team = example_catalog().plan("team")
    assert (team.feature("workflows").enabled, team.feature("workflows").limit) == (True, None)
    assert (team.feature("sso").enabled, team.feature("cpu_seconds").enabled) == (False, False)


def test_seats_are_capped_by_a_per_seat_plans_maximum_and_uncounted_on_flat_plans() -> None:
    catalog = example_catalog()
    assert catalog.plan("team").feature("seats").limit == 200
    assert catalog.plan("pro").feature("seats").enabled
    assert catalog.plan("pro").feature("seats").limit is None


def test_catalog_lists_the_currencies_its_plans_are_priced_in() -> None:
    assert example_catalog().currencies == ("eur", "usd")


# Model helpers


def test_unknown_plan_raises_not_found_listing_the_plans() -> None:
    with pytest.raises(NotFound, match=r"unknown plan 'gold' \(plans are: enterprise, free, pro"):
        example_catalog().plan("gold")


def test_unknown_feature_lookup_raises_not_found_listing_the_features() -> None:
    with pytest.raises(NotFound, match="unknown feature 'x'"):
        example_catalog().feature("x")
    with pytest.raises(NotFound, match="unknown feature 'x'"):
        example_catalog().plan("pro").feature("x")


def test_price_for_finds_the_price_of_an_interval_and_currency() -> None:
    team = example_catalog().plan("team")
    assert team.price_for("year", "EUR") == PlanPrice(Interval.YEAR, "eur", 11000)
    assert team.price_for("month", "usd").money.format() == "$12.00"


def test_price_for_a_currency_the_plan_lacks_names_the_currencies_it_has() -> None:
    with pytest.raises(InvalidRequest) as caught:
        example_catalog().plan("team").price_for("month", "gbp")
    assert caught.value.message == "plan 'team' has no price in gbp; it is priced in eur, usd"
    assert caught.value.param == "currency"


def test_price_for_an_interval_the_plan_lacks_names_the_intervals_it_has() -> None:
    with pytest.raises(InvalidRequest) as caught:
        example_catalog().plan("enterprise").price_for("month", "usd")
    assert caught.value.message == (
        "plan 'enterprise' has no month price in usd; in usd it is billed per year"
    )
    assert caught.value.param == "interval"


@pytest.mark.parametrize(
    ("plan", "interval", "currency", "message"),
    [
        ("free", "month", "usd", "plan 'free' is free and has no prices"),
        ("pro", "week", "usd", "'week' is not a billing interval"),
        ("pro", "month", "xyz", "'xyz' is not an ISO 4217 currency code"),
    ],
)
def test_price_for_rejects_bad_requests(
    plan: str, interval: str, currency: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        example_catalog().plan(plan).price_for(interval, currency)


# Validation: every rule reports the path of the offending key


def test_unknown_feature_in_plan_is_reported_with_its_path() -> None:
    problems = problems_after(lambda d: d["plans"]["free"]["features"].update(runz=5))
    assert problems == [
        "plans.free.features.runz: unknown feature 'runz' (features are: cpu_seconds, "
        "marketplace, runs, seats, sso, storage_gb, workflows); did you mean 'runs'?"
    ]


def test_unknown_currency_in_a_price_is_reported_with_its_index() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["prices"][1].update(currency="usdd"))
    assert problems == ["plans.pro.prices[1].currency: 'usdd' is not an ISO 4217 currency code"]


def test_unknown_catalog_currency_is_reported() -> None:
    problems = problems_after(lambda d: d.update(currency="dollars"))
    assert "currency: 'dollars' is not an ISO 4217 currency code" in problems


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda d: d.update(plan={}),
            "plan: unknown key 'plan' (expected one of: addons, coupons, credit_overdraft_product, "
            "credit_packs, currency, customer_spend_caps, default_plan, features, plans); did you "
            "mean 'plans'?",
        ),
        (
            lambda d: d["plans"]["pro"].update(trail_days=7),
            "plans.pro.trail_days: unknown key 'trail_days' (expected one of: credits, custom, "
            "features, invoice, name, on_start_credits, payment_methods, prices, reduced_access, "
            "seats, trial_days); did you mean 'trial_days'?",
        ),
        (
            lambda d: d["plans"]["pro"]["prices"][0].update(amout="1"),
            "plans.pro.prices[0].amout: unknown key 'amout' (expected one of: amount, currency, "
            "interval); did you mean 'amount'?",
        ),
        (
            lambda d: d["features"]["runs"].update(units="run"),
            "features.runs.units: unknown key 'units' (expected one of: aggregation, "
            "credits_per_unit, name, type, unit); did you mean 'unit'?",
        ),
        (
            lambda d: d["plans"]["pro"]["features"]["runs"].update(include=5),
            "plans.pro.features.runs.include: unknown key 'include' (expected one of: included, "
            "limit, overage, rate, warn_at); did you mean 'included'?",
        ),
        (
            lambda d: d["plans"]["pro"]["features"]["runs"]["overage"].update(each=1000),
            "plans.pro.features.runs.overage.each: unknown key 'each' (expected one of: amount, "
            "per)",
        ),
        (
            lambda d: d["plans"]["enterprise"]["invoice"].update(net=30),
            "plans.enterprise.invoice.net: unknown key 'net' (expected one of: collection_method, "
            "days_until_due)",
        ),
        (
            lambda d: d["plans"]["team"]["seats"].update(maximum=3),
            "plans.team.seats.maximum: unknown key 'maximum' (expected one of: max, min); "
            "did you mean 'max'?",
        ),
    ],
)
def test_unknown_keys_anywhere_are_reported(
    change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    assert problems_after(change) == [problem]


def test_a_yaml_boolean_key_gets_a_hint_to_quote_it() -> None:
    with pytest.raises(CatalogError, match="YAML reads on/off/yes/no as booleans"):
        parse_catalog(yaml.safe_load("plans:\n  on: {name: On}\n"))


@pytest.mark.parametrize("bad_id", ["Pro", "1pro", "pro-plan", "_pro", "p" * 41, ""])
def test_plan_ids_must_be_lowercase_identifiers(bad_id: str) -> None:
    problems = problems_after(lambda d: d["plans"].update({bad_id: {"name": "X"}}))
    assert problems == [
        f"plans.{bad_id}: invalid plan id {bad_id!r}: use lowercase letters, digits and _, "
        "start with a letter, at most 40 characters"
    ]


def test_forty_character_ids_are_allowed() -> None:
    catalog = parse_catalog({"plans": {"p" * 40: {"name": "Long"}}})
    assert list(catalog.plans) == ["p" * 40]


def test_feature_ids_must_be_lowercase_identifiers() -> None:
    problems = problems_after(lambda d: d["features"].update({"Runs": {"type": "boolean"}}))
    assert problems == [
        "features.Runs: invalid feature id 'Runs': use lowercase letters, digits and _, "
        "start with a letter, at most 40 characters"
    ]


def test_catalog_without_plans_is_reported() -> None:
    assert problems_after(lambda d: d.pop("plans")) == [
        "plans: missing; the catalog needs at least one plan"
    ]
    assert problems_after(lambda d: d.update(plans={})) == [
        "plans: empty; the catalog needs at least one plan"
    ]


def test_plan_without_name_is_reported() -> None:
    assert problems_after(lambda d: d["plans"]["pro"].pop("name")) == [
        "plans.pro.name: missing; every plan needs a name"
    ]


def test_catalog_that_is_not_a_mapping_is_reported() -> None:
    with pytest.raises(CatalogError, match="the catalog must be a mapping"):
        parse_catalog(["plans"])  # type: ignore[arg-type]


def test_feature_without_a_known_type_is_reported() -> None:
    problems = problems_after(lambda d: d["features"]["runs"].update(type="meterd"))
    assert problems == [
        "features.runs.type: 'meterd' is not one of: boolean, limit, metered, seats; "
        "did you mean 'metered'?"
    ]
    problems = problems_after(lambda d: d["features"]["sso"].pop("type"))
    assert problems == ["features.sso.type: missing; one of: boolean, limit, metered, seats"]


def test_broken_feature_is_reported_once_not_again_in_every_plan() -> None:
    problems = problems_after(lambda d: d["features"]["runs"].update(type="gauge"))
    assert len(problems) == 1


def test_aggregation_must_be_sum_max_or_last() -> None:
    problems = problems_after(lambda d: d["features"]["runs"].update(aggregation="avg"))
    assert problems == ["features.runs.aggregation: 'avg' is not one of: sum, max, last"]


def test_aggregation_defaults_to_sum() -> None:
    data = example_data()
    del data["features"]["storage_gb"]["aggregation"]
    assert parse_catalog(data).features["storage_gb"].aggregation is Aggregation.SUM


def test_only_metered_features_take_unit_or_aggregation() -> None:
    problems = problems_after(lambda d: d["features"]["sso"].update(aggregation="max"))
    assert problems == ["features.sso.aggregation: only metered features take 'aggregation'"]


def test_only_one_seats_feature_is_allowed() -> None:
    problems = problems_after(lambda d: d["features"].update(members={"type": "seats"}))
    assert problems == ["features.members: only one feature may have type seats (already: seats)"]


def test_feature_name_defaults_to_its_id() -> None:
    data = minimal(features={"api": {"type": "boolean"}})
    assert parse_catalog(data).features["api"].name == "api"


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_boolean_feature_takes_true_or_false(value: object) -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["features"].update(marketplace=value))
    assert problems == [
        f"plans.pro.features.marketplace: boolean feature 'marketplace' takes true or false, "
        f"not {value!r}"
    ]


@pytest.mark.parametrize("value", [-1, 2.5, "lots", True, None])
def test_limit_feature_takes_a_non_negative_count_or_unlimited(value: object) -> None:
    problems = problems_after(lambda d: d["plans"]["free"]["features"].update(workflows=value))
    assert problems == [
        f"plans.free.features.workflows: limit feature 'workflows' takes a whole number >= 0 "
        f"or unlimited, not {value!r}"
    ]


def test_limit_feature_with_zero_is_off() -> None:
    data = example_data()
    data["plans"]["free"]["features"]["workflows"] = 0
    workflows = parse_catalog(data).plan("free").feature("workflows")
    assert (workflows.enabled, workflows.limit) == (False, 0)


def test_metered_feature_takes_a_mapping() -> None:
    problems = problems_after(lambda d: d["plans"]["free"]["features"].update(runs=1000))
    assert problems == [
        "plans.free.features.runs: metered feature 'runs' takes a mapping such as "
        "{included: 1000}, not 1000"
    ]


@pytest.mark.parametrize("value", [-1, "many", 1.5])
def test_metered_included_must_be_a_count_or_unlimited(value: object) -> None:
    problems = problems_after(
        lambda d: d["plans"]["free"]["features"]["runs"].update(included=value)
    )
    assert problems == [
        f"plans.free.features.runs.included: must be a whole number >= 0, not {value!r}"
    ]


def test_metered_included_may_be_unlimited() -> None:
    data = example_data()
    data["plans"]["free"]["features"]["runs"] = {"included": "unlimited"}
    runs = parse_catalog(data).plan("free").feature("runs")
    assert (runs.enabled, runs.included, runs.limit) == (True, None, None)


def test_overage_with_unlimited_included_is_reported() -> None:
    problems = problems_after(
        lambda d: d["plans"]["pro"]["features"]["runs"].update(included="unlimited")
    )
    assert problems == [
        "plans.pro.features.runs.overage: never applies: the included quantity is unlimited"
    ]


def test_hard_limit_with_overage_is_reported() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["features"]["runs"].update(limit="hard"))
    assert problems == [
        "plans.pro.features.runs.limit: a hard limit cannot have overage: use past it is "
        "refused, so it is never billed (use limit: soft, or remove the overage)"
    ]


def test_soft_limit_without_overage_warns_but_never_bills() -> None:
    data = example_data()
    data["plans"]["free"]["features"]["runs"]["limit"] = "soft"
    runs = parse_catalog(data).plan("free").feature("runs")
    assert (runs.hard, runs.overage, runs.limit, runs.enabled) == (False, None, None, True)


def test_limit_must_be_hard_or_soft() -> None:
    problems = problems_after(
        lambda d: d["plans"]["free"]["features"]["runs"].update(limit="strict")
    )
    assert problems == ["plans.free.features.runs.limit: 'strict' is not one of: hard, soft"]


def test_warn_at_takes_percentages_from_1_to_100() -> None:
    problems = problems_after(
        lambda d: d["plans"]["pro"]["features"]["runs"].update(warn_at=[0, 50, 101, "x"])
    )
    assert problems == [
        "plans.pro.features.runs.warn_at[0]: must be a whole number from 1 to 100, not 0",
        "plans.pro.features.runs.warn_at[2]: must be a whole number from 1 to 100, not 101",
        "plans.pro.features.runs.warn_at[3]: must be a whole number from 1 to 100, not 'x'",
    ]
    problems = problems_after(lambda d: d["plans"]["pro"]["features"]["runs"].update(warn_at=90))
    assert problems == ["plans.pro.features.runs.warn_at: must be a list of percentages, not 90"]


def test_warn_at_is_sorted_and_may_be_empty() -> None:
    data = example_data()
    data["plans"]["pro"]["features"]["runs"]["warn_at"] = [100, 50, 90, 50]
    data["plans"]["pro"]["features"]["storage_gb"]["warn_at"] = []
    pro = parse_catalog(data).plan("pro")
    assert pro.feature("runs").warn_at == (50, 90, 100)
    assert pro.feature("storage_gb").warn_at == ()


def test_seats_feature_takes_no_per_plan_value() -> None:
    problems = problems_after(lambda d: d["plans"]["team"]["features"].update(seats=10))
    assert problems == [
        "plans.team.features.seats: seats feature 'seats' takes no per-plan value; "
        "give the plan a `seats: {min, max}` block instead"
    ]


def test_seat_policy_needs_min_of_one_and_max_at_least_min() -> None:
    assert problems_after(lambda d: d["plans"]["team"]["seats"].update(min=0)) == [
        "plans.team.seats.min: must be a whole number >= 1, not 0"
    ]
    assert problems_after(lambda d: d["plans"]["team"]["seats"].update(max=1)) == [
        "plans.team.seats.max: must be a whole number >= 2, not 1"
    ]


def test_seat_policy_without_max_has_no_maximum() -> None:
    data = example_data()
    data["plans"]["team"]["seats"] = {"min": 3, "max": None}
    assert parse_catalog(data).plan("team").seats == SeatPolicy(min=3, max=None)
    data["plans"]["team"]["seats"] = {}
    assert parse_catalog(data).plan("team").seats == SeatPolicy(min=1, max=None)


def test_price_interval_must_be_month_or_year() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["prices"][0].update(interval="week"))
    assert problems == ["plans.pro.prices[0].interval: 'week' is not one of: month, year"]


def test_price_needs_interval_and_amount() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["prices"].append({"currency": "usd"}))
    assert problems == [
        "plans.pro.prices[2].interval: missing; one of: month, year",
        'plans.pro.prices[2].amount: missing; e.g. amount: "29.00"',
    ]


def test_price_currency_defaults_to_the_catalog_currency() -> None:
    data = minimal(currency="EUR")
    data["plans"]["paid"] = {"name": "Paid", "prices": [{"interval": "month", "amount": 9}]}
    catalog = parse_catalog(data)
    assert catalog.currency == "eur"
    assert catalog.plan("paid").prices == (PlanPrice(Interval.MONTH, "eur", 900),)


def test_plan_price_must_be_a_whole_number_of_minor_units() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["prices"][0].update(amount="29.005"))
    assert problems == [
        "plans.pro.prices[0].amount: amount '29.005' is finer than the smallest unit of usd (0.01)"
    ]


def test_plan_price_must_not_be_negative() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"]["prices"][0].update(amount="-29"))
    assert problems == ["plans.pro.prices[0].amount: amount '-29' must not be negative"]


def test_plan_price_in_a_zero_decimal_currency_is_whole_yen() -> None:
    data = minimal(currency="jpy")
    data["plans"]["paid"] = {"name": "Paid", "prices": [{"interval": "month", "amount": 500}]}
    assert parse_catalog(data).plan("paid").prices[0].amount_minor == 500


def test_duplicate_interval_and_currency_is_reported() -> None:
    problems = problems_after(
        lambda d: d["plans"]["pro"]["prices"].append(
            {"interval": "month", "currency": "USD", "amount": "39.00"}
        )
    )
    assert problems == ["plans.pro.prices[2]: duplicate month price in usd (also at prices[0])"]


def test_prices_must_be_a_list() -> None:
    problems = problems_after(lambda d: d["plans"]["pro"].update(prices={"month": "29"}))
    assert problems[0] == "plans.pro.prices: must be a list of prices, not a dict"


def test_overage_must_be_priced_in_every_currency_of_the_plan() -> None:
    problems = problems_after(
        lambda d: d["plans"]["team"]["features"]["runs"]["overage"].update(amount={"usd": "0.45"})
    )
    assert problems == [
        "plans.team.features.runs.overage.amount: no amount in eur; the plan is priced in "
        "eur, usd, so its overage needs an amount in each"
    ]


def test_single_overage_amount_is_in_the_catalog_currency() -> None:
    problems = problems_after(
        lambda d: d["plans"]["team"]["features"]["runs"]["overage"].update(amount="0.45")
    )
    assert problems == [
        "plans.team.features.runs.overage.amount: no amount in eur; the plan is priced in "
        "eur, usd, so its overage needs an amount in each"
    ]


def test_overage_in_a_currency_the_plan_is_not_priced_in_is_reported() -> None:
    problems = problems_after(
        lambda d: d["plans"]["team"]["features"]["runs"]["overage"]["amount"].update(gbp="0.35")
    )
    assert problems == [
        "plans.team.features.runs.overage.amount.gbp: the plan has no price in gbp "
        "(it is priced in eur, usd)"
    ]


def test_overage_currency_must_be_iso_4217() -> None:
    problems = problems_after(
        lambda d: d["plans"]["team"]["features"]["runs"]["overage"].update(
            amount={"usd": "0.45", "eur": "0.40", "euro": "1"}
        )
    )
    assert problems == [
        "plans.team.features.runs.overage.amount.euro: 'euro' is not an ISO 4217 currency code"
    ]


def test_free_plan_may_not_have_overage() -> None:
    problems = problems_after(
        lambda d: d["plans"]["free"]["features"].update(
            storage_gb={"included": 1, "overage": {"amount": "0.10", "per": 1}}
        )
    )
    assert problems == [
        "plans.free.features.storage_gb.overage: a free plan (no prices) cannot bill overage; "
        "add prices or remove it"
    ]


def test_overage_amount_must_be_positive_and_per_at_least_one() -> None:
    problems = problems_after(
        lambda d: d["plans"]["pro"]["features"]["runs"]["overage"].update(amount="0", per=0)
    )
    assert problems == [
        "plans.pro.features.runs.overage.per: must be a whole number >= 1, not 0",
        "plans.pro.features.runs.overage.amount: must be more than zero (to allow unbilled use "
        "past the included quantity, use limit: soft without overage)",
    ]


def test_overage_amount_may_be_finer_than_a_cent_within_twelve_places() -> None:
    problems = problems_after(
        lambda d: d["plans"]["pro"]["features"]["runs"]["overage"].update(
            amount="0.000000000000001"
        )
    )
    assert problems == [
        "plans.pro.features.runs.overage.amount: amount '0.000000000000001' is too precise "
        "for usd: at most 14 decimal places"
    ]


def test_overage_per_defaults_to_one_and_needs_an_amount() -> None:
    data = example_data()
    data["plans"]["pro"]["features"]["storage_gb"]["overage"] = {"amount": 0.1}
    storage = parse_catalog(data).plan("pro").feature("storage_gb")
    assert storage.overage == Overage({"usd": Decimal(10)}, per=1)
    problems = problems_after(
        lambda d: d["plans"]["pro"]["features"]["runs"].update(overage={"per": 1000})
    )
    assert problems == ['plans.pro.features.runs.overage.amount: missing; e.g. amount: "0.50"']


@pytest.mark.parametrize("value", [-1, 731, "14", True])
def test_trial_days_must_be_0_to_730(value: object) -> None:
    problems = problems_after(lambda d: d["plans"]["pro"].update(trial_days=value))
    assert problems == [
        f"plans.pro.trial_days: must be a whole number from 0 to 730, not {value!r}"
    ]


def test_free_plan_has_no_trial() -> None:
    problems = problems_after(lambda d: d["plans"]["free"].update(trial_days=7))
    assert problems == ["plans.free.trial_days: a free plan (no prices) has no trial"]


def test_custom_must_be_a_boolean() -> None:
    problems = problems_after(lambda d: d["plans"]["enterprise"].update(custom="yes"))
    assert problems == ["plans.enterprise.custom: must be true or false, not 'yes'"]


def test_collection_method_must_be_known() -> None:
    problems = problems_after(
        lambda d: d["plans"]["enterprise"]["invoice"].update(collection_method="invoice")
    )
    assert problems == [
        "plans.enterprise.invoice.collection_method: 'invoice' is not one of: "
        "charge_automatically, send_invoice; did you mean 'send_invoice'?"
    ]


def test_send_invoice_requires_days_until_due() -> None:
    problems = problems_after(lambda d: d["plans"]["enterprise"]["invoice"].pop("days_until_due"))
    assert problems == [
        "plans.enterprise.invoice.days_until_due: missing; send_invoice needs days_until_due "
        "(1 to 365)"
    ]


@pytest.mark.parametrize("value", [0, 366, "30"])
def test_days_until_due_must_be_1_to_365(value: object) -> None:
    problems = problems_after(
        lambda d: d["plans"]["enterprise"]["invoice"].update(days_until_due=value)
    )
    assert problems == [
        f"plans.enterprise.invoice.days_until_due: must be a whole number from 1 to 365, "
        f"not {value!r}"
    ]


def test_days_until_due_only_with_send_invoice() -> None:
    problems = problems_after(
        lambda d: d["plans"]["enterprise"]["invoice"].update(
            collection_method="charge_automatically"
        )
    )
    assert problems == [
        "plans.enterprise.invoice.days_until_due: only applies with collection_method: send_invoice"
    ]


def test_collection_method_defaults_to_charging_automatically() -> None:
    pro = example_catalog().plan("pro")
    assert pro.collection_method is CollectionMethod.CHARGE_AUTOMATICALLY
    assert pro.days_until_due is None


def test_default_plan_must_exist() -> None:
    problems = problems_after(lambda d: d.update(default_plan="fre"))
    assert problems == [
        "default_plan: unknown plan 'fre' (plans are: enterprise, free, pro, team); "
        "did you mean 'free'?"
    ]


def test_default_plan_must_be_free() -> None:
    problems = problems_after(lambda d: d.update(default_plan="pro"))
    assert problems == [
        "default_plan: plan 'pro' has prices; the default plan must be free, since customers "
        "land on it without paying"
    ]


def test_default_plan_may_be_absent_or_null() -> None:
    data = example_data()
    data["default_plan"] = None
    assert parse_catalog(data).default_plan is None
    del data["default_plan"]
    assert parse_catalog(data).default_plan is None


def test_default_plan_that_is_itself_invalid_is_not_also_called_unknown() -> None:
    problems = problems_after(lambda d: d["plans"]["free"].pop("name"))
    assert problems == ["plans.free.name: missing; every plan needs a name"]


def test_all_problems_are_reported_together_in_document_order() -> None:
    def break_many(data: dict[str, Any]) -> None:
        data["currency"] = "usdd"
        data["features"]["runs"]["aggregation"] = "avg"
        data["plans"]["free"]["features"]["runz"] = 1
        data["plans"]["pro"]["prices"][1]["interval"] = "weekly"
        data["plans"]["team"]["trial_days"] = 1000
        data["default_plan"] = "gratis"

    problems = problems_after(break_many)
    assert [problem.split(":")[0] for problem in problems] == [
        "currency",
        "features.runs.aggregation",
        "plans.free.features.runz",
        "plans.pro.prices[1].interval",
        "plans.team.trial_days",
        "default_plan",
    ]


def test_catalog_error_lists_each_problem_on_its_own_line() -> None:
    error = CatalogError(
        [CatalogProblem("plans.pro.name", "missing"), CatalogProblem("plans", "empty")]
    )
    assert str(error) == "plans.pro.name: missing\nplans: empty"
    assert error.type == "catalog_error"
    assert isinstance(error, TollgateError)


def test_errors_carry_their_api_type_and_param() -> None:
    assert InvalidRequest("bad", param="plan").to_json() == {
        "type": "invalid_request_error",
        "message": "bad",
        "param": "plan",
    }
    assert NotFound("gone").to_json() == {"type": "not_found", "message": "gone"}
    assert Conflict("clash").type == "conflict"


# The catalog file loader


def test_yaml_syntax_error_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("plans:\n  free:\n    name: [Free\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog_file(path)
    [problem] = caught.value.problems
    assert problem.path.startswith(f"{path}:4:1")
    assert problem.message.startswith("invalid YAML:")


def test_duplicate_yaml_key_is_reported_rather_than_silently_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "plans:\n  pro: {name: Pro}\n  pro: {name: Pro 2}\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog_file(path)
    assert str(caught.value) == f"{path}:3:3: invalid YAML: duplicate key 'pro'"


def test_missing_catalog_file_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError, match="cannot read: No such file or directory"):
        load_catalog_file(path)


def test_empty_catalog_file_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="the file is empty"):
        load_catalog_file(path)


def test_validation_problems_from_a_file_keep_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("plans:\n  free: {name: Free, trial_dayz: 3}\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"^plans\.free\.trial_dayz: unknown key"):
        load_catalog_file(path)


def test_yaml_anchors_and_merge_keys_may_share_plan_settings(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "features:\n"
        "  runs: {type: metered}\n"
        "plans:\n"
        "  free: &base\n"
        "    name: Free\n"
        "    features: {runs: {included: 10}}\n"
        "  hobby:\n"
        "    <<: *base\n"
        "    name: Hobby\n",
        encoding="utf-8",
    )
    hobby = load_catalog_file(path).plan("hobby")
    assert (hobby.name, hobby.feature("runs").included) == ("Hobby", 10)


# -- payment methods per plan (issue 21) -------------------------------------------------------


def test_a_plan_names_the_methods_it_accepts_and_its_card_limit_per_currency() -> None:
    data = example_data()
    data["plans"]["pro"]["payment_methods"] = {
        "accept": ["card", "us_bank_account"],
        "card_limit": {"USD": 20000},
    }
    catalog = parse_catalog(data)
    methods = catalog.plans["pro"].payment_methods
    assert methods is not None
    assert (methods.accept, dict(methods.card_limit)) == (
        ("card", "us_bank_account"),
        {"usd": 20000},
    )
    assert catalog.plans["team"].payment_methods is None  # any method, TOLLGATE_CARD_LIMITS


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"accept": ["card", "ach"]}, "plans.pro.payment_methods.accept[1]: 'ach' is not one of"),
        ({"accept": ["card", "card"]}, "plans.pro.payment_methods.accept[1]: card is listed twice"),
        ({"accept": []}, "plans.pro.payment_methods.accept: must be a list of one or more"),
        ({"acept": ["card"]}, "plans.pro.payment_methods.acept: unknown key 'acept'"),
        (
            {"accept": ["us_bank_account"], "card_limit": {"usd": 100}},
            "plans.pro.payment_methods.card_limit: a card limit needs card in accept",
        ),
        ({"card_limit": {"usd": -1}}, "plans.pro.payment_methods.card_limit.usd: must be a whole"),
        ({"card_limit": {"usd": "100.00"}}, "plans.pro.payment_methods.card_limit.usd: must be a"),
        (
            {"card_limit": {"eur": 100}},
            "plans.pro.payment_methods.card_limit.eur: the plan has no price in eur; "
            "it is priced in usd",
        ),
        ({"card_limit": {"dollars": 100}}, "plans.pro.payment_methods.card_limit.dollars:"),
    ],
)
def test_a_bad_payment_methods_entry_is_refused_by_its_path(
    entry: dict[str, Any], problem: str
) -> None:
    problems = problems_after(lambda d: d["plans"]["pro"].update({"payment_methods": entry}))
    assert any(text.startswith(problem) for text in problems), problems


def test_a_free_plan_takes_no_payment_methods() -> None:
    problems = problems_after(
        lambda d: d["plans"]["free"].update({"payment_methods": {"accept": ["card"]}})
    )
    assert problems == ["plans.free.payment_methods: a free plan (no prices) takes no payments"]
