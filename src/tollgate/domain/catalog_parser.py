"""Read the plans catalog ("plans as code") from parsed YAML: every problem listed by its path.

`parse_catalog` checks the whole document and raises one CatalogError naming each offending key
(`plans.pro.prices[1].currency: 'usdd' is not an ISO 4217 currency code`), or returns the
immutable Catalog (tollgate.domain.catalog).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from tollgate.domain.catalog import (
    DEFAULT_CURRENCY,
    DEFAULT_WARN_AT,
    ID_PATTERN,
    MAX_DAYS_UNTIL_DUE,
    MAX_TRIAL_DAYS,
    UNLIMITED,
    WINDOWS,
    Aggregation,
    Catalog,
    CollectionMethod,
    CreditPack,
    CreditProduct,
    Feature,
    FeatureType,
    Interval,
    OneTimePrice,
    Overage,
    PaymentMethods,
    Plan,
    PlanFeature,
    PlanPrice,
    Rate,
    SeatPolicy,
    listing,
)
from tollgate.domain.catalog_extras import parse_addons, parse_coupons
from tollgate.domain.errors import CatalogError, CatalogProblem
from tollgate.domain.payment_limits import CARD, METHODS
from tollgate.money import normalize_currency, parse_amount, to_minor_int


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Validate parsed catalog data (e.g. from YAML); raise CatalogError listing every problem."""
    parser = _CatalogParser()
    catalog = parser.parse(data)
    if catalog is not None:
        # Issue 20: coupons and add-ons, read after the plans and features they name.
        catalog = replace(
            catalog,
            coupons=parse_coupons(parser, data.get("coupons"), catalog),
            addons=parse_addons(parser, data.get("addons"), catalog),
        )
    if parser.problems or catalog is None:
        raise CatalogError(parser.problems)
    return catalog


_TOP_KEYS = (
    "currency",
    "default_plan",
    "features",
    "plans",
    "credit_packs",
    "credit_overdraft_product",
    "customer_spend_caps",
    "coupons",
    "addons",
)
_FEATURE_KEYS = ("type", "name", "unit", "aggregation", "credits_per_unit")
_CREDIT_PACK_KEYS = ("name", "credits", "prices")
_CREDIT_PRODUCT_KEYS = ("name", "prices")
_ONE_TIME_PRICE_KEYS = ("currency", "amount")
_PLAN_KEYS = (
    "name",
    "prices",
    "features",
    "trial_days",
    "custom",
    "invoice",
    "seats",
    "reduced_access",
    "on_start_credits",
    "credits",
    "payment_methods",
)
_PRICE_KEYS = ("interval", "currency", "amount")
_INVOICE_KEYS = ("collection_method", "days_until_due")
_SEATS_KEYS = ("min", "max")
_PAYMENT_METHODS_KEYS = ("accept", "card_limit")
_METERED_VALUE_KEYS = ("included", "overage", "limit", "warn_at", "rate")
_RATE_KEYS = ("limit", "per")
_OVERAGE_KEYS = ("amount", "per")
_Choice = TypeVar("_Choice", bound=StrEnum)
_ID_RULE = "use lowercase letters, digits and _, start with a letter, at most 40 characters"


class _CatalogParser:
    """Walk the raw data once, collecting every problem with the path where it is."""

    def __init__(self) -> None:
        self.problems: list[CatalogProblem] = []
        self.currency = DEFAULT_CURRENCY
        self.features: dict[str, Feature] = {}
        # Ids of features whose definition is broken: plans may name them without a second error.
        self.broken_features: set[str] = set()
        self.invalid_plans: set[str] = set()

    def report(self, path: str, message: str) -> None:
        self.problems.append(CatalogProblem(path, message))

    def parse(self, data: Mapping[str, Any]) -> Catalog | None:
        if not isinstance(data, Mapping):
            self.report("", "the catalog must be a mapping with `plans` (and usually `features`)")
            return None
        self.check_keys(data, "", _TOP_KEYS)
        if "currency" in data:
            try:
                self.currency = normalize_currency(data["currency"])
            except ValueError as exc:
                self.report("currency", str(exc))
        self.parse_features(data.get("features"))
        plans = self.parse_plans(data.get("plans"))
        default_plan = self.parse_default_plan(data.get("default_plan"), plans)
        for plan in plans.values():
            if plan.reduced_access is not None and plan.reduced_access not in plans:
                self.report(
                    _join(_join("plans", plan.id), "reduced_access"),
                    f"unknown plan {plan.reduced_access!r}"
                    + _did_you_mean(plan.reduced_access, plans),
                )
        packs = self.parse_credit_packs(data.get("credit_packs"))
        overdraft = None
        if data.get("credit_overdraft_product") is not None:
            overdraft = self.parse_credit_product(
                data["credit_overdraft_product"], "credit_overdraft_product"
            )
        customer_caps = data.get("customer_spend_caps", False)
        if not isinstance(customer_caps, bool):
            self.report("customer_spend_caps", "must be true or false")
            customer_caps = False
        return Catalog(
            self.currency,
            default_plan,
            dict(self.features),
            plans,
            packs,
            overdraft,
            customer_spend_caps=customer_caps,
        )

    def parse_credit_packs(self, raw: object) -> dict[str, CreditPack]:
        packs: dict[str, CreditPack] = {}
        for key, path, pack in self.entries(raw, "credit_packs", "credit pack", _CREDIT_PACK_KEYS):
            name = self.text(pack.get("name", key), _join(path, "name"))
            credits = self.whole_number(pack.get("credits"), _join(path, "credits"), 1)
            prices = self.parse_one_time_prices(pack.get("prices"), _join(path, "prices"))
            if name is not None and credits is not None and prices:
                packs[key] = CreditPack(key, name, credits, prices)
        return packs

    def parse_credit_product(self, raw: object, path: str) -> CreditProduct | None:
        spec = self.checked_mapping(raw, path, path, _CREDIT_PRODUCT_KEYS)
        if spec is None:
            return None
        name = self.text(spec.get("name", "Credit overdraft"), _join(path, "name"))
        prices = self.parse_one_time_prices(spec.get("prices"), _join(path, "prices"))
        if name is None or not prices:
            return None
        return CreditProduct(name, prices)

    def parse_one_time_prices(self, raw: object, path: str) -> tuple[OneTimePrice, ...]:
        if not isinstance(raw, list) or not raw:
            self.report(path, f"must be a non-empty list of prices, not {_describe(raw)}")
            return ()
        prices: list[OneTimePrice] = []
        for index, item in enumerate(raw):
            item_path = f"{path}[{index}]"
            spec = self.checked_mapping(item, item_path, "a price", _ONE_TIME_PRICE_KEYS)
            if spec is None:
                continue
            currency = self.currency_code(spec.get("currency", self.currency), item_path)
            if currency is None:
                continue
            if any(price.currency == currency for price in prices):
                self.report(item_path, f"duplicate price in {currency}")
                continue
            if "amount" not in spec:
                self.report(_join(item_path, "amount"), 'missing; e.g. amount: "10.00"')
                continue
            try:
                amount = to_minor_int(spec["amount"], currency)
            except (TypeError, ValueError) as exc:
                self.report(_join(item_path, "amount"), str(exc))
                continue
            if amount <= 0:
                self.report(_join(item_path, "amount"), "must be more than zero")
                continue
            prices.append(OneTimePrice(currency, amount))
        return tuple(prices)

    def entries(
        self, raw: object, section: str, kind: str, allowed: Iterable[str]
    ) -> Iterator[tuple[str, str, Mapping[Any, Any]]]:
        """Yield an optional section's entries as (id, path, mapping), each id, shape and key
        checked; the ones that fail are reported and left out."""
        spec = self.mapping(raw, section, section) if raw is not None else None
        for key, path, value in self.valid_ids(spec or {}, section, kind):
            entry = self.checked_mapping(value, path, f"a {kind}", allowed)
            if entry is None:
                continue
            yield key, path, entry

    def valid_ids(
        self, spec: Mapping[Any, Any], section: str, kind: str
    ) -> Iterator[tuple[str, str, object]]:
        """Yield a section's entries as (id, path, value); an invalid id is reported and left
        out."""
        for key, value in spec.items():
            path = _join(section, str(key))
            if self.check_id(key, path, kind):
                yield key, path, value

    def check_keys(self, mapping: Mapping[Any, Any], path: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in mapping:
            if key in allowed:
                continue
            message = f"unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})"
            if isinstance(key, bool):
                message += "; YAML reads on/off/yes/no as booleans, so quote the key"
            elif isinstance(key, str):
                message += _did_you_mean(key, allowed)
            self.report(_join(path, str(key)), message)

    def check_id(self, key: object, path: str, kind: str) -> bool:
        if isinstance(key, str) and ID_PATTERN.fullmatch(key):
            return True
        message = f"invalid {kind} id {key!r}: {_ID_RULE}"
        if isinstance(key, bool):
            message += "; YAML reads on/off/yes/no as booleans, so quote the id"
        self.report(path, message)
        return False

    def mapping(self, value: object, path: str, what: str) -> Mapping[Any, Any] | None:
        if isinstance(value, Mapping):
            return value
        self.report(path, f"{what} must be a mapping, not {_describe(value)}")
        return None

    def checked_mapping(
        self, value: object, path: str, what: str, allowed: Iterable[str]
    ) -> Mapping[Any, Any] | None:
        """Return `value` if it is a mapping, its unknown keys reported; else report it, None."""
        spec = self.mapping(value, path, what)
        if spec is not None:
            self.check_keys(spec, path, allowed)
        return spec

    def whole_number(
        self, value: object, path: str, low: int, high: int | None = None
    ) -> int | None:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= low
            and (high is None or value <= high)
        ):
            return value
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        self.report(path, f"must be a whole number {bounds}, not {_describe(value)}")
        return None

    def optional_whole_number(
        self, spec: Mapping[Any, Any], path: str, key: str, low: int, high: int | None = None
    ) -> int:
        """Return `spec[key]` as a whole number from `low` (to `high`); `low` when the key is
        absent or its value is wrong (reported)."""
        if key not in spec:
            return low
        return self.whole_number(spec[key], _join(path, key), low, high) or low

    def choice(self, value: object, path: str, options: type[_Choice]) -> _Choice | None:
        names = [member.value for member in options]
        if isinstance(value, str) and value in names:
            return options(value)
        message = f"{value!r} is not one of: {', '.join(names)}"
        if isinstance(value, str):
            message += _did_you_mean(value, names)
        self.report(path, message)
        return None

    def parse_features(self, raw: object) -> None:
        if raw is None:
            return
        features = self.mapping(raw, "features", "features")
        if features is None:
            return
        seats_features: list[str] = []
        for key, path, spec in self.valid_ids(features, "features", "feature"):
            feature = self.parse_feature(key, spec, path)
            if feature is None:
                self.broken_features.add(key)
                continue
            self.features[key] = feature
            if feature.type is FeatureType.SEATS:
                seats_features.append(key)
        for extra in seats_features[1:]:
            self.report(
                _join("features", extra),
                f"only one feature may have type seats (already: {seats_features[0]})",
            )

    def parse_feature(self, feature_id: str, raw: object, path: str) -> Feature | None:
        spec = self.checked_mapping(raw, path, "a feature", _FEATURE_KEYS)
        if spec is None:
            return None
        if "type" not in spec:
            self.report(_join(path, "type"), "missing; one of: boolean, limit, metered, seats")
            return None
        feature_type = self.choice(spec["type"], _join(path, "type"), FeatureType)
        metered = feature_type is FeatureType.METERED
        if feature_type is not None and not metered:
            for key in ("unit", "aggregation"):
                if key in spec:
                    self.report(_join(path, key), f"only metered features take {key!r}")
        name = self.text(spec.get("name", feature_id), _join(path, "name"))
        unit = None
        if "unit" in spec and metered:
            unit = self.text(spec["unit"], _join(path, "unit"))
        aggregation: Aggregation | None = Aggregation.SUM
        if "aggregation" in spec and metered:
            aggregation = self.choice(spec["aggregation"], _join(path, "aggregation"), Aggregation)
        credits_per_unit = None
        if "credits_per_unit" in spec:
            if metered:
                credits_per_unit = self.whole_number(
                    spec["credits_per_unit"], _join(path, "credits_per_unit"), 1
                )
            elif feature_type is not None:
                self.report(
                    _join(path, "credits_per_unit"), "only metered features take 'credits_per_unit'"
                )
        if feature_type is None or name is None or aggregation is None:
            return None
        return Feature(feature_id, feature_type, name, unit, aggregation, credits_per_unit)

    def text(self, value: object, path: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        self.report(path, f"must be non-empty text, not {_describe(value)}")
        return None

    def parse_plans(self, raw: object) -> dict[str, Plan]:
        if raw is None:
            self.report("plans", "missing; the catalog needs at least one plan")
            return {}
        spec = self.mapping(raw, "plans", "plans")
        if spec is None:
            return {}
        if not spec:
            self.report("plans", "empty; the catalog needs at least one plan")
        plans: dict[str, Plan] = {}
        for key, path, plan_spec in self.valid_ids(spec, "plans", "plan"):
            plan = self.parse_plan(key, plan_spec, path)
            if plan is None:
                self.invalid_plans.add(key)
            else:
                plans[key] = plan
        return plans

    def parse_plan(self, plan_id: str, raw: object, path: str) -> Plan | None:
        spec = self.mapping(raw, path, "a plan")
        if spec is None:
            return None
        count = len(self.problems)
        self.check_keys(spec, path, _PLAN_KEYS)
        name = None
        if "name" in spec:
            name = self.text(spec["name"], _join(path, "name"))
        else:
            self.report(_join(path, "name"), "missing; every plan needs a name")
        prices = self.parse_prices(spec.get("prices"), _join(path, "prices"))
        trial_days = self.optional_whole_number(spec, path, "trial_days", 0, MAX_TRIAL_DAYS)
        if trial_days and not prices:
            self.report(_join(path, "trial_days"), "a free plan (no prices) has no trial")
        custom = False
        if "custom" in spec:
            if isinstance(spec["custom"], bool):
                custom = spec["custom"]
            else:
                self.report(_join(path, "custom"), f"must be true or false, not {spec['custom']!r}")
        collection_method, days_until_due = self.parse_invoice(
            spec.get("invoice"), _join(path, "invoice")
        )
        seats = self.parse_seats(spec.get("seats"), _join(path, "seats"))
        features = self.parse_plan_features(
            spec.get("features"), _join(path, "features"), prices, seats
        )
        on_start_credits = self.optional_whole_number(spec, path, "on_start_credits", 0)
        monthly_credits = self.parse_drip(spec.get("credits"), _join(path, "credits"))
        reduced_access = None
        if spec.get("reduced_access") is not None:
            reduced_access = self.text(spec["reduced_access"], _join(path, "reduced_access"))
        payment_methods = self.parse_payment_methods(
            spec.get("payment_methods"), _join(path, "payment_methods"), prices
        )
        if len(self.problems) > count or name is None:
            return None
        return Plan(
            payment_methods=payment_methods,
            reduced_access=reduced_access,
            id=plan_id,
            name=name,
            prices=prices,
            features=features,
            trial_days=trial_days,
            custom=custom,
            seats=seats,
            collection_method=collection_method,
            days_until_due=days_until_due,
            on_start_credits=on_start_credits,
            monthly_credits=monthly_credits,
        )

    def parse_payment_methods(
        self, raw: object, path: str, prices: tuple[PlanPrice, ...]
    ) -> PaymentMethods | None:
        """Read `payment_methods: {accept: [card, us_bank_account], card_limit: {usd: 100000}}`."""
        if raw is None:
            return None
        spec = self.checked_mapping(raw, path, "payment_methods", _PAYMENT_METHODS_KEYS)
        if spec is None:
            return None
        accept_path = _join(path, "accept")
        accept: list[str] = []
        listed = spec.get("accept", list(METHODS))
        if not isinstance(listed, list) or not listed:
            self.report(
                accept_path,
                f"must be a list of one or more of: {', '.join(METHODS)}, not {_describe(listed)}",
            )
            listed = []
        for index, method in enumerate(listed):
            if method not in METHODS:
                message = f"{method!r} is not one of: {', '.join(METHODS)}"
                if isinstance(method, str):
                    message += _did_you_mean(method, METHODS)
                self.report(f"{accept_path}[{index}]", message)
            elif method in accept:
                self.report(f"{accept_path}[{index}]", f"{method} is listed twice")
            else:
                accept.append(method)
        limits: dict[str, int] = {}
        limit_path = _join(path, "card_limit")
        if spec.get("card_limit") is not None:
            if listed and CARD not in listed:
                self.report(limit_path, "a card limit needs card in accept")
            given = self.mapping(spec["card_limit"], limit_path, "card_limit") or {}
            priced = {price.currency for price in prices}
            for key, value in given.items():
                key_path = _join(limit_path, str(key))
                currency = self.currency_code(key, key_path)
                amount = self.whole_number(value, key_path, 0)
                if currency is not None and currency not in priced:
                    self.report(
                        key_path,
                        f"the plan has no price in {currency}"
                        + (f"; it is priced in {', '.join(sorted(priced))}" if priced else ""),
                    )
                elif currency is not None and amount is not None:
                    limits[currency] = amount
        if not prices:
            self.report(path, "a free plan (no prices) takes no payments")
        return PaymentMethods(tuple(accept), limits)

    def parse_drip(self, raw: object, path: str) -> int:
        if raw is None:
            return 0
        spec = self.checked_mapping(raw, path, "credits", ("amount", "every"))
        if spec is None:
            return 0
        if spec.get("every") != "month":
            self.report(_join(path, "every"), f"{spec.get('every')!r} is not one of: month")
        return self.whole_number(spec.get("amount"), _join(path, "amount"), 1) or 0

    def parse_prices(self, raw: object, path: str) -> tuple[PlanPrice, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.report(path, f"must be a list of prices, not {_describe(raw)}")
            return ()
        prices: list[PlanPrice] = []
        seen: dict[tuple[str, str], int] = {}
        for index, item in enumerate(raw):
            item_path = f"{path}[{index}]"
            price = self.parse_price(item, item_path)
            if price is None:
                continue
            pair = (price.interval.value, price.currency)
            if pair in seen:
                self.report(
                    item_path,
                    f"duplicate {price.interval} price in {price.currency} "
                    f"(also at prices[{seen[pair]}])",
                )
                continue
            seen[pair] = index
            prices.append(price)
        return tuple(prices)

    def parse_price(self, raw: object, path: str) -> PlanPrice | None:
        spec = self.checked_mapping(raw, path, "a price", _PRICE_KEYS)
        if spec is None:
            return None
        interval: Interval | None = None
        if "interval" in spec:
            interval = self.choice(spec["interval"], _join(path, "interval"), Interval)
        else:
            self.report(_join(path, "interval"), "missing; one of: month, year")
        currency: str | None = self.currency
        if "currency" in spec:
            currency = self.currency_code(spec["currency"], _join(path, "currency"))
        amount: int | None = None
        if "amount" not in spec:
            self.report(_join(path, "amount"), 'missing; e.g. amount: "29.00"')
        elif currency is not None:
            try:
                amount = to_minor_int(spec["amount"], currency)
            except ValueError as exc:
                self.report(_join(path, "amount"), str(exc))
        if interval is None or currency is None or amount is None:
            return None
        return PlanPrice(interval, currency, amount)

    def currency_code(self, value: object, path: str) -> str | None:
        if not isinstance(value, str):
            self.report(path, f"{value!r} is not an ISO 4217 currency code")
            return None
        try:
            return normalize_currency(value)
        except ValueError as exc:
            self.report(path, str(exc))
            return None

    def parse_invoice(self, raw: object, path: str) -> tuple[CollectionMethod, int | None]:
        default = (CollectionMethod.CHARGE_AUTOMATICALLY, None)
        if raw is None:
            return default
        spec = self.checked_mapping(raw, path, "invoice", _INVOICE_KEYS)
        if spec is None:
            return default
        method: CollectionMethod | None = CollectionMethod.CHARGE_AUTOMATICALLY
        if "collection_method" in spec:
            method = self.choice(
                spec["collection_method"], _join(path, "collection_method"), CollectionMethod
            )
        days_path = _join(path, "days_until_due")
        days = None
        if method is CollectionMethod.SEND_INVOICE:
            if "days_until_due" in spec:
                days = self.whole_number(spec["days_until_due"], days_path, 1, MAX_DAYS_UNTIL_DUE)
            else:
                self.report(days_path, "missing; send_invoice needs days_until_due (1 to 365)")
        elif method is not None and "days_until_due" in spec:
            self.report(days_path, "only applies with collection_method: send_invoice")
        return method or CollectionMethod.CHARGE_AUTOMATICALLY, days

    def parse_seats(self, raw: object, path: str) -> SeatPolicy | None:
        if raw is None:
            return None
        spec = self.checked_mapping(raw, path, "seats", _SEATS_KEYS)
        if spec is None:
            return None
        low = self.optional_whole_number(spec, path, "min", 1)
        high = None
        if spec.get("max") is not None:
            high = self.whole_number(spec["max"], _join(path, "max"), low)
        return SeatPolicy(low, high)

    def parse_plan_features(
        self,
        raw: object,
        path: str,
        prices: tuple[PlanPrice, ...],
        seats: SeatPolicy | None,
    ) -> dict[str, PlanFeature]:
        granted: dict[str, PlanFeature] = {}
        spec = self.mapping(raw, path, "features") if raw is not None else {}
        for key, value in (spec or {}).items():
            feature_path = _join(path, str(key))
            if key in self.broken_features:
                continue
            feature = self.features.get(key) if isinstance(key, str) else None
            if feature is None:
                message = f"unknown feature {key!r} (features are: {listing(self.features)})"
                if isinstance(key, str):
                    message += _did_you_mean(key, self.features)
                self.report(feature_path, message)
                continue
            grant = self.parse_grant(feature, value, feature_path)
            if grant is not None:
                self.check_overage_currencies(grant, value, feature_path, prices)
                granted[key] = grant
        for feature_id, feature in self.features.items():
            if feature.type is FeatureType.SEATS:
                granted[feature_id] = PlanFeature.seats(feature, seats)
        # Spell out every feature so lookups never need a default: unlisted means off.
        return {
            feature_id: granted.get(feature_id) or PlanFeature.off(feature)
            for feature_id, feature in self.features.items()
        }

    def parse_grant(self, feature: Feature, value: object, path: str) -> PlanFeature | None:
        if feature.type is FeatureType.BOOLEAN:
            if isinstance(value, bool):
                return PlanFeature(feature.id, feature.type, enabled=value)
            self.report(path, f"boolean feature {feature.id!r} takes true or false, not {value!r}")
            return None
        if feature.type is FeatureType.LIMIT:
            if value == UNLIMITED:
                return PlanFeature(feature.id, feature.type, enabled=True, limit=None)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return PlanFeature(feature.id, feature.type, enabled=value > 0, limit=value)
            self.report(
                path,
                f"limit feature {feature.id!r} takes a whole number >= 0 or unlimited, "
                f"not {value!r}",
            )
            return None
        if feature.type is FeatureType.SEATS:
            self.report(
                path,
                f"seats feature {feature.id!r} takes no per-plan value; "
                "give the plan a `seats: {min, max}` block instead",
            )
            return None
        return self.parse_metered_grant(feature, value, path)

    def parse_metered_grant(self, feature: Feature, value: object, path: str) -> PlanFeature | None:
        if not isinstance(value, Mapping):
            self.report(
                path,
                f"metered feature {feature.id!r} takes a mapping such as {{included: 1000}}, "
                f"not {_describe(value)}",
            )
            return None
        count = len(self.problems)
        self.check_keys(value, path, _METERED_VALUE_KEYS)
        included: int | None = 0
        if "included" in value:
            if value["included"] == UNLIMITED:
                included = None
            else:
                included = self.whole_number(value["included"], _join(path, "included"), 0)
        overage = None
        if value.get("overage") is not None:
            overage = self.parse_overage(value["overage"], _join(path, "overage"))
            if "included" in value and value["included"] == UNLIMITED:
                self.report(
                    _join(path, "overage"), "never applies: the included quantity is unlimited"
                )
        has_overage = value.get("overage") is not None
        hard = not has_overage
        if "limit" in value:
            if value["limit"] == "hard":
                hard = True
                if has_overage:
                    self.report(
                        _join(path, "limit"),
                        "a hard limit cannot have overage: use past it is refused, so it is "
                        "never billed (use limit: soft, or remove the overage)",
                    )
            elif value["limit"] == "soft":
                hard = False
            else:
                self.report(_join(path, "limit"), f"{value['limit']!r} is not one of: hard, soft")
        warn_at = self.parse_warn_at(value.get("warn_at", list(DEFAULT_WARN_AT)), path)
        rate = self.parse_rate(value["rate"], _join(path, "rate")) if "rate" in value else None
        if len(self.problems) > count:
            return None
        return PlanFeature(
            feature.id,
            feature.type,
            enabled=not (hard and included == 0),
            limit=included if hard else None,
            included=included,
            overage=overage,
            hard=hard,
            warn_at=warn_at,
            rate=rate,
        )

    def parse_rate(self, raw: object, path: str) -> Rate | None:
        spec = self.checked_mapping(raw, path, "rate", _RATE_KEYS)
        if spec is None:
            return None
        limit = self.whole_number(spec.get("limit"), _join(path, "limit"), 1)
        per = spec.get("per")
        if per not in WINDOWS:
            self.report(_join(path, "per"), f"{per!r} is not one of: {', '.join(WINDOWS)}")
            return None
        return None if limit is None else Rate(limit, str(per))

    def parse_overage(self, raw: object, path: str) -> Overage | None:
        spec = self.checked_mapping(raw, path, "overage", _OVERAGE_KEYS)
        if spec is None:
            return None
        per = self.optional_whole_number(spec, path, "per", 1)
        amount_path = _join(path, "amount")
        if "amount" not in spec:
            self.report(amount_path, 'missing; e.g. amount: "0.50"')
            return None
        amounts: dict[str, Decimal] = {}
        raw_amount = spec["amount"]
        if isinstance(raw_amount, Mapping):
            if not raw_amount:
                self.report(amount_path, "empty; give an amount per currency, e.g. {usd: '0.50'}")
            for code, value in raw_amount.items():
                currency = self.currency_code(code, _join(amount_path, str(code)))
                if currency is not None:
                    amount = self.overage_amount(value, currency, _join(amount_path, str(code)))
                    if amount is not None:
                        amounts[currency] = amount
        else:
            amount = self.overage_amount(raw_amount, self.currency, amount_path)
            if amount is not None:
                amounts[self.currency] = amount
        if not amounts:
            return None
        return Overage(amounts, per)

    def overage_amount(self, value: object, currency: str, path: str) -> Decimal | None:
        if not isinstance(value, int | str | float | Decimal):
            self.report(path, f'must be an amount such as "0.50", not {_describe(value)}')
            return None
        try:
            amount = parse_amount(value, currency)
        except ValueError as exc:
            self.report(path, str(exc))
            return None
        if amount == 0:
            self.report(
                path,
                "must be more than zero (to allow unbilled use past the included quantity, "
                "use limit: soft without overage)",
            )
            return None
        return amount

    def parse_warn_at(self, raw: object, path: str) -> tuple[int, ...]:
        warn_path = _join(path, "warn_at")
        if not isinstance(raw, list):
            self.report(warn_path, f"must be a list of percentages, not {_describe(raw)}")
            return ()
        percents = [
            self.whole_number(item, f"{warn_path}[{index}]", 1, 100)
            for index, item in enumerate(raw)
        ]
        return tuple(sorted({percent for percent in percents if percent is not None}))

    def check_overage_currencies(
        self, grant: PlanFeature, raw: object, path: str, prices: tuple[PlanPrice, ...]
    ) -> None:
        if grant.overage is None:
            return
        overage_path = _join(path, "overage")
        if not prices:
            self.report(
                overage_path, "a free plan (no prices) cannot bill overage; add prices or remove it"
            )
            return
        plan_currencies = sorted({price.currency for price in prices})
        priced = grant.overage.amount_minor_by_currency
        amount_path = _join(overage_path, "amount")
        for code in plan_currencies:
            if code not in priced:
                self.report(
                    amount_path,
                    f"no amount in {code}; the plan is priced in {', '.join(plan_currencies)}, "
                    "so its overage needs an amount in each",
                )
        # A mapping names currencies explicitly; one the plan is not sold in is a mistake.
        raw_amount = raw.get("overage", {}).get("amount") if isinstance(raw, Mapping) else None
        if isinstance(raw_amount, Mapping):
            for code in sorted(set(priced) - set(plan_currencies)):
                self.report(
                    _join(amount_path, code),
                    f"the plan has no price in {code} (it is priced in "
                    f"{', '.join(plan_currencies)})",
                )

    def parse_default_plan(self, raw: object, plans: Mapping[str, Plan]) -> str | None:
        if raw is None or not (plans or self.invalid_plans):
            return None  # no plans at all is reported already
        if isinstance(raw, str) and raw in self.invalid_plans:
            return None  # its own problems are reported; "unknown plan" would mislead
        if not isinstance(raw, str) or raw not in plans:
            message = f"unknown plan {raw!r} (plans are: {listing(plans)})"
            if isinstance(raw, str):
                message += _did_you_mean(raw, plans)
            self.report("default_plan", message)
            return None
        if not plans[raw].is_free:
            self.report(
                "default_plan",
                f"plan {raw!r} has prices; the default plan must be free, since customers land "
                "on it without paying",
            )
            return None
        return raw


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool | int | float | str):
        return repr(value)
    return f"a {type(value).__name__}"
