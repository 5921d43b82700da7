"""Discounts (issue 20): apply a catalog coupon (or a promotion code) to a customer's
subscription, and read the discounts the mirror holds as the customer sees them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from tollgate.db.queries.audit import record_audit
from tollgate.db.queries.discounts import discounts_by_id
from tollgate.domain.coupon_sync import coupon_stripe_id
from tollgate.domain.errors import Conflict, InvalidRequest
from tollgate.services.customers import live_subscription, load_customer, stripe_customer
from tollgate.services.deps import Deps
from tollgate_client.views import SubscriptionDiscount


@dataclass(frozen=True)
class DiscountView:
    """A discount given: which coupon, on which subscription."""

    customer_id: str
    subscription_id: str
    coupon: str
    stripe_coupon: str
    promotion_code: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer_id,
            "subscription": self.subscription_id,
            "coupon": self.coupon,
            "stripe_coupon": self.stripe_coupon,
            "promotion_code": self.promotion_code,
        }


def apply_discount(
    deps: Deps,
    *,
    customer_id: str,
    coupon: str | None,
    promotion_code: str | None,
    actor: str,
) -> DiscountView:
    """Discount the customer's live subscription by a catalog coupon or one of its codes."""
    db, catalog, gateway, clock = deps.db, deps.catalog, deps.optional_stripe(), deps.clock
    if (coupon is None) == (promotion_code is None):
        raise InvalidRequest("give one of coupon or promotion_code", param="coupon")
    if promotion_code is not None:
        owner = next(
            (
                c
                for c in catalog.coupons.values()
                if promotion_code.upper() in {code.upper() for code in c.promotion_codes}
            ),
            None,
        )
        if owner is None:
            raise InvalidRequest(
                f"unknown promotion code {promotion_code!r}", param="promotion_code"
            )
        chosen = owner
    else:
        assert coupon is not None
        found = catalog.coupons.get(coupon)
        if found is None:
            known = ", ".join(sorted(catalog.coupons)) or "none"
            raise InvalidRequest(
                f"unknown coupon {coupon!r} (coupons are: {known})", param="coupon"
            )
        chosen = found
    with db.transaction() as session:
        row = load_customer(session, customer_id)
        stripe_id, target = stripe_customer(row, gateway)
        version = row.state_version  # a repeat now is the same request; after a change, new
    subscription = live_subscription(target, stripe_id)
    if subscription is None:
        raise Conflict(f"customer {customer_id!r} has no live subscription to discount", param="id")
    if subscription.plan and not chosen.applies_to(subscription.plan):
        raise InvalidRequest(
            f"coupon {chosen.id!r} is for {', '.join(chosen.plans)}, not {subscription.plan}",
            param="coupon",
        )
    stripe_coupon = coupon_stripe_id(chosen)
    if chosen.percent_off is None and (subscription.currency or "") not in chosen.amount_off:
        raise InvalidRequest(
            f"coupon {chosen.id!r} has no amount in {subscription.currency}", param="coupon"
        )
    if promotion_code is not None:
        spelled = next(c for c in chosen.promotion_codes if c.upper() == promotion_code.upper())
        code_id = target.promotion_code_id(spelled)
        if code_id is None:
            raise InvalidRequest(
                f"promotion code {promotion_code!r} is not active (run catalog sync)",
                param="promotion_code",
            )
        discounts: list[dict[str, str]] = [{"promotion_code": code_id}]
    else:
        discounts = [{"coupon": stripe_coupon}]
    key = f"discount-{customer_id}-{subscription.id}-{chosen.id}-{version}"
    target.update_subscription(
        subscription.id, idempotency_key=key, params={"discounts": discounts}
    )
    now = clock.now()
    with db.transaction() as session:
        record_audit(
            session.connection(),
            actor=actor,
            object_type="discount",
            object_id=f"{customer_id}/{subscription.id}",
            action="created",
            before=None,
            after={"coupon": chosen.id, "promotion_code": promotion_code},
            now=now,
            once=key,  # repeats sent at once all reach here: one row
        )
    return DiscountView(customer_id, subscription.id, chosen.id, stripe_coupon, promotion_code)


def discount_views(
    connection: Connection, discount_ids: Iterable[str], currency: str | None
) -> tuple[SubscriptionDiscount, ...]:
    """Return the mirrored discounts `discount_ids` name, in their order, amounts in `currency`.

    A discount not fetched from Stripe yet is left out (its event is still being applied).
    """
    ids = list(discount_ids)
    stored = discounts_by_id(connection, ids)
    return tuple(_discount_view(stored[d], currency) for d in ids if d in stored)


def _discount_view(row: Mapping[str, Any], currency: str | None) -> SubscriptionDiscount:
    amount, amount_currency = row["amount_off"], row["currency"]
    other = (row["amounts_off"] or {}).get(currency or "")
    if amount is not None and currency and amount_currency != currency and other is not None:
        amount, amount_currency = int(other), currency  # the coupon's `currency_options`
    percent = row["percent_off"]
    return SubscriptionDiscount(
        id=row["id"],
        coupon=row["catalog_coupon"] or row["coupon_id"],
        name=row["name"],
        percent_off=None if percent is None else _number(percent),
        amount_off=amount,
        currency=amount_currency if amount is not None else None,
        duration=row["duration"],
        duration_in_months=row["duration_in_months"],
        start=row["started_at"],
        end=row["ends_at"],
        promotion_code=row["promotion_code"],
    )


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value
