"""What Stripe must hold for the catalog's coupons and promotion codes, and the changes (issue 20).

Each catalog coupon is one Stripe coupon `tollgate_<coupon>`. An amount coupon carries its amount
in the catalog's currency (else its first) as `amount_off`/`currency` and the others as Stripe's
`currency_options`, so one coupon, and one promotion code, serve every currency it prices.
Stripe coupons cannot change their terms, so changed terms delete the coupon and make it again
(discounts already given keep the old terms: Stripe copies them). Each coupon's terms are
fingerprinted in its metadata (`tollgate_terms`), so the comparison does not depend on fields
Stripe leaves out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tollgate.domain.catalog import Catalog, Coupon
from tollgate.domain.catalog_sync import TOLLGATE_PREFIX, plan_product_id


def coupon_stripe_id(coupon: Coupon) -> str:
    """Return the id of the Stripe coupon that carries a catalog coupon."""
    return f"{TOLLGATE_PREFIX}{coupon.id}"


@dataclass(frozen=True)
class DesiredCoupon:
    """A Stripe coupon Tollgate needs: its id and its create parameters."""

    id: str
    params: dict[str, Any]
    terms: str  # the digest kept in metadata.tollgate_terms


@dataclass(frozen=True)
class DesiredPromotionCode:
    """A code buyers may type, for one Stripe coupon."""

    code: str
    coupon: str
    max_redemptions: int | None = None
    expires_at: int | None = None


def desired_coupons(catalog: Catalog) -> tuple[list[DesiredCoupon], list[DesiredPromotionCode]]:
    """Return the coupons and promotion codes Stripe must hold for the catalog."""
    coupons: list[DesiredCoupon] = []
    codes: list[DesiredPromotionCode] = []
    for coupon in catalog.coupons.values():
        stripe_id = coupon_stripe_id(coupon)
        params: dict[str, Any] = {
            "id": stripe_id,
            "name": coupon.name[:40],
            "duration": coupon.duration.value,
        }
        if coupon.percent_off is not None:
            params["percent_off"] = format(coupon.percent_off, "f")
        else:
            first, *others = sorted(
                coupon.amount_off, key=lambda code: (code != catalog.currency, code)
            )
            params["amount_off"] = coupon.amount_off[first]
            params["currency"] = first
            if others:
                params["currency_options"] = {
                    code: {"amount_off": coupon.amount_off[code]} for code in others
                }
        if coupon.duration_in_months is not None:
            params["duration_in_months"] = coupon.duration_in_months
        if coupon.max_redemptions is not None:
            params["max_redemptions"] = coupon.max_redemptions
        if coupon.redeem_by is not None:
            params["redeem_by"] = int(coupon.redeem_by.timestamp())
        if coupon.plans:
            params["applies_to"] = {"products": [plan_product_id(p) for p in coupon.plans]}
        terms = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        params["metadata"] = {"tollgate_coupon": coupon.id, "tollgate_terms": terms}
        coupons.append(DesiredCoupon(stripe_id, params, terms))
        for code in coupon.promotion_codes:
            expires = int(coupon.redeem_by.timestamp()) if coupon.redeem_by else None
            codes.append(DesiredPromotionCode(code, stripe_id, coupon.max_redemptions, expires))
    return coupons, codes


@dataclass(frozen=True)
class CreateCoupon:
    kind: ClassVar[str] = "create_coupon"
    coupon: DesiredCoupon
    replaces: bool = False

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        verb = "~" if self.replaces else "+"
        note = " (terms changed: made again; discounts given keep theirs)" if self.replaces else ""
        return f"{verb} coupon {self.coupon.id}{note}"


@dataclass(frozen=True)
class DeleteCoupon:
    kind: ClassVar[str] = "delete_coupon"
    coupon_id: str

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return f"- coupon {self.coupon_id} (discounts given keep it)"


@dataclass(frozen=True)
class CreatePromotionCode:
    kind: ClassVar[str] = "create_promotion_code"
    code: DesiredPromotionCode
    deactivate: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        return f"+ promotion code {self.code.code} for coupon {self.code.coupon}"


CouponChange = CreateCoupon | DeleteCoupon | CreatePromotionCode


def plan_coupon_changes(
    desired: tuple[list[DesiredCoupon], list[DesiredPromotionCode]],
    existing_coupons: Iterable[Mapping[str, Any]],
    existing_codes: Iterable[Mapping[str, Any]],
) -> list[CouponChange]:
    """Return the changes that make Stripe's coupons and codes match (`existing_*` as listed)."""
    coupons, codes = desired
    held = {
        str(item["id"]): item
        for item in existing_coupons
        if str(item["id"]).startswith(TOLLGATE_PREFIX)
    }
    changes: list[CouponChange] = []
    for wanted in coupons:
        current = held.get(wanted.id)
        if current is None:
            changes.append(CreateCoupon(wanted))
        elif (current.get("metadata") or {}).get("tollgate_terms") != wanted.terms:
            changes.append(CreateCoupon(wanted, replaces=True))
    wanted_ids = {wanted.id for wanted in coupons}
    changes += [
        DeleteCoupon(coupon_id) for coupon_id in sorted(held) if coupon_id not in wanted_ids
    ]
    replaced = {c.coupon.id for c in changes if isinstance(c, CreateCoupon) and c.replaces}
    active: dict[str, list[Mapping[str, Any]]] = {}
    for item in existing_codes:
        if item.get("active"):
            active.setdefault(str(item["code"]).upper(), []).append(item)
    for code in codes:
        found = active.get(code.code.upper(), [])
        coupon_of = [_coupon_of(item) for item in found]
        if found and all(c == code.coupon for c in coupon_of) and code.coupon not in replaced:
            continue
        changes.append(CreatePromotionCode(code, tuple(str(item["id"]) for item in found)))
    return changes


def _coupon_of(code: Mapping[str, Any]) -> str | None:
    promotion = code.get("promotion") or {}
    coupon = promotion.get("coupon") if isinstance(promotion, Mapping) else None
    if coupon is None:
        coupon = code.get("coupon")
    if isinstance(coupon, Mapping):
        return str(coupon.get("id"))
    return str(coupon) if coupon else None
