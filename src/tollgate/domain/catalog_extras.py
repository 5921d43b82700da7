"""Read the catalog's `coupons` and `addons` (issue 20), reporting problems by their path.

```yaml
coupons:
  launch20:
    name: Launch offer
    percent_off: 20                     # or amount_off: {usd: "10.00", eur: "9.00"}
    duration: repeating                 # once | repeating | forever
    duration_in_months: 3
    max_redemptions: 500
    redeem_by: 2027-03-31               # no redemptions after this day (UTC)
    plans: [pro, team]                  # the plans it may discount (default: any)
    promotion_codes: [LAUNCH20]         # codes buyers may type at Checkout
addons:
  extra_runs:
    name: 10,000 more runs
    prices: [{interval: month, currency: usd, amount: "5.00"}]
    grants: {runs: 10000}               # per unit bought; a boolean feature: true
    plans: [pro]
    max_quantity: 20
```
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from tollgate.domain.catalog import (
    AddOn,
    Catalog,
    Coupon,
    CouponDuration,
    FeatureType,
    PlanPrice,
)
from tollgate.money import to_minor_int

COUPON_KEYS = (
    "name",
    "percent_off",
    "amount_off",
    "duration",
    "duration_in_months",
    "max_redemptions",
    "redeem_by",
    "plans",
    "promotion_codes",
)
ADDON_KEYS = ("name", "prices", "grants", "plans", "max_quantity")


class Parser(Protocol):
    """What these readers use of the catalog parser (catalog_parser._CatalogParser)."""

    currency: str

    def report(self, path: str, message: str) -> None: ...

    def check_keys(self, mapping: Mapping[Any, Any], path: str, allowed: Iterable[str]) -> None: ...
    def check_id(self, key: object, path: str, kind: str) -> bool: ...
    def entries(
        self, raw: object, section: str, kind: str, allowed: Iterable[str]
    ) -> Iterator[tuple[str, str, Mapping[Any, Any]]]: ...
    def mapping(self, value: object, path: str, what: str) -> Mapping[Any, Any] | None: ...
    def whole_number(
        self, value: object, path: str, low: int, high: int | None = None
    ) -> int | None: ...
    def currency_code(self, value: object, path: str) -> str | None: ...
    def parse_prices(self, raw: object, path: str) -> tuple[PlanPrice, ...]: ...


def _plans(parser: Parser, raw: object, path: str, catalog: Catalog) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        parser.report(path, "must be a list of plan ids")
        return ()
    for item in raw:
        if item not in catalog.plans:
            parser.report(path, f"unknown plan {item!r}")
    return tuple(raw)


def _redeem_by(parser: Parser, raw: object, path: str) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        # A stored catalog (catalog_versions) keeps YAML dates as ISO text.
        try:
            raw = date.fromisoformat(raw) if len(raw) == 10 else datetime.fromisoformat(raw)
        except ValueError:
            parser.report(path, "must be a date (2027-03-31) or a time")
            return None
    if isinstance(raw, datetime):
        return raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    if isinstance(raw, date):
        # The whole day counts: redemptions close at the end of it (UTC).
        return datetime.combine(raw, time(23, 59, 59), UTC)
    parser.report(path, "must be a date (2027-03-31) or a time")
    return None


def parse_coupons(parser: Parser, raw: object, catalog: Catalog) -> dict[str, Coupon]:
    """Return the catalog's coupons; every problem is reported with its path."""
    coupons: dict[str, Coupon] = {}
    codes: dict[str, str] = {}
    for key, path, entry in parser.entries(raw, "coupons", "coupon", COUPON_KEYS):
        percent: Decimal | None = None
        amounts: dict[str, int] = {}
        if ("percent_off" in entry) == ("amount_off" in entry):
            parser.report(path, "give one of percent_off or amount_off")
            continue
        if "percent_off" in entry:
            try:
                percent = Decimal(str(entry["percent_off"]))
            except InvalidOperation:
                percent = None
            if percent is None or not Decimal(0) < percent <= Decimal(100):
                parser.report(f"{path}.percent_off", "must be more than 0 and at most 100")
                continue
        else:
            raw_amount = entry["amount_off"]
            by_currency = (
                raw_amount if isinstance(raw_amount, Mapping) else {parser.currency: raw_amount}
            )
            for currency_raw, amount_raw in by_currency.items():
                currency = parser.currency_code(currency_raw, f"{path}.amount_off")
                if currency is None:
                    continue
                try:
                    amount = to_minor_int(amount_raw, currency)
                except (TypeError, ValueError) as error:
                    parser.report(f"{path}.amount_off.{currency}", str(error))
                    continue
                if amount <= 0:
                    parser.report(f"{path}.amount_off.{currency}", "must be more than zero")
                    continue
                amounts[currency] = amount
            if not amounts:
                if not by_currency:
                    parser.report(f"{path}.amount_off", "give an amount in at least one currency")
                continue
        duration_raw = entry.get("duration", "once")
        if duration_raw not in {member.value for member in CouponDuration}:
            parser.report(
                f"{path}.duration", f"{duration_raw!r} is not one of: once, repeating, forever"
            )
            continue
        duration = CouponDuration(duration_raw)
        months = None
        if duration is CouponDuration.REPEATING:
            months = parser.whole_number(
                entry.get("duration_in_months"), f"{path}.duration_in_months", 1, 120
            )
            if months is None:
                continue
        elif "duration_in_months" in entry:
            parser.report(f"{path}.duration_in_months", "only with duration: repeating")
        max_redemptions = None
        if "max_redemptions" in entry:
            max_redemptions = parser.whole_number(
                entry["max_redemptions"], f"{path}.max_redemptions", 1
            )
        promotion_codes: tuple[str, ...] = ()
        raw_codes = entry.get("promotion_codes")
        if raw_codes is not None:
            if not isinstance(raw_codes, list) or not all(
                isinstance(code, str) and code.isalnum() for code in raw_codes
            ):
                parser.report(
                    f"{path}.promotion_codes", "must be a list of letters-and-digits codes"
                )
            else:
                promotion_codes = tuple(raw_codes)
                for code in promotion_codes:
                    if code.upper() in codes:
                        parser.report(
                            f"{path}.promotion_codes",
                            f"{code} is also coupon {codes[code.upper()]}'s",
                        )
                    codes[code.upper()] = key
        plans = _plans(parser, entry.get("plans"), f"{path}.plans", catalog)
        priced = {
            price.currency
            for plan in catalog.plans.values()
            if not plans or plan.id in plans
            for price in plan.prices
        }
        for currency in sorted(set(amounts) - priced):
            parser.report(
                f"{path}.amount_off.{currency}",
                f"no {'plan it is for' if plans else 'plan'} has a price in {currency}",
            )
        coupons[key] = Coupon(
            id=key,
            name=str(entry.get("name") or key),
            duration=duration,
            percent_off=percent,
            amount_off=amounts,
            duration_in_months=months,
            max_redemptions=max_redemptions,
            redeem_by=_redeem_by(parser, entry.get("redeem_by"), f"{path}.redeem_by"),
            plans=plans,
            promotion_codes=promotion_codes,
        )
    return coupons


def parse_addons(parser: Parser, raw: object, catalog: Catalog) -> dict[str, AddOn]:
    """Return the catalog's add-ons; every problem is reported with its path."""
    addons: dict[str, AddOn] = {}
    spec = parser.mapping(raw, "addons", "addons") if raw is not None else None
    for key, value in (spec or {}).items():
        path = f"addons.{key}"
        if not parser.check_id(key, path, "add-on"):
            continue
        if key in catalog.plans:
            parser.report(path, f"{key!r} is also a plan's id; an add-on needs its own")
            continue
        entry = parser.mapping(value, path, "an add-on")
        if entry is None:
            continue
        parser.check_keys(entry, path, ADDON_KEYS)
        prices = parser.parse_prices(entry.get("prices"), f"{path}.prices")
        if not prices:
            parser.report(f"{path}.prices", "an add-on needs at least one price")
            continue
        grants: dict[str, int | bool] = {}
        raw_grants = parser.mapping(entry.get("grants"), f"{path}.grants", "grants")
        for feature_id, amount in (raw_grants or {}).items():
            grant_path = f"{path}.grants.{feature_id}"
            feature = catalog.features.get(str(feature_id))
            if feature is None:
                parser.report(grant_path, f"unknown feature {feature_id!r}")
                continue
            if feature.type is FeatureType.BOOLEAN:
                if amount is not True:
                    parser.report(grant_path, "a boolean feature is granted with true")
                    continue
                grants[feature.id] = True
                continue
            count = parser.whole_number(amount, grant_path, 1)
            if count is not None:
                grants[feature.id] = count
        if not grants:
            parser.report(f"{path}.grants", "an add-on must grant something")
            continue
        max_quantity = None
        if "max_quantity" in entry:
            max_quantity = parser.whole_number(entry["max_quantity"], f"{path}.max_quantity", 1)
        addons[key] = AddOn(
            id=key,
            name=str(entry.get("name") or key),
            prices=prices,
            grants=grants,
            plans=_plans(parser, entry.get("plans"), f"{path}.plans", catalog),
            max_quantity=max_quantity,
        )
    return addons
