"""Every call Tollgate makes to Stripe goes through `StripeGateway`."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import stripe

from tollgate.config import ConfigError, Settings
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
from tollgate.metrics import STRIPE_CALLS, STRIPE_ERRORS, STRIPE_RATE_LIMIT_RETRIES
from tollgate.stripe.errors import (
    IdempotencyKeyReused,
    PaymentDeclined,
    StripeAuthenticationFailed,
    StripeFailure,
    StripeNotFound,
    StripeUnavailable,
)

log = logging.getLogger("tollgate.stripe")

# The API version this SDK release is generated for; every request is pinned to it.
PINNED_API_VERSION: str = stripe.api_version
T = TypeVar("T")


def make_client(settings: Settings) -> stripe.StripeClient:
    """A StripeClient for the configured key and API base, pinned and with network retries."""
    if settings.stripe_secret_key is None:
        raise ConfigError(
            "STRIPE_SECRET_KEY: required to talk to Stripe (sk_test_…, sk_live_… or rk_…)"
        )
    base = settings.stripe_api_base.rstrip("/") if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        stripe_version=PINNED_API_VERSION,
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base}
        if base
        else {},
        max_network_retries=settings.stripe_max_retries,
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_seconds),
    )


class StripeGateway:
    """Stripe in Tollgate's terms: plain values in and out, Tollgate's errors, safe retries.

    The SDK retries connection errors, timeouts, 409 and 5xx itself (`max_network_retries`), and
    reuses the request's idempotency key on each retry; 429 is retried here with backoff. Every
    write carries an idempotency key derived from local ids, so a retry never makes a second object.
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        stripe_account: str | None = None,
        rate_limit_retries: int = 4,
        rate_limit_backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._account = stripe_account
        self._rate_limit_retries = rate_limit_retries
        self._rate_limit_backoff = rate_limit_backoff
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        return cls(make_client(settings))

    def for_account(self, stripe_account: str | None) -> StripeGateway:
        """The same gateway acting on a connected account (`Stripe-Account` header)."""
        return StripeGateway(
            self._client,
            stripe_account=stripe_account,
            rate_limit_retries=self._rate_limit_retries,
            rate_limit_backoff=self._rate_limit_backoff,
            sleep=self._sleep,
        )

    # -- the one path every call takes -----------------------------------------------------

    def _call(
        self,
        operation: str,
        method: Callable[..., T],
        *args: Any,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> T:
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        if self._account:
            options["stripe_account"] = self._account
        attempt = 0
        while True:
            try:
                result = method(*args, params=params or {}, options=options)
            except stripe.RateLimitError as error:
                if attempt >= self._rate_limit_retries:
                    STRIPE_CALLS.labels(operation, "rate_limited").inc()
                    raise StripeUnavailable(f"Stripe kept rate-limiting {operation}") from error
                STRIPE_RATE_LIMIT_RETRIES.inc()
                self._sleep(self._rate_limit_backoff * 2**attempt)
                attempt += 1
                continue
            except stripe.StripeError as error:
                STRIPE_CALLS.labels(operation, "error").inc()
                STRIPE_ERRORS.labels(operation, str(error.http_status or "network")).inc()
                raise _translate(operation, error) from error
            STRIPE_CALLS.labels(operation, "ok").inc()
            return result

    def _list(
        self, operation: str, method: Callable[..., Any], params: dict[str, Any]
    ) -> Iterable[Any]:
        page = self._call(operation, method, params={"limit": 100, **params})
        yield from page.auto_paging_iter()

    # -- usage -----------------------------------------------------------------------------------

    def report_meter_event(
        self,
        *,
        event_name: str,
        stripe_customer_id: str,
        value: int,
        identifier: str,
        timestamp: int,
    ) -> bool:
        """Send usage to a billing meter; False if Stripe already has this `identifier`.

        Stripe counts an identifier once within 24 hours and refuses a repeat with a 400, so a
        resend after a timeout or a crash is recognised here and counted as done.
        """
        params = {
            "event_name": event_name,
            "identifier": identifier,
            "timestamp": timestamp,
            "payload": {"stripe_customer_id": stripe_customer_id, "value": str(value)},
        }
        try:
            self._call(
                "report_meter_event",
                self._client.v1.billing.meter_events.create,
                params=params,
                idempotency_key=f"meter-{identifier}",
            )
        except StripeFailure as error:
            if error.param == "identifier" and "already exists" in error.message:
                return False
            raise
        return True

    def charge_off_session(
        self,
        *,
        stripe_customer_id: str,
        amount_minor: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> dict[str, Any]:
        """Charge the customer's saved default payment method off-session (a PaymentIntent with
        confirm and off_session); returns the PaymentIntent. A card that needs its holder
        (3-D Secure) fails with `authentication_required`, as at Stripe."""
        customer = self.retrieve_customer(stripe_customer_id)
        settings = customer.get("invoice_settings") or {}
        method = settings.get("default_payment_method")
        if isinstance(method, dict):
            method = method.get("id")
        if not method:
            raise StripeFailure(
                "the customer has no saved payment method", code="no_payment_method"
            )
        return self._call(
            "charge_off_session",
            self._client.v1.payment_intents.create,
            params={
                "amount": amount_minor,
                "currency": currency,
                "customer": stripe_customer_id,
                "payment_method": str(method),
                "confirm": True,
                "off_session": True,
                "description": description,
                "metadata": metadata,
            },
            idempotency_key=idempotency_key,
        ).to_dict(for_json=True)

    def cancel_meter_event(self, *, event_name: str, identifier: str) -> None:
        """Cancel a meter event by its identifier (a meter event adjustment), once.

        Stripe takes a cancellation within 24 hours of the event; a repeat of one made is
        harmless (the idempotency key answers it again).
        """
        self._call(
            "cancel_meter_event",
            self._client.v1.billing.meter_event_adjustments.create,
            params={
                "event_name": event_name,
                "type": "cancel",
                "cancel": {"identifier": identifier},
            },
            idempotency_key=f"meter-cancel-{identifier}",
        )

    # -- customers and checkout ---------------------------------------------------------------

    def create_customer(
        self,
        *,
        customer_id: str,
        email: str,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        address: dict[str, str] | None = None,
        test_clock: str | None = None,
    ) -> str:
        """Create the Stripe customer for Tollgate customer `customer_id`; returns its `cus_` id."""
        params: dict[str, Any] = {
            "email": email,
            # Stamped so a dashboard search for the app's id finds the Stripe customer.
            "metadata": {**(metadata or {}), "tollgate_customer_id": customer_id},
        }
        if name:
            params["name"] = name
        if address:
            params["address"] = address
        if test_clock:
            params["test_clock"] = test_clock
        customer = self._call(
            "customers.create",
            self._client.v1.customers.create,
            params=params,
            idempotency_key=f"customer-create-{customer_id}",
        )
        return str(customer.id)

    def price_id(self, lookup_key: str) -> str:
        """The id of the active price holding `lookup_key`."""
        prices = self._call(
            "prices.list",
            self._client.v1.prices.list,
            params={"lookup_keys": [lookup_key], "active": True, "limit": 1},
        ).data
        if not prices:
            raise StripeNotFound(f"no active price has lookup key {lookup_key}; run catalog sync")
        return str(prices[0].id)

    def create_checkout_session(
        self,
        *,
        request_id: str,
        stripe_customer_id: str,
        price_lookup_key: str,
        quantity: int,
        success_url: str,
        cancel_url: str,
        trial_days: int = 0,
        client_reference_id: str | None = None,
    ) -> tuple[str, str]:
        """A subscription-mode Checkout Session; returns its id and hosted URL."""
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": stripe_customer_id,
            "line_items": [{"price": self.price_id(price_lookup_key), "quantity": quantity}],
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        if trial_days:
            params["subscription_data"] = {"trial_period_days": trial_days}
        if client_reference_id:
            params["client_reference_id"] = client_reference_id
        session = self._call(
            "checkout.sessions.create",
            self._client.v1.checkout.sessions.create,
            params=params,
            idempotency_key=f"checkout-create-{stripe_customer_id}-{request_id}",
        )
        return str(session.id), str(session.url)

    def update_customer(
        self,
        stripe_customer_id: str,
        *,
        idempotency_key: str,
        email: str | None = None,
        name: str | None = None,
        address: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Change the Stripe customer's email, name, address or metadata (None: left alone)."""
        params: dict[str, Any] = {}
        if email is not None:
            params["email"] = email
        if name is not None:
            params["name"] = name
        if address is not None:
            params["address"] = address
        if metadata is not None:
            params["metadata"] = metadata
        self._call(
            "customers.update",
            self._client.v1.customers.update,
            stripe_customer_id,
            params=params,
            idempotency_key=idempotency_key,
        )

    def price_ids(self, lookup_keys: Iterable[str]) -> dict[str, str]:
        """Return the ids of the active prices holding `lookup_keys`, by lookup key."""
        wanted = sorted(set(lookup_keys))
        found: dict[str, str] = {}
        # Stripe takes at most 10 lookup keys a request.
        for start in range(0, len(wanted), 10):
            chunk = wanted[start : start + 10]
            page = self._call(
                "prices.list",
                self._client.v1.prices.list,
                params={"lookup_keys": chunk, "active": True, "limit": 100},
            )
            found.update({str(price.lookup_key): str(price.id) for price in page.data})
        missing = [key for key in wanted if key not in found]
        if missing:
            raise StripeNotFound(
                f"no active price has lookup key {', '.join(missing)}; run `tollgate catalog sync`"
            )
        return found

    def open_checkout_session(
        self,
        *,
        idempotency_key: str,
        stripe_customer_id: str,
        line_items: list[tuple[str, int | None]],
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        trial_days: int = 0,
        trial_end_behavior: str = "create_invoice",
        automatic_tax: bool = False,
        application_fee_percent: Decimal | None = None,
        metadata: dict[str, str] | None = None,
        allow_promotion_codes: bool = False,
    ) -> tuple[str, str]:
        """Open a subscription-mode Checkout Session over (price id, quantity) lines.

        Returns the session's id and hosted URL. A quantity of None is a metered price.
        """
        subscription_data: dict[str, Any] = {
            "metadata": metadata or {},
            "trial_settings": {"end_behavior": {"missing_payment_method": trial_end_behavior}},
        }
        if trial_days:
            subscription_data["trial_period_days"] = trial_days
        if application_fee_percent is not None:
            subscription_data["application_fee_percent"] = float(application_fee_percent)
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": stripe_customer_id,
            "client_reference_id": client_reference_id,
            "line_items": [
                {"price": price} if quantity is None else {"price": price, "quantity": quantity}
                for price, quantity in line_items
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "subscription_data": subscription_data,
            "metadata": metadata or {},
        }
        if automatic_tax:
            params["automatic_tax"] = {"enabled": True}
        if allow_promotion_codes:
            params["allow_promotion_codes"] = True
        session = self._call(
            "checkout.sessions.create",
            self._client.v1.checkout.sessions.create,
            params=params,
            idempotency_key=idempotency_key,
        )
        return str(session.id), str(session.url)

    def open_portal_session(
        self,
        *,
        idempotency_key: str,
        stripe_customer_id: str,
        return_url: str,
        configuration: str | None = None,
    ) -> str:
        """Open a Customer Portal session (with Tollgate's configuration, if given); its URL."""
        params = {"customer": stripe_customer_id, "return_url": return_url}
        if configuration is not None:
            params["configuration"] = configuration
        session = self._call(
            "billing_portal.sessions.create",
            self._client.v1.billing_portal.sessions.create,
            params=params,
            idempotency_key=idempotency_key,
        )
        return str(session.url)

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

    def create_portal_configuration(self, params: dict[str, Any]) -> str:
        """Create a Customer Portal configuration; returns its id."""
        created = self._call(
            "billing_portal.configurations.create",
            self._client.v1.billing_portal.configurations.create,
            params=params,
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

    # -- subscriptions -----------------------------------------------------------------------

    def list_subscriptions(self, stripe_customer_id: str) -> list[dict[str, Any]]:
        """Every subscription of the customer that has not ended, newest first."""
        return [
            subscription.to_dict(for_json=True)
            for subscription in self._list(
                "subscriptions.list",
                self._client.v1.subscriptions.list,
                {"customer": stripe_customer_id},
            )
        ]

    def create_subscription(
        self, *, idempotency_key: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Create a subscription with Stripe's parameters; returns it."""
        created = self._call(
            "subscriptions.create",
            self._client.v1.subscriptions.create,
            params=params,
            idempotency_key=idempotency_key,
        )
        return dict(created.to_dict(for_json=True))

    def update_subscription(
        self, subscription_id: str, *, idempotency_key: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Update a subscription with Stripe's parameters; returns it."""
        updated = self._call(
            "subscriptions.update",
            self._client.v1.subscriptions.update,
            subscription_id,
            params=params,
            idempotency_key=idempotency_key,
        )
        return dict(updated.to_dict(for_json=True))

    def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict[str, Any]:
        """Cancel a subscription now; returns it."""
        canceled = self._call(
            "subscriptions.cancel",
            self._client.v1.subscriptions.cancel,
            subscription_id,
            idempotency_key=idempotency_key,
        )
        return dict(canceled.to_dict(for_json=True))

    def preview_subscription_invoice(
        self, *, stripe_customer_id: str, subscription_id: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        """Stripe's invoice preview of a subscription with `subscription_details` changes."""
        preview = self._call(
            "invoices.create_preview",
            self._client.v1.invoices.create_preview,
            params={
                "customer": stripe_customer_id,
                "subscription": subscription_id,
                "subscription_details": details,
            },
        )
        return dict(preview.to_dict(for_json=True))

    def schedule_subscription_change(
        self,
        subscription_id: str,
        *,
        schedule_id: str | None,
        idempotency_key: str,
        items: list[dict[str, Any]],
        interval: str,
        proration_behavior: str,
        metadata: dict[str, str],
    ) -> dict[str, Any] | None:
        """Change the subscription's items when its current period ends (issue 20), through a
        subscription schedule: its phase now, then the new items; released once they apply.

        `schedule_id` is the subscription's schedule, if it has one: one carrying `metadata`
        already is left alone; one with later phases of its own is not Tollgate's to change
        (None is returned).
        """
        if schedule_id is None:
            schedule = self._call(
                "subscription_schedules.create",
                self._client.v1.subscription_schedules.create,
                params={"from_subscription": subscription_id},
                idempotency_key=f"{idempotency_key}-schedule",
            ).to_dict(for_json=True)
        else:
            schedule = self._retrieve(
                "subscription_schedules.retrieve",
                self._client.v1.subscription_schedules.retrieve,
                schedule_id,
            )
            if all(schedule.get("metadata", {}).get(k) == v for k, v in metadata.items()):
                return schedule
            if len(schedule["phases"]) > 1:
                return None
        current = schedule["phases"][0]
        phases = [
            {
                "items": [
                    {"price": item["price"], "quantity": item["quantity"]}
                    if item.get("quantity") is not None
                    else {"price": item["price"]}
                    for item in current["items"]
                ],
                "start_date": current["start_date"],
                "end_date": current["end_date"],
            },
            {
                "items": items,
                "proration_behavior": proration_behavior,
                "duration": {"interval": interval, "interval_count": 1},
            },
        ]
        updated = self._call(
            "subscription_schedules.update",
            self._client.v1.subscription_schedules.update,
            schedule["id"],
            params={"phases": phases, "end_behavior": "release", "metadata": metadata},
            idempotency_key=f"{idempotency_key}-phases",
        )
        return dict(updated.to_dict(for_json=True))

    # -- coupons, promotion codes, discounts (issue 20) --------------------------------------

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

    # -- catalog ---------------------------------------------------------------------------

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
            ExistingProduct(p.id, p.name, bool(p.active), _plain(p.metadata), p.unit_label or None)
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

    # -- test clocks (test mode; `tollgate dev` moves one) -----------------------------------

    def create_test_clock(self, *, frozen_time: datetime, name: str) -> str:
        """Create a test clock frozen at `frozen_time`; return its `clock_` id."""
        clock = self._call(
            "test_clocks.create",
            self._client.v1.test_helpers.test_clocks.create,
            params={"frozen_time": int(frozen_time.timestamp()), "name": name},
        )
        return str(clock.id)

    def test_clock_time(self, clock_id: str) -> datetime:
        """Return the time a test clock is frozen at."""
        clock = self._call(
            "test_clocks.retrieve", self._client.v1.test_helpers.test_clocks.retrieve, clock_id
        )
        return datetime.fromtimestamp(int(clock.frozen_time), UTC)

    def advance_test_clock(self, clock_id: str, *, to: datetime) -> None:
        """Move a test clock forward to `to`; Stripe bills, renews and retries on the way."""
        self._call(
            "test_clocks.advance",
            self._client.v1.test_helpers.test_clocks.advance,
            clock_id,
            params={"frozen_time": int(to.timestamp())},
        )

    # -- reading objects back (webhook re-fetches) -----------------------------------------

    def webhook_endpoints(self) -> list[dict[str, Any]]:
        """The account's webhook endpoints (id, url, status, enabled_events; never the secret)."""
        return [
            endpoint.to_dict(for_json=True)
            for endpoint in self._list(
                "webhook_endpoints.list", self._client.v1.webhook_endpoints.list, {}
            )
        ]

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        """The customer as Stripe has it now (a deleted one is `{"id", "deleted": true}`)."""
        return self._retrieve("customers.retrieve", self._client.v1.customers.retrieve, customer_id)

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription as Stripe has it now, with its items."""
        return self._retrieve(
            "subscriptions.retrieve", self._client.v1.subscriptions.retrieve, subscription_id
        )

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        """The invoice as Stripe has it now."""
        return self._retrieve("invoices.retrieve", self._client.v1.invoices.retrieve, invoice_id)

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        """The charge as Stripe has it now."""
        return self._retrieve("charges.retrieve", self._client.v1.charges.retrieve, charge_id)

    def retrieve_dispute(self, dispute_id: str) -> dict[str, Any]:
        """The dispute as Stripe has it now."""
        return self._retrieve("disputes.retrieve", self._client.v1.disputes.retrieve, dispute_id)

    def list_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        """Every refund of the charge."""
        return [
            refund.to_dict(for_json=True)
            for refund in self._list(
                "refunds.list", self._client.v1.refunds.list, {"charge": charge_id}
            )
        ]

    def _retrieve(
        self, operation: str, method: Callable[..., Any], object_id: str
    ) -> dict[str, Any]:
        found = self._call(operation, method, object_id)
        return dict(found.to_dict(for_json=True))

    # -- credits (issue 8) -----------------------------------------------------------------

    def open_credit_checkout_session(
        self,
        *,
        idempotency_key: str,
        stripe_customer_id: str,
        price_lookup_key: str,
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        metadata: dict[str, str],
    ) -> tuple[str, str]:
        """Open a payment-mode Checkout Session for one credit pack; returns its id and URL."""
        session = self._call(
            "checkout.sessions.create",
            self._client.v1.checkout.sessions.create,
            params={
                "mode": "payment",
                "customer": stripe_customer_id,
                "client_reference_id": client_reference_id,
                "line_items": [{"price": self.price_id(price_lookup_key), "quantity": 1}],
                "success_url": success_url,
                "cancel_url": cancel_url,
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
            },
            idempotency_key=idempotency_key,
        )
        return str(session.id), str(session.url)

    def invoice_credit_overdraft(
        self,
        *,
        idempotency_key: str,
        stripe_customer_id: str,
        price_lookup_key: str,
        credits: int,
        description: str,
        metadata: dict[str, str],
    ) -> str:
        """Invoice overdrawn credits: a draft invoice, its item, then finalized; returns its id."""
        v1 = self._client.v1
        invoice = self._call(
            "invoices.create",
            v1.invoices.create,
            params={
                "customer": stripe_customer_id,
                "collection_method": "charge_automatically",
                "pending_invoice_items_behavior": "exclude",
                "description": description,
                "metadata": metadata,
            },
            idempotency_key=f"{idempotency_key}-invoice",
        )
        self._call(
            "invoiceitems.create",
            v1.invoice_items.create,
            params={
                "customer": stripe_customer_id,
                "invoice": invoice.id,
                "pricing": {"price": self.price_id(price_lookup_key)},
                "quantity": credits,
                "description": description,
                "metadata": metadata,
            },
            idempotency_key=f"{idempotency_key}-item",
        )
        if invoice.status == "draft":
            self._call(
                "invoices.finalize_invoice",
                v1.invoices.finalize_invoice,
                invoice.id,
                # Invoices made through the API are not collected unless told to: charge the
                # card now, and let Stripe retry a failed payment on its own schedule.
                params={"auto_advance": True},
                idempotency_key=f"{idempotency_key}-finalize",
            )
        return str(invoice.id)

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

    # -- reconciliation: what Stripe made in a window, a page at a time ----------------------

    def list_created_since(
        self, object_type: str, created_gte: int, *, page_size: int = 100
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of the `object_type`s Stripe made since `created_gte` (Unix seconds).

        Types: subscription (any status), invoice, charge, refund, dispute. One page is held at
        a time, and each page's call goes through the 429 backoff. Pages are read as plain JSON:
        building the SDK's objects cost ten times more than the request itself.
        """
        path, extra = _LISTINGS[object_type]

        def list_page(*, params: dict[str, Any], options: dict[str, Any]) -> Any:
            return self._client.raw_request("get", path, **params, **options).data

        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": page_size, **extra}
        while True:
            page = self._call(f"{object_type}s.list", list_page, params=params)
            objects: list[dict[str, Any]] = page["data"]
            if objects:
                yield objects
            if not page.get("has_more") or not objects:
                return
            params = {**params, "starting_after": objects[-1]["id"]}

    def meter_ids(self) -> dict[str, str]:
        """Map each billing meter's event name to its id (an active meter over an inactive one)."""
        found: dict[str, str] = {}
        meters = self._list("meters.list", self._client.v1.billing.meters.list, {})
        for meter in sorted(meters, key=lambda meter: meter.status == "active"):
            found[str(meter.event_name)] = str(meter.id)
        return found

    def meter_usage(self, meter_id: str, stripe_customer_id: str, start: int, end: int) -> Decimal:
        """What the meter aggregated for the customer in [start, end) (Unix seconds, whole minutes).

        Stripe aggregates only what it has processed; events sent in the last minutes may be
        missing yet.
        """
        service = self._client.v1.billing.meters.event_summaries

        def list_summaries(*, params: dict[str, Any], options: dict[str, Any]) -> Any:
            return service.list(meter_id, params=params, options=options)  # type: ignore[arg-type]

        summaries = self._list(
            "meter_event_summaries.list",
            list_summaries,
            {"customer": stripe_customer_id, "start_time": start, "end_time": end},
        )
        return sum((Decimal(str(summary.aggregated_value)) for summary in summaries), Decimal(0))

    def expire_checkout_session(self, session_id: str) -> bool:
        """Expire an open Checkout Session; False if it was no longer open (paid, expired)."""
        try:
            self._call(
                "checkout.sessions.expire", self._client.v1.checkout.sessions.expire, session_id
            )
        except StripeFailure as error:
            if "not in an expireable state" in error.message:
                return False
            raise
        return True

    def open_checkout_sessions(self, created_before: int) -> Iterator[dict[str, Any]]:
        """Yield the Checkout Sessions still open that were made before `created_before`."""
        sessions = self._list(
            "checkout.sessions.list",
            self._client.v1.checkout.sessions.list,
            {"status": "open", "created": {"lt": created_before}},
        )
        for session in sessions:
            yield {
                "id": str(session.id),
                "mode": session.mode,
                "created": int(session.created),
                "customer": session.customer if isinstance(session.customer, str) else None,
                "metadata": _plain(session.metadata),
            }

    def retrieve_object(self, object_type: str, object_id: str) -> dict[str, Any]:
        """The subscription, invoice, charge, refund or dispute as Stripe has it now."""
        if object_type == "refund":
            return self._retrieve("refunds.retrieve", self._client.v1.refunds.retrieve, object_id)
        retrieve: dict[str, Callable[[str], dict[str, Any]]] = {
            "subscription": self.retrieve_subscription,
            "invoice": self.retrieve_invoice,
            "charge": self.retrieve_charge,
            "dispute": self.retrieve_dispute,
        }
        return retrieve[object_type](object_id)


# Where each reconciled type is listed, and what else the list needs.
_LISTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    # Without `status=all` Stripe leaves out canceled subscriptions.
    "subscription": ("/v1/subscriptions", {"status": "all"}),
    "invoice": ("/v1/invoices", {}),
    "charge": ("/v1/charges", {}),
    "refund": ("/v1/refunds", {}),
    "dispute": ("/v1/disputes", {}),
}


def _plain(value: Any) -> dict[str, Any]:
    """A StripeObject (or None) as a plain dict."""
    return value.to_dict() if value is not None else {}


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


def _translate(operation: str, error: stripe.StripeError) -> StripeFailure:
    """Stripe's error as Tollgate's; messages are Stripe's, which never echo a full key."""
    message = error.user_message or str(error) or "Stripe error"
    body: dict[str, Any] = error.json_body if isinstance(error.json_body, dict) else {}
    details: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    # The SDK fills `code` for some error classes only; the body always has it.
    code = getattr(error, "code", None) or details.get("code")
    param = getattr(error, "param", None)
    if isinstance(error, stripe.IdempotencyError):
        return IdempotencyKeyReused(
            "this Idempotency-Key was used before with a different request; "
            "use a new key for a new request"
        )
    if isinstance(error, stripe.CardError):
        return PaymentDeclined(message, param=param, code=code)
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        return StripeAuthenticationFailed(
            f"Stripe refused the API key for {operation}: {message}", code=code
        )
    if isinstance(error, stripe.APIConnectionError):
        return StripeUnavailable(f"Stripe could not be reached for {operation}: {message}")
    if isinstance(error, stripe.InvalidRequestError) and error.http_status == 404:
        return StripeNotFound(message, param=param, code=code)
    if isinstance(error, stripe.APIError) or (error.http_status or 0) >= 500:
        return StripeUnavailable(f"Stripe failed during {operation}: {message}")
    return StripeFailure(f"Stripe rejected {operation}: {message}", param=param, code=code)
