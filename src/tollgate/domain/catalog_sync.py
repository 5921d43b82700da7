"""Decide what Stripe must hold for a catalog, and the changes that get it there, as pure data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from tollgate.domain.catalog import Catalog, FeatureType, Interval, Plan
from tollgate.domain.errors import CatalogError, CatalogProblem
from tollgate.money import format_minor

PLAN_PRODUCT_PREFIX = "tg_plan_"
FEATURE_PRODUCT_PREFIX = "tg_feature_"
# Every lookup key and meter event name Tollgate makes starts with this; sync archives only
# prices carrying it, so prices made by hand in the same Stripe account are left alone.
TOLLGATE_PREFIX = "tollgate_"
METER_FORMULA = "sum"


class UsageType(StrEnum):
    """Stripe's recurring.usage_type: a fixed quantity, or metered usage."""

    LICENSED = "licensed"
    METERED = "metered"


def plan_product_id(plan_id: str) -> str:
    """Return the Stripe product id of a plan."""
    return f"{PLAN_PRODUCT_PREFIX}{plan_id}"


def feature_product_id(feature_id: str) -> str:
    """Return the Stripe product id of a metered feature's overage."""
    return f"{FEATURE_PRODUCT_PREFIX}{feature_id}"


def meter_event_name(feature_id: str) -> str:
    """Return the Stripe meter event name of a metered feature."""
    return f"{TOLLGATE_PREFIX}{feature_id}"


def _versioned(plan_id: str, version: int) -> str:
    # Version 1 keeps the key Tollgate always gave the plan, so prices synced before plans had
    # versions are version 1's; later versions carry theirs: tollgate_pro_v2_month_usd.
    return plan_id if version <= 1 else f"{plan_id}_v{version}"


def base_price_lookup_key(plan_id: str, interval: str, currency: str, version: int = 1) -> str:
    """Return the lookup key of a plan version's recurring price."""
    return f"{TOLLGATE_PREFIX}{_versioned(plan_id, version)}_{interval}_{currency}"


def overage_price_lookup_key(
    plan_id: str, feature_id: str, interval: str, currency: str, version: int = 1
) -> str:
    """Return the lookup key of a plan version's overage price for a metered feature."""
    return f"{TOLLGATE_PREFIX}{_versioned(plan_id, version)}_{feature_id}_{interval}_{currency}"


def _plans_and_versions(catalog: Catalog) -> list[Plan]:
    """Return every plan's current version, then the earlier versions subscribers may be on."""
    plans = list(catalog.plans.values())
    for plan_id in catalog.plans:
        plans += [old for _, old in sorted(catalog.plan_versions.get(plan_id, {}).items())]
    return plans


@dataclass(frozen=True)
class PriceFingerprint:
    """The economically relevant terms of a price: two prices with equal ones charge the same."""

    currency: str
    interval: str
    usage_type: str
    amount_minor: Decimal
    meter_event_name: str | None
    divide_by: int | None

    def describe(self) -> str:
        """Return the terms for people: "$29.00/month" or "$0.50 per 1000 tollgate_runs/month"."""
        amount = format_minor(self.amount_minor, self.currency)
        if self.usage_type != UsageType.METERED:
            return f"{amount}/{self.interval}"
        per = f"{self.divide_by} " if self.divide_by else ""
        return f"{amount} per {per}{self.meter_event_name or 'unit'}/{self.interval}"


def price_fingerprint(
    *,
    currency: str,
    interval: str,
    usage_type: str,
    unit_amount_decimal: Decimal | int | str,
    meter_event_name: str | None = None,
    divide_by: int | None = None,
) -> PriceFingerprint:
    """Return the fingerprint of a price given as plain values (Stripe's or a desired one's)."""
    return PriceFingerprint(
        currency=currency.lower(),
        interval=str(interval),
        usage_type=str(usage_type),
        # Decimal compares and hashes by value, so "2900" from Stripe equals Decimal("2900.00").
        amount_minor=Decimal(unit_amount_decimal),
        meter_event_name=meter_event_name,
        # Dividing by 1 is no transformation; Stripe reports it as no transform_quantity.
        divide_by=divide_by if divide_by and divide_by > 1 else None,
    )


@dataclass(frozen=True)
class DesiredProduct:
    """A Stripe product Tollgate needs, with the id it chooses."""

    id: str
    name: str
    metadata: dict[str, str]
    # What one unit of a usage-based price is called ("run"): Checkout says "per 1,000 runs".
    unit_label: str | None = None


@dataclass(frozen=True)
class DesiredMeter:
    """A Stripe billing meter for a metered feature's overage usage."""

    event_name: str
    display_name: str
    formula: str = METER_FORMULA


@dataclass(frozen=True)
class DesiredPrice:
    """A Stripe price Tollgate needs, found again by its lookup key."""

    lookup_key: str
    product: str
    currency: str
    interval: Interval
    usage_type: UsageType
    unit_amount: int | None = None
    unit_amount_decimal: Decimal | None = None
    meter_event_name: str | None = None
    divide_by: int | None = None
    nickname: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def amount_minor(self) -> Decimal:
        """Return the unit amount in minor units, whichever field carries it."""
        if self.unit_amount is not None:
            return Decimal(self.unit_amount)
        assert self.unit_amount_decimal is not None
        return self.unit_amount_decimal

    @property
    def unit_amount_decimal_text(self) -> str | None:
        """Return unit_amount_decimal as Stripe wants it: plain digits, never "5E-1"."""
        if self.unit_amount_decimal is None:
            return None
        return format(self.unit_amount_decimal, "f")

    @property
    def transform_quantity(self) -> dict[str, int | str] | None:
        """Return Stripe's transform_quantity: bill per `divide_by` units, rounding up."""
        if self.divide_by is None:
            return None
        return {"divide_by": self.divide_by, "round": "up"}

    @property
    def fingerprint(self) -> PriceFingerprint:
        """Return the economically relevant terms, to compare with the price in Stripe."""
        return price_fingerprint(
            currency=self.currency,
            interval=self.interval,
            usage_type=self.usage_type,
            unit_amount_decimal=self.amount_minor,
            meter_event_name=self.meter_event_name,
            divide_by=self.divide_by,
        )


@dataclass(frozen=True)
class DesiredCatalog:
    """Everything the catalog needs in Stripe, in dependency order within each kind."""

    meters: tuple[DesiredMeter, ...]
    products: tuple[DesiredProduct, ...]
    prices: tuple[DesiredPrice, ...]


@dataclass(frozen=True)
class ExistingProduct:
    """A product as Stripe has it."""

    id: str
    name: str
    active: bool
    metadata: Mapping[str, str] = field(default_factory=dict)
    unit_label: str | None = None


@dataclass(frozen=True)
class ExistingPrice:
    """A price as Stripe has it; the gateway computes `fingerprint` with price_fingerprint()."""

    id: str
    lookup_key: str | None
    product: str
    active: bool
    fingerprint: PriceFingerprint


@dataclass(frozen=True)
class ExistingMeter:
    """A billing meter as Stripe has it; `status` is "active" or "inactive"."""

    id: str
    event_name: str
    display_name: str
    status: str


def desired_stripe_catalog(catalog: Catalog) -> DesiredCatalog:
    """Return the meters, products and prices Stripe must hold for the catalog."""
    billed_features: list[str] = []  # metered features with overage in some priced plan
    for feature_id, feature in catalog.features.items():
        if feature.type is FeatureType.METERED and any(
            plan.prices and plan.features[feature_id].overage is not None
            for plan in _plans_and_versions(catalog)
        ):
            billed_features.append(feature_id)

    products = [
        DesiredProduct(plan_product_id(plan.id), plan.name, {"tollgate_plan": plan.id})
        for plan in catalog.plans.values()
        if plan.prices
    ]
    products += [
        DesiredProduct(
            feature_product_id(feature_id),
            catalog.features[feature_id].name,
            {"tollgate_feature": feature_id},
            unit_label=catalog.features[feature_id].unit,
        )
        for feature_id in billed_features
    ]
    products += desired_credit_products(catalog)
    meters = [
        DesiredMeter(meter_event_name(feature_id), catalog.features[feature_id].name)
        for feature_id in billed_features
    ]

    prices: list[DesiredPrice] = []
    for plan in _plans_and_versions(catalog):
        named = plan.name if plan.version <= 1 else f"{plan.name} v{plan.version}"
        for price in plan.prices:
            prices.append(
                DesiredPrice(
                    lookup_key=base_price_lookup_key(
                        plan.id, price.interval, price.currency, plan.version
                    ),
                    product=plan_product_id(plan.id),
                    currency=price.currency,
                    interval=price.interval,
                    usage_type=UsageType.LICENSED,
                    unit_amount=price.amount_minor,
                    nickname=f"{named} ({price.interval}, {price.currency.upper()})",
                    metadata={
                        "tollgate_plan": plan.id,
                        "tollgate_interval": price.interval,
                        "tollgate_plan_version": str(plan.version),
                    },
                )
            )
        for feature_id in billed_features:
            grant = plan.features[feature_id]
            overage = grant.overage
            if overage is None:
                continue
            feature_name = catalog.features[feature_id].name
            for price in plan.prices:
                prices.append(
                    DesiredPrice(
                        lookup_key=overage_price_lookup_key(
                            plan.id, feature_id, price.interval, price.currency, plan.version
                        ),
                        product=feature_product_id(feature_id),
                        currency=price.currency,
                        interval=price.interval,
                        usage_type=UsageType.METERED,
                        unit_amount_decimal=overage.amount_in(price.currency),
                        meter_event_name=meter_event_name(feature_id),
                        divide_by=overage.per if overage.per > 1 else None,
                        nickname=(
                            f"{named}: {feature_name} over the {grant.included or 0:,} "
                            f"included ({price.interval}, {price.currency.upper()})"
                        ),
                        metadata={
                            "tollgate_plan": plan.id,
                            "tollgate_interval": price.interval,
                            "tollgate_feature": feature_id,
                            "tollgate_plan_version": str(plan.version),
                        },
                    )
                )
    addon_products, addon_prices = desired_addons(catalog)  # issue 20
    products += addon_products
    _check_lookup_keys_unique(prices)
    return DesiredCatalog(tuple(meters), tuple(products), tuple(prices + addon_prices))


def _check_lookup_keys_unique(prices: Iterable[DesiredPrice]) -> None:
    # Ids may contain "_", so plan "pro_runs" and plan "pro" + feature "runs" could both want
    # tollgate_pro_runs_month_usd; two prices can't share a lookup key, so refuse the catalog.
    first_by_key: dict[str, DesiredPrice] = {}
    problems = []
    for price in prices:
        first = first_by_key.setdefault(price.lookup_key, price)
        if first is not price:
            problems.append(
                CatalogProblem(
                    f"plans.{price.metadata['tollgate_plan']}",
                    f"its Stripe lookup key {price.lookup_key} is also that of "
                    f"{_price_role(first)}; rename a plan or feature",
                )
            )
    if problems:
        raise CatalogError(problems)


def _price_role(price: DesiredPrice) -> str:
    plan = price.metadata["tollgate_plan"]
    feature = price.metadata.get("tollgate_feature")
    if feature is None:
        return f"plan {plan!r}'s {price.interval} price"
    return f"plan {plan!r}'s {feature} overage price"


@dataclass(frozen=True)
class CreateMeter:
    """Create a billing meter."""

    kind: ClassVar[str] = "create_meter"
    meter: DesiredMeter

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return f"+ meter {self.meter.event_name} ({self.meter.display_name}, {self.meter.formula})"


@dataclass(frozen=True)
class UpdateMeter:
    """Rename a billing meter and/or reactivate it."""

    kind: ClassVar[str] = "update_meter"
    meter: DesiredMeter
    existing: ExistingMeter

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        what = _meter_differences(self.meter, self.existing)
        return f"~ meter {self.meter.event_name}: {', '.join(what)}"


def _meter_differences(meter: DesiredMeter, existing: ExistingMeter) -> list[str]:
    """Return what updating `existing` to `meter` changes, in words (empty: nothing)."""
    what = []
    if existing.display_name != meter.display_name:
        what.append(f"display name {existing.display_name!r} -> {meter.display_name!r}")
    if existing.status != "active":
        what.append("reactivated")
    return what


@dataclass(frozen=True)
class CreateProduct:
    """Create a product with Tollgate's chosen id."""

    kind: ClassVar[str] = "create_product"
    product: DesiredProduct

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return f"+ product {self.product.id} ({self.product.name})"


@dataclass(frozen=True)
class UpdateProduct:
    """Set a product's name, unit label and metadata, and reactivate it if archived."""

    kind: ClassVar[str] = "update_product"
    product: DesiredProduct
    existing: ExistingProduct

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        what = _product_differences(self.product, self.existing)
        return f"~ product {self.product.id}: {', '.join(what)}"


def _product_differences(product: DesiredProduct, existing: ExistingProduct) -> list[str]:
    """Return what updating `existing` to `product` changes, in words (empty: nothing)."""
    what = []
    if existing.name != product.name:
        what.append(f"name {existing.name!r} -> {product.name!r}")
    if existing.unit_label != product.unit_label:
        what.append(f"unit label {existing.unit_label!r} -> {product.unit_label!r}")
    if not existing.active:
        what.append("reactivated")
    if not _has_metadata(existing.metadata, product.metadata):
        what.append("metadata set")
    return what


@dataclass(frozen=True)
class CreatePrice:
    """Create a price; `transfer_lookup_key` when an archived price still holds the key."""

    kind: ClassVar[str] = "create_price"
    price: DesiredPrice
    transfer_lookup_key: bool = False

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return f"+ price {self.price.lookup_key}: {self.price.fingerprint.describe()}"


@dataclass(frozen=True)
class ReplacePrice:
    """Create a new price taking over the lookup key, then archive the old one.

    Stripe prices cannot change amount; subscribers on the old price keep it until they change plan.
    """

    kind: ClassVar[str] = "replace_price"
    price: DesiredPrice
    old: ExistingPrice

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        moved = ""
        if self.old.product != self.price.product:
            moved = f", product {self.old.product} -> {self.price.product}"
        return (
            f"~ price {self.price.lookup_key}: {self.old.fingerprint.describe()} -> "
            f"{self.price.fingerprint.describe()} "
            f"(new price, lookup key moves, old price archived{moved})"
        )


@dataclass(frozen=True)
class ArchivePrice:
    """Archive a Tollgate price the catalog no longer has; its subscribers keep it."""

    kind: ClassVar[str] = "archive_price"
    old: ExistingPrice

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return (
            f"- price {self.old.lookup_key}: {self.old.fingerprint.describe()} "
            "(archived; current subscribers keep it)"
        )


CatalogChange = (
    CreateMeter
    | UpdateMeter
    | CreateProduct
    | UpdateProduct
    | CreatePrice
    | ReplacePrice
    | ArchivePrice
)


def plan_catalog_changes(
    desired: DesiredCatalog,
    products: Iterable[ExistingProduct],
    prices: Iterable[ExistingPrice],
    meters: Iterable[ExistingMeter],
) -> list[CatalogChange]:
    """Return the changes that make Stripe match `desired`: meters, products, prices, archivals."""
    changes: list[CatalogChange] = []

    meters_by_event: dict[str, ExistingMeter] = {}
    for meter in meters:
        # Prefer an active meter when an inactive one with the same event name also exists.
        held = meters_by_event.get(meter.event_name)
        if held is None or (held.status != "active" and meter.status == "active"):
            meters_by_event[meter.event_name] = meter
    for wanted_meter in desired.meters:
        existing_meter = meters_by_event.get(wanted_meter.event_name)
        if existing_meter is None:
            changes.append(CreateMeter(wanted_meter))
        elif _meter_differences(wanted_meter, existing_meter):
            changes.append(UpdateMeter(wanted_meter, existing_meter))

    products_by_id = {product.id: product for product in products}
    for wanted_product in desired.products:
        existing_product = products_by_id.get(wanted_product.id)
        if existing_product is None:
            changes.append(CreateProduct(wanted_product))
        elif _product_differences(wanted_product, existing_product):
            changes.append(UpdateProduct(wanted_product, existing_product))

    active_by_key: dict[str, ExistingPrice] = {}
    held_keys: set[str] = set()
    all_prices = list(prices)
    for price in all_prices:
        if price.lookup_key is None:
            continue
        held_keys.add(price.lookup_key)
        if price.active:
            active_by_key[price.lookup_key] = price
    for wanted_price in desired.prices:
        current = active_by_key.get(wanted_price.lookup_key)
        if current is None:
            changes.append(
                CreatePrice(wanted_price, transfer_lookup_key=wanted_price.lookup_key in held_keys)
            )
        elif current.fingerprint != wanted_price.fingerprint or (
            current.product != wanted_price.product
        ):
            changes.append(ReplacePrice(wanted_price, current))

    wanted_keys = {price.lookup_key for price in desired.prices}
    stale = [
        price
        for key, price in sorted(active_by_key.items())
        if key.startswith(TOLLGATE_PREFIX) and key not in wanted_keys
    ]
    changes.extend(ArchivePrice(price) for price in stale)
    return changes


def _has_metadata(actual: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    # Only Tollgate's keys matter; metadata someone added in the dashboard is left alone.
    return all(actual.get(key) == value for key, value in wanted.items())


# -- credits (issue 8): packs sold once through Checkout, and the overdraft's price -----------

PACK_PRODUCT_PREFIX = "tg_pack_"
OVERDRAFT_PRODUCT_ID = "tg_credit_overdraft"


def pack_product_id(pack_id: str) -> str:
    """Return the Stripe product id of a credit pack."""
    return f"{PACK_PRODUCT_PREFIX}{pack_id}"


def pack_price_lookup_key(pack_id: str, currency: str) -> str:
    """Return the lookup key of a credit pack's one-time price."""
    return f"{TOLLGATE_PREFIX}pack_{pack_id}_{currency}"


def overdraft_price_lookup_key(currency: str) -> str:
    """Return the lookup key of the price of one overdrawn credit."""
    return f"{TOLLGATE_PREFIX}credit_overdraft_{currency}"


@dataclass(frozen=True)
class DesiredOneTimePrice:
    """A one-time Stripe price Tollgate needs (a pack, an overdrawn credit)."""

    lookup_key: str
    product: str
    currency: str
    unit_amount: int
    nickname: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateOneTimePrice:
    """Create a one-time price (taking over its lookup key), archiving the one it replaces."""

    kind: ClassVar[str] = "create_one_time_price"
    price: DesiredOneTimePrice
    replaces: str | None = None

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        amount = format_minor(Decimal(self.price.unit_amount), self.price.currency)
        verb = "~" if self.replaces else "+"
        return f"{verb} price {self.price.lookup_key}: {amount} once"


@dataclass(frozen=True)
class ArchiveOneTimePrice:
    """Archive a one-time price the catalog no longer has."""

    kind: ClassVar[str] = "archive_one_time_price"
    price_id: str
    lookup_key: str

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return f"- price {self.lookup_key} (archived)"


def desired_credit_products(catalog: Catalog) -> list[DesiredProduct]:
    """Return the products of the catalog's credit packs and overdraft."""
    products = [
        DesiredProduct(pack_product_id(pack.id), pack.name, {"tollgate_credit_pack": pack.id})
        for pack in catalog.credit_packs.values()
    ]
    if catalog.credit_overdraft_product is not None:
        products.append(
            DesiredProduct(
                OVERDRAFT_PRODUCT_ID,
                catalog.credit_overdraft_product.name,
                {"tollgate_credit_overdraft": "true"},
            )
        )
    return products


def desired_credit_prices(catalog: Catalog) -> tuple[DesiredOneTimePrice, ...]:
    """Return the one-time prices of the catalog's credit packs and overdraft."""
    prices = [
        DesiredOneTimePrice(
            lookup_key=pack_price_lookup_key(pack.id, price.currency),
            product=pack_product_id(pack.id),
            currency=price.currency,
            unit_amount=price.amount_minor,
            nickname=f"{pack.name} ({pack.credits} credits, {price.currency.upper()})",
            metadata={"tollgate_credit_pack": pack.id, "tollgate_credits": str(pack.credits)},
        )
        for pack in catalog.credit_packs.values()
        for price in pack.prices
    ]
    overdraft = catalog.credit_overdraft_product
    if overdraft is not None:
        prices += [
            DesiredOneTimePrice(
                lookup_key=overdraft_price_lookup_key(price.currency),
                product=OVERDRAFT_PRODUCT_ID,
                currency=price.currency,
                unit_amount=price.amount_minor,
                nickname=f"{overdraft.name} (per credit, {price.currency.upper()})",
                metadata={"tollgate_credit_overdraft": "true"},
            )
            for price in overdraft.prices
        ]
    return tuple(prices)


def plan_credit_price_changes(
    desired: Iterable[DesiredOneTimePrice], existing: Iterable[Mapping[str, object]]
) -> list[CreateOneTimePrice | ArchiveOneTimePrice]:
    """Return the one-time price changes that make Stripe match; `existing` as the gateway lists."""
    active = {
        str(price["lookup_key"]): price
        for price in existing
        if price["active"] and price["lookup_key"]
    }
    changes: list[CreateOneTimePrice | ArchiveOneTimePrice] = []
    wanted = set()
    for price in desired:
        wanted.add(price.lookup_key)
        current = active.get(price.lookup_key)
        if current is None:
            changes.append(CreateOneTimePrice(price))
        elif (current["unit_amount"], current["currency"], current["product"]) != (
            price.unit_amount,
            price.currency,
            price.product,
        ):
            changes.append(CreateOneTimePrice(price, replaces=str(current["id"])))
    for key, current in sorted(active.items()):
        if key not in wanted:
            changes.append(ArchiveOneTimePrice(str(current["id"]), key))
    return changes


# -- add-ons (issue 20): each sold as its own subscription item -------------------------------

ADDON_PRODUCT_PREFIX = "tg_addon_"
ADDON_LOOKUP_PREFIX = f"{TOLLGATE_PREFIX}addon_"


def addon_product_id(addon_id: str) -> str:
    """Return the Stripe product id of an add-on."""
    return f"{ADDON_PRODUCT_PREFIX}{addon_id}"


def addon_price_lookup_key(addon_id: str, interval: str, currency: str) -> str:
    """Return the lookup key of an add-on's recurring price."""
    return f"{ADDON_LOOKUP_PREFIX}{addon_id}_{interval}_{currency}"


def addon_of_lookup_key(lookup_key: str | None) -> str | None:
    """Return the add-on a price's lookup key names, or None for any other price."""
    if not lookup_key or not lookup_key.startswith(ADDON_LOOKUP_PREFIX):
        return None
    parts = lookup_key.removeprefix(ADDON_LOOKUP_PREFIX).rsplit("_", 2)
    return parts[0] if len(parts) == 3 else None


def desired_addons(catalog: Catalog) -> tuple[list[DesiredProduct], list[DesiredPrice]]:
    """Return the products and licensed prices of the catalog's add-ons."""
    products = [
        DesiredProduct(addon_product_id(addon.id), addon.name, {"tollgate_addon": addon.id})
        for addon in catalog.addons.values()
    ]
    prices = [
        DesiredPrice(
            lookup_key=addon_price_lookup_key(addon.id, price.interval, price.currency),
            product=addon_product_id(addon.id),
            currency=price.currency,
            interval=price.interval,
            usage_type=UsageType.LICENSED,
            unit_amount=price.amount_minor,
            nickname=f"{addon.name} ({price.interval}, {price.currency.upper()})",
            metadata={"tollgate_addon": addon.id, "tollgate_interval": price.interval},
        )
        for addon in catalog.addons.values()
        for price in addon.prices
    ]
    return products, prices
