"""The catalog: building products and prices from request parameters, and what a price costs.

Shared by the product and price routes, Checkout's inline `price_data` and the billing engine.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from stripesim.currency import CURRENCIES, format_amount
from stripesim.errors import StripeError, parameter_invalid, parameter_missing
from stripesim.lists import as_bool, as_int, param_name, reference, update_metadata
from stripesim.registry import Ctx

_INTERVALS = ("day", "week", "month", "year")
_MAX_INTERVAL_DAYS = {"day": 1, "week": 7, "month": 31, "year": 366}
TAX_BEHAVIORS = ("inclusive", "exclusive", "unspecified")


# -- products ---------------------------------------------------------------------------------


def product_features(value: Any) -> list[dict[str, Any]]:
    if not value:
        return []
    return [{"name": str(feature.get("name"))} for feature in value]


def product_dimensions(value: Any) -> dict[str, float] | None:
    if not value:
        return None
    return {key: float(value[key]) for key in ("height", "length", "weight", "width")}


def build_product(ctx: Ctx, params: dict[str, Any], *, param_prefix: str = "") -> dict[str, Any]:
    """Create, store and announce a product from create params (or a price's `product_data`)."""
    if not params.get("name"):
        raise parameter_missing(param_name(param_prefix, "name"))
    custom_id = params.get("id")
    if custom_id and ctx.account.find(custom_id) is not None:
        raise StripeError(
            "Product already exists.",
            code="resource_already_exists",
            param=param_name(param_prefix, "id"),
        )
    now = ctx.now()
    product = ctx.build(
        "product",
        "prod",
        id=custom_id or None,
        created=now,
        updated=now,
        active=as_bool(params, "active", True),
        description=params.get("description") or None,
        images=list(params.get("images") or []),
        marketing_features=product_features(params.get("marketing_features")),
        name=params["name"],
        package_dimensions=product_dimensions(params.get("package_dimensions")),
        shippable=as_bool(params, "shippable"),
        statement_descriptor=params.get("statement_descriptor") or None,
        tax_code=params.get("tax_code")
        or (params.get("tax_details") or {}).get("tax_code")
        or None,
        unit_label=params.get("unit_label") or None,
        url=params.get("url") or None,
        type=params.get("type") or "service",
    )
    if product["type"] not in ("good", "service"):
        raise parameter_invalid(
            param_name(param_prefix, "type"), "Invalid type: must be one of good, service"
        )
    update_metadata(product, params.get("metadata"))
    ctx.account.add(product)
    ctx.emit("product.created", product, created=now)
    return product


# -- prices -----------------------------------------------------------------------------------


def currency_of(params: dict[str, Any], key: str = "currency", *, param: str | None = None) -> str:
    """The lowercased currency parameter, or Stripe's error for one it does not support."""
    raw = params.get(key)
    if raw in (None, ""):
        raise parameter_missing(param or key)
    currency = str(raw).lower()
    if currency not in CURRENCIES:
        raise parameter_invalid(
            param or key,
            f"Invalid currency: {currency}. Stripe currently supports these currencies: "
            + ", ".join(sorted(CURRENCIES)),
        )
    return currency


def decimal_text(value: Decimal) -> str:
    """A decimal as Stripe prints `*_decimal` fields: no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _amount_pair(
    source: dict[str, Any], int_key: str, decimal_key: str, prefix: str
) -> tuple[int | None, str | None]:
    """(`x`, `x_decimal`) from either form, kept consistent as Stripe does."""
    int_param, decimal_param = param_name(prefix, int_key), param_name(prefix, decimal_key)
    has_int = source.get(int_key) not in (None, "")
    has_decimal = source.get(decimal_key) not in (None, "")
    if has_int and has_decimal:
        raise StripeError(
            f"You may only specify one of these parameters: {int_key}, {decimal_key}.",
            param=decimal_param,
        )
    if has_int:
        amount = as_int(source, int_key, param=int_param)
        assert amount is not None
        if amount < 0:
            raise StripeError(
                f"Invalid {int_key}: must be greater than or equal to 0",
                code="parameter_invalid_integer",
                param=int_param,
            )
        return amount, str(amount)
    if has_decimal:
        try:
            exact = Decimal(str(source[decimal_key]))
        except InvalidOperation:
            raise parameter_invalid(
                decimal_param, f"Invalid decimal: {source[decimal_key]}"
            ) from None
        if not exact.is_finite() or exact < 0:
            raise parameter_invalid(
                decimal_param, f"Invalid {decimal_key}: must be a non-negative decimal"
            )
        if exact != exact.quantize(Decimal("1e-12")):
            raise parameter_invalid(
                decimal_param, f"Invalid {decimal_key}: at most 12 decimal places are allowed"
            )
        # A whole decimal is also an integer amount; a sub-cent one leaves the integer null.
        whole = int(exact) if exact == exact.to_integral_value() else None
        return whole, decimal_text(exact)
    return None, None


def _tiers(params: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    raw = params.get("tiers")
    if not raw or not isinstance(raw, list):
        raise parameter_missing(param_name(prefix, "tiers"))
    tiers: list[dict[str, Any]] = []
    previous_bound = 0
    for index, tier in enumerate(raw):
        param = param_name(prefix, f"tiers[{index}]")
        if not isinstance(tier, dict) or tier.get("up_to") in (None, ""):
            raise parameter_missing(f"{param}[up_to]")
        last = index == len(raw) - 1
        if tier["up_to"] == "inf":
            if not last:
                raise StripeError(
                    "Only the last tier may have `up_to=inf`.", param=f"{param}[up_to]"
                )
            up_to = None
        else:
            up_to = as_int(tier, "up_to", param=f"{param}[up_to]")
            assert up_to is not None
            if last:
                raise StripeError("The last tier must have `up_to=inf`.", param=f"{param}[up_to]")
            if up_to <= previous_bound:
                raise StripeError(
                    "Tiers must be in ascending order of `up_to`, each above zero.",
                    param=f"{param}[up_to]",
                )
            previous_bound = up_to
        unit, unit_decimal = _amount_pair(tier, "unit_amount", "unit_amount_decimal", param)
        flat, flat_decimal = _amount_pair(tier, "flat_amount", "flat_amount_decimal", param)
        if unit_decimal is None and flat_decimal is None:
            raise StripeError(
                "Each tier needs at least one of `unit_amount`, `unit_amount_decimal`, "
                "`flat_amount` or `flat_amount_decimal`.",
                param=param,
            )
        tiers.append(
            {
                "flat_amount": flat,
                "flat_amount_decimal": flat_decimal,
                "unit_amount": unit,
                "unit_amount_decimal": unit_decimal,
                "up_to": up_to,
            }
        )
    return tiers


def _recurring(ctx: Ctx, raw: Any, prefix: str) -> dict[str, Any] | None:
    if raw is None:
        return None

    def name(key: str) -> str:
        return param_name(prefix, f"recurring[{key}]")

    if not isinstance(raw, dict) or not raw.get("interval"):
        raise parameter_missing(name("interval"))
    interval = raw["interval"]
    if interval not in _INTERVALS:
        raise parameter_invalid(
            name("interval"),
            "Invalid recurring[interval]: must be one of day, week, month, or year",
        )
    count = as_int(raw, "interval_count", 1, param=name("interval_count"))
    assert count is not None
    if count < 1 or count * _MAX_INTERVAL_DAYS[interval] > 3 * 366:
        raise StripeError(
            "The maximum billing interval is three years (3 years, 36 months, or 156 weeks).",
            param=name("interval_count"),
        )
    usage_type = raw.get("usage_type") or "licensed"
    if usage_type not in ("licensed", "metered"):
        raise parameter_invalid(
            name("usage_type"), "Invalid recurring[usage_type]: must be one of licensed or metered"
        )
    meter_id = raw.get("meter") or None
    if usage_type == "metered":
        if not meter_id:
            raise StripeError(
                "A meter is required for prices with `recurring[usage_type]=metered`: pass "
                "`recurring[meter]` (legacy usage records are not supported in this API version).",
                code="parameter_missing",
                param=name("meter"),
            )
        meter = reference(ctx.account, meter_id, "billing.meter", name("meter"), "meter")
        if meter["status"] != "active":
            raise StripeError(
                f"You can't attach a deactivated meter ({meter_id}) to a price.",
                param=name("meter"),
            )
    elif meter_id:
        raise StripeError(
            "`recurring[meter]` can only be set when `recurring[usage_type]=metered`.",
            param=name("meter"),
        )
    trial_days = as_int(raw, "trial_period_days", param=name("trial_period_days"))
    return {
        "interval": interval,
        "interval_count": count,
        "meter": meter_id,
        "usage_type": usage_type,
        "trial_period_days": trial_days,
    }


def lookup_key_owner(
    ctx: Ctx, lookup_key: str, *, besides: str | None = None
) -> dict[str, Any] | None:
    for price in ctx.account.where("price", lookup_key=lookup_key, active=True):
        if price["id"] != besides:
            return price
    return None


def check_lookup_key(
    ctx: Ctx, params: dict[str, Any], prefix: str, besides: str | None = None
) -> tuple[str | None, dict[str, Any] | None]:
    """The requested lookup key and the active price that must give it up (when transferring)."""
    lookup_key = params.get("lookup_key") or None
    if lookup_key is None:
        return None, None
    if len(lookup_key) > 200:
        raise parameter_invalid(
            param_name(prefix, "lookup_key"), "Invalid lookup_key: must be at most 200 characters"
        )
    owner = lookup_key_owner(ctx, lookup_key, besides=besides)
    if owner is not None and not as_bool(params, "transfer_lookup_key", False):
        raise StripeError(
            f"A price (`{owner['id']}`) already uses that lookup key. Pass "
            "`transfer_lookup_key=true` to transfer it to this price.",
            param=param_name(prefix, "lookup_key"),
        )
    return lookup_key, owner


def check_price_params(
    ctx: Ctx, params: dict[str, Any], *, param_prefix: str = "", product_pending: bool = False
) -> dict[str, Any]:
    """Validate price-create params and return the computed fields (without storing anything)."""
    prefix = param_prefix
    currency = currency_of(params, param=param_name(prefix, "currency"))
    if params.get("currency_options"):
        # Refused rather than ignored: a price silently missing its other currencies would bill
        # wrong amounts. One price per currency works instead.
        raise StripeError(
            "stripesim does not support `currency_options`; create one price per currency.",
            param=param_name(prefix, "currency_options"),
        )
    scheme = params.get("billing_scheme") or "per_unit"
    if scheme not in ("per_unit", "tiered"):
        raise parameter_invalid(
            param_name(prefix, "billing_scheme"),
            "Invalid billing_scheme: must be one of per_unit or tiered",
        )
    recurring = _recurring(ctx, params.get("recurring"), prefix)
    fields: dict[str, Any] = {
        "currency": currency,
        "billing_scheme": scheme,
        "recurring": recurring,
        "type": "recurring" if recurring else "one_time",
        "custom_unit_amount": None,
        "tiers_mode": None,
        "tiers": None,
        "transform_quantity": None,
        "unit_amount": None,
        "unit_amount_decimal": None,
    }
    if scheme == "tiered":
        fields.update(_tiered_amounts(params, prefix))
    else:
        fields.update(_per_unit_amounts(params, prefix, recurring=recurring is not None))
    fields["transform_quantity"] = _transform_quantity(params, prefix)
    fields["tax_behavior"] = _tax_behavior(params, prefix)
    _check_product(ctx, params, prefix, product_pending=product_pending)
    lookup_key, owner = check_lookup_key(ctx, params, prefix)
    fields["lookup_key"] = lookup_key
    fields["_lookup_owner"] = owner
    return fields


def _tiered_amounts(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Return `tiers_mode` and `tiers` of a tiered price; unit amounts belong on the tiers."""
    for key in ("unit_amount", "unit_amount_decimal"):
        if params.get(key) not in (None, ""):
            raise StripeError(
                f"`{key}` cannot be set with `billing_scheme=tiered`; set the amounts on `tiers`.",
                param=param_name(prefix, key),
            )
    mode = params.get("tiers_mode")
    if not mode:
        raise parameter_missing(param_name(prefix, "tiers_mode"))
    if mode not in ("graduated", "volume"):
        raise parameter_invalid(
            param_name(prefix, "tiers_mode"),
            "Invalid tiers_mode: must be one of graduated or volume",
        )
    tiers = _tiers(params, prefix)
    if params.get("transform_quantity"):
        raise StripeError(
            "`transform_quantity` cannot be combined with `billing_scheme=tiered`.",
            param=param_name(prefix, "transform_quantity"),
        )
    return {"tiers_mode": mode, "tiers": tiers}


def _per_unit_amounts(params: dict[str, Any], prefix: str, *, recurring: bool) -> dict[str, Any]:
    """Return the unit amount (or the customer-chosen `custom_unit_amount`) of a per-unit price."""
    if params.get("tiers") or params.get("tiers_mode"):
        raise StripeError(
            "`tiers` can only be set with `billing_scheme=tiered`.",
            param=param_name(prefix, "tiers"),
        )
    custom = params.get("custom_unit_amount")
    if isinstance(custom, dict) and as_bool(custom, "enabled", False):
        if recurring:
            raise StripeError(
                "`custom_unit_amount` is only supported for one-time prices.",
                param=param_name(prefix, "custom_unit_amount"),
            )
        return {
            "custom_unit_amount": {
                "maximum": as_int(custom, "maximum"),
                "minimum": as_int(custom, "minimum"),
                "preset": as_int(custom, "preset"),
            }
        }
    unit, unit_decimal = _amount_pair(params, "unit_amount", "unit_amount_decimal", prefix)
    if unit_decimal is None:
        raise parameter_missing(param_name(prefix, "unit_amount"))
    return {"unit_amount": unit, "unit_amount_decimal": unit_decimal}


def _transform_quantity(params: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    transform = params.get("transform_quantity")
    if not transform:
        return None
    divide_param = param_name(prefix, "transform_quantity[divide_by]")
    divide_by = as_int(transform, "divide_by", param=divide_param)
    rounding = transform.get("round")
    if not divide_by or divide_by < 1:
        raise StripeError(
            "transform_quantity[divide_by] must be a positive integer.", param=divide_param
        )
    if rounding not in ("up", "down"):
        raise parameter_invalid(
            param_name(prefix, "transform_quantity[round]"),
            "Invalid transform_quantity[round]: must be one of up or down",
        )
    return {"divide_by": divide_by, "round": rounding}


def tax_behavior_of(value: Any, param: str) -> str:
    """Return a price's `tax_behavior`, or Stripe's error for a value it does not know."""
    if value not in TAX_BEHAVIORS:
        raise parameter_invalid(
            param, "Invalid tax_behavior: must be one of inclusive, exclusive, unspecified"
        )
    return str(value)


def _tax_behavior(params: dict[str, Any], prefix: str) -> str:
    return tax_behavior_of(
        params.get("tax_behavior") or "unspecified", param_name(prefix, "tax_behavior")
    )


def _check_product(ctx: Ctx, params: dict[str, Any], prefix: str, *, product_pending: bool) -> None:
    """Check the price names one existing product, or describes a new one in `product_data`."""
    product_id = params.get("product")
    product_data = params.get("product_data")
    if product_id and product_data:
        raise StripeError(
            "You may only specify one of these parameters: product, product_data.",
            param=param_name(prefix, "product_data"),
        )
    if product_pending:
        return  # `default_price_data`: the product is being created with the price
    if product_id:
        reference(ctx.account, product_id, "product", param_name(prefix, "product"), "product")
    elif not product_data:
        raise parameter_missing(param_name(prefix, "product"))
    elif not product_data.get("name"):
        raise parameter_missing(param_name(prefix, "product_data[name]"))


def public_view(price: dict[str, Any], *, with_tiers: bool = False) -> dict[str, Any]:
    """The price as the API shows it: `tiers` only with `expand[]=tiers`, as at Stripe."""
    view = {key: value for key, value in price.items() if key != "tiers"}
    if with_tiers:
        view["tiers"] = price.get("tiers") or []
    return view


def transfer_lookup_key(ctx: Ctx, owner: dict[str, Any] | None) -> None:
    """Take the lookup key away from the price that had it (`transfer_lookup_key=true`)."""
    if owner is None:
        return
    previous = {"lookup_key": owner["lookup_key"]}
    owner["lookup_key"] = None
    ctx.emit("price.updated", public_view(owner), previous=previous)


def build_price(ctx: Ctx, params: dict[str, Any], *, param_prefix: str = "") -> dict[str, Any]:
    """Create, store and announce a price from create params (validated here)."""
    fields = check_price_params(ctx, params, param_prefix=param_prefix)
    owner = fields.pop("_lookup_owner")
    product_id = params.get("product")
    if not product_id:
        product_id = build_product(ctx, params["product_data"], param_prefix="product_data")["id"]
    tiers = fields.pop("tiers")
    price = ctx.build(
        "price",
        "price",
        created=ctx.now(),
        active=as_bool(params, "active", True),
        nickname=params.get("nickname") or None,
        product=product_id,
        **fields,
    )
    if tiers is not None:
        # Stored on the object for the billing engine; shown only with `expand[]=tiers`.
        price["tiers"] = tiers
    update_metadata(price, params.get("metadata"))
    transfer_lookup_key(ctx, owner)
    ctx.account.add(price)
    ctx.emit("price.created", public_view(price), created=price["created"])
    return price


def inline_price(ctx: Ctx, currency: str, unit_amount_decimal: str, name: str) -> dict[str, Any]:
    """Store the inactive price (and product) Stripe makes behind an amount-only invoice item."""
    # Stripe names it in the item's `pricing.price_details` and announces no event for either.
    now = ctx.now()
    product = ctx.build(
        "product", "prod", created=now, updated=now, active=False, name=name or "Invoice item"
    )
    ctx.account.add(product)
    exact = Decimal(unit_amount_decimal)
    price = ctx.build(
        "price",
        "price",
        created=now,
        active=False,
        currency=currency,
        product=product["id"],
        unit_amount=int(exact) if exact == exact.to_integral_value() else None,
        unit_amount_decimal=decimal_text(exact),
    )
    return ctx.account.add(price)


# -- amounts, for the billing engine ------------------------------------------------------------


def billable_quantity(price: dict[str, Any], quantity: int | Decimal) -> Decimal:
    """The quantity after `transform_quantity` (divide, then round up or down)."""
    amount = Decimal(quantity)
    transform = price.get("transform_quantity")
    if not transform:
        return amount
    divided = amount / Decimal(transform["divide_by"])
    rounding = ROUND_CEILING if transform["round"] == "up" else ROUND_FLOOR
    return divided.to_integral_value(rounding=rounding)


def _tier_amount(tier: dict[str, Any], units: Decimal) -> Decimal:
    unit = Decimal(tier["unit_amount_decimal"] or 0)
    flat = Decimal(tier["flat_amount_decimal"] or 0)
    return unit * units + (flat if units > 0 else Decimal(0))


def price_amount(price: dict[str, Any], quantity: int | Decimal) -> Decimal:
    """Return the exact (maybe sub-cent) amount, in minor units, of `quantity` units of `price`."""
    # Callers round it half-up per invoice line, as Stripe rounds line totals.
    units = billable_quantity(price, quantity)
    if price["billing_scheme"] != "tiered":
        if price.get("unit_amount_decimal") is None:
            return Decimal(0)
        return Decimal(price["unit_amount_decimal"]) * units
    tiers = price.get("tiers") or []
    if price["tiers_mode"] == "volume":
        # The whole quantity is priced at the tier it falls into.
        for tier in tiers:
            if tier["up_to"] is None or units <= tier["up_to"]:
                return _tier_amount(tier, units) if units > 0 else Decimal(0)
        return Decimal(0)
    total = Decimal(0)
    lower = Decimal(0)
    for tier in tiers:
        if units <= lower:
            break
        upper = units if tier["up_to"] is None else min(units, Decimal(tier["up_to"]))
        total += _tier_amount(tier, upper - lower)
        lower = upper
    return total


def metered_rate(price: dict[str, Any], product: dict[str, Any] | None = None) -> str:
    """Say what a usage-based price charges, as a hosted page shows it: "$0.50 per 1,000 runs".

    The unit is the product's `unit_label` ("run"), else "unit".
    """
    block = int((price.get("transform_quantity") or {}).get("divide_by") or 1)
    per_unit = Decimal(str(price.get("unit_amount_decimal") or price.get("unit_amount") or 0))
    minor = int((per_unit * block).quantize(Decimal(1), ROUND_HALF_UP))
    amount = format_amount(minor, price["currency"])
    unit = str((product or {}).get("unit_label") or "unit")
    units = unit if block == 1 or unit.endswith("s") else f"{unit}s"
    return f"{amount} per {units}" if block == 1 else f"{amount} per {block:,} {units}"
