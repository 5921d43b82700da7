"""Stripe calls that keep the catalog in step: meters, products, prices, coupons, promotion codes
and the Customer Portal's configurations (`catalog sync`, issue 20)."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from tollgate.domain.catalog_sync import (
    ArchivePrice,
    CatalogChange,
    CreateMeter,
    CreatePrice,
    CreateProduct,
    DesiredPrice,
    ExistingMeter,
    ExistingPrice,
    ExistingProduct,
    ReplacePrice,
    UpdateMeter,
    UpdateProduct,
    price_fingerprint,
)
from tollgate.domain.coupon_sync import CouponChange, CreateCoupon, DeleteCoupon
from tollgate.stripe.calls import StripeCalls, plain


class CatalogCalls(StripeCalls):
    """The catalog side of the gateway; `StripeGateway` adds customers, billing and money."""

    def portal_configurations(self) -> list[dict[str, Any]]:
        """Every Customer Portal configuration in the account (issue 20)."""
        return [
            config.to_dict(for_json=True)
            for config in self._list(
                "billing_portal.configurations.list",
                self._client.v1.billing_portal.configurations.list,
                {},
            )
        ]

    def create_portal_configuration(self, params: dict[str, Any], *, idempotency_key: str) -> str:
        """Create a Customer Portal configuration; returns its id."""
        created = self._call(
            "billing_portal.configurations.create",
            self._client.v1.billing_portal.configurations.create,
            params=params,
            idempotency_key=idempotency_key,
        )
        return str(created.id)

    def update_portal_configuration(self, configuration_id: str, params: dict[str, Any]) -> str:
        """Replace a Customer Portal configuration's features and metadata; returns its id."""
        updated = self._call(
            "billing_portal.configurations.update",
            self._client.v1.billing_portal.configurations.update,
            configuration_id,
            params=params,
        )
        return str(updated.id)

    def coupons(self) -> list[dict[str, Any]]:
        """Every coupon in the account."""
        return [
            coupon.to_dict(for_json=True)
            for coupon in self._list("coupons.list", self._client.v1.coupons.list, {})
        ]

    def promotion_codes(self) -> list[dict[str, Any]]:
        """Every active promotion code in the account."""
        return [
            code.to_dict(for_json=True)
            for code in self._list(
                "promotion_codes.list", self._client.v1.promotion_codes.list, {"active": True}
            )
        ]

    def apply_coupon_change(self, change: CouponChange) -> None:
        """Make one coupon or promotion code change (domain.coupon_sync)."""
        if isinstance(change, DeleteCoupon):
            self._call("coupons.delete", self._client.v1.coupons.delete, change.coupon_id)
            return
        if isinstance(change, CreateCoupon):
            if change.replaces:
                self._call("coupons.delete", self._client.v1.coupons.delete, change.coupon.id)
            self._call(
                "coupons.create", self._client.v1.coupons.create, params=change.coupon.params
            )
            return
        for code_id in change.deactivate:
            self._call(
                "promotion_codes.update",
                self._client.v1.promotion_codes.update,
                code_id,
                params={"active": False},
            )
        params: dict[str, Any] = {
            "code": change.code.code,
            "promotion": {"type": "coupon", "coupon": change.code.coupon},
        }
        if change.code.max_redemptions is not None:
            params["max_redemptions"] = change.code.max_redemptions
        if change.code.expires_at is not None:
            params["expires_at"] = change.code.expires_at
        self._call("promotion_codes.create", self._client.v1.promotion_codes.create, params=params)

    def promotion_code_id(self, code: str) -> str | None:
        """The id of the active promotion code `code`, if there is one."""
        found = self._call(
            "promotion_codes.list",
            self._client.v1.promotion_codes.list,
            params={"code": code, "active": True, "limit": 1},
        ).data
        return str(found[0].id) if found else None

    def catalog_state(
        self,
    ) -> tuple[list[ExistingProduct], list[ExistingPrice], list[ExistingMeter]]:
        """What Stripe holds now: every product, price (active or not) and billing meter."""
        v1 = self._client.v1
        meters = [
            ExistingMeter(m.id, m.event_name, m.display_name, m.status)
            for m in self._list("meters.list", v1.billing.meters.list, {})
        ]
        event_names = {meter.id: meter.event_name for meter in meters}
        products = [
            ExistingProduct(p.id, p.name, bool(p.active), plain(p.metadata), p.unit_label or None)
            for p in self._list("products.list", v1.products.list, {})
        ]
        prices = [
            _existing_price(price, event_names)
            for price in self._list("prices.list", v1.prices.list, {})
            if price.recurring is not None
        ]
        return products, prices, meters

    def apply_catalog_change(self, change: CatalogChange, meter_ids: dict[str, str]) -> None:
        """Make one planned change in Stripe; `meter_ids` maps event names to meter ids."""
        v1 = self._client.v1
        if isinstance(change, CreateMeter):
            meter = self._call(
                "meters.create",
                v1.billing.meters.create,
                params={
                    "display_name": change.meter.display_name,
                    "event_name": change.meter.event_name,
                    "default_aggregation": {"formula": change.meter.formula},
                    "customer_mapping": {
                        "type": "by_id",
                        "event_payload_key": "stripe_customer_id",
                    },
                    "value_settings": {"event_payload_key": "value"},
                },
                idempotency_key=f"meter-create-{change.meter.event_name}",
            )
            meter_ids[change.meter.event_name] = meter.id
        elif isinstance(change, UpdateMeter):
            meter_ids[change.meter.event_name] = change.existing.id
            if change.existing.status != "active":
                self._call("meters.reactivate", v1.billing.meters.reactivate, change.existing.id)
            if change.existing.display_name != change.meter.display_name:
                self._call(
                    "meters.update",
                    v1.billing.meters.update,
                    change.existing.id,
                    params={"display_name": change.meter.display_name},
                )
        elif isinstance(change, CreateProduct):
            self._call(
                "products.create",
                v1.products.create,
                params={
                    "id": change.product.id,
                    "name": change.product.name,
                    "metadata": change.product.metadata,
                    **(
                        {"unit_label": change.product.unit_label}
                        if change.product.unit_label
                        else {}
                    ),
                },
                idempotency_key=f"product-create-{change.product.id}",
            )
        elif isinstance(change, UpdateProduct):
            self._call(
                "products.update",
                v1.products.update,
                change.product.id,
                params={
                    "name": change.product.name,
                    "active": True,
                    "metadata": change.product.metadata,
                    # "" unsets a label the catalog no longer gives.
                    "unit_label": change.product.unit_label or "",
                },
            )
        elif isinstance(change, CreatePrice | ReplacePrice):
            transfer = isinstance(change, ReplacePrice) or change.transfer_lookup_key
            self._create_price(change.price, meter_ids, transfer_lookup_key=transfer)
            if isinstance(change, ReplacePrice):
                self._archive_price(change.old.id)
        elif isinstance(change, ArchivePrice):
            self._archive_price(change.old.id)
        else:  # pragma: no cover - the union is exhaustive
            raise TypeError(f"unknown catalog change {change!r}")

    def _create_price(
        self, price: DesiredPrice, meter_ids: dict[str, str], *, transfer_lookup_key: bool
    ) -> None:
        recurring: dict[str, Any] = {"interval": price.interval, "usage_type": price.usage_type}
        if price.meter_event_name:
            recurring["meter"] = meter_ids[price.meter_event_name]
        params: dict[str, Any] = {
            "product": price.product,
            "currency": price.currency,
            "recurring": recurring,
            "lookup_key": price.lookup_key,
            "transfer_lookup_key": transfer_lookup_key,
            "nickname": price.nickname or None,
            "metadata": price.metadata,
        }
        if price.unit_amount is not None:
            params["unit_amount"] = price.unit_amount
        else:
            params["unit_amount_decimal"] = price.unit_amount_decimal_text
        if price.transform_quantity:
            params["transform_quantity"] = price.transform_quantity
        params = {key: value for key, value in params.items() if value is not None}
        terms = hashlib.sha256(repr(price.fingerprint).encode()).hexdigest()[:16]
        self._call(
            "prices.create",
            self._client.v1.prices.create,
            params=params,
            idempotency_key=f"price-create-{price.lookup_key}-{terms}",
        )

    def _archive_price(self, price_id: str) -> None:
        self._call(
            "prices.update", self._client.v1.prices.update, price_id, params={"active": False}
        )

    def one_time_prices(self) -> list[dict[str, Any]]:
        """Every one-time price Tollgate made (lookup key `tollgate_…`), active or not."""
        return [
            {
                "id": price.id,
                "lookup_key": price.lookup_key,
                "product": price.product if isinstance(price.product, str) else price.product.id,
                "active": bool(price.active),
                "currency": price.currency,
                "unit_amount": price.unit_amount,
            }
            for price in self._list("prices.list", self._client.v1.prices.list, {})
            if price.recurring is None and (price.lookup_key or "").startswith("tollgate_")
        ]

    def create_one_time_price(
        self,
        *,
        lookup_key: str,
        product: str,
        currency: str,
        unit_amount: int,
        nickname: str,
        metadata: dict[str, str],
    ) -> None:
        """Create a one-time price, taking its lookup key from any price that holds it."""
        self._call(
            "prices.create",
            self._client.v1.prices.create,
            params={
                "product": product,
                "currency": currency,
                "unit_amount": unit_amount,
                "lookup_key": lookup_key,
                "transfer_lookup_key": True,
                "nickname": nickname,
                "metadata": metadata,
            },
            idempotency_key=f"price-create-{lookup_key}-{unit_amount}",
        )

    def archive_price(self, price_id: str) -> None:
        """Archive a price; whoever bought it keeps what they bought."""
        self._archive_price(price_id)

    def meter_ids(self) -> dict[str, str]:
        """Map each billing meter's event name to its id (an active meter over an inactive one)."""
        found: dict[str, str] = {}
        meters = self._list("meters.list", self._client.v1.billing.meters.list, {})
        for meter in sorted(meters, key=lambda meter: meter.status == "active"):
            found[str(meter.event_name)] = str(meter.id)
        return found


def _existing_price(price: Any, event_names: dict[str, str]) -> ExistingPrice:
    recurring = price.recurring
    amount = (
        price.unit_amount_decimal if price.unit_amount_decimal is not None else price.unit_amount
    )
    transform = price.transform_quantity
    return ExistingPrice(
        id=price.id,
        lookup_key=price.lookup_key,
        product=price.product if isinstance(price.product, str) else price.product.id,
        active=bool(price.active),
        fingerprint=price_fingerprint(
            currency=price.currency,
            interval=recurring.interval,
            usage_type=recurring.usage_type,
            unit_amount_decimal=Decimal(str(amount if amount is not None else 0)),
            meter_event_name=event_names.get(recurring.meter) if recurring.meter else None,
            divide_by=int(transform.divide_by) if transform else None,
        ),
    )
