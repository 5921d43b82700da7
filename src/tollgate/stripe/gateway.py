"""Every call Tollgate makes to Stripe goes through `StripeGateway`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from tollgate.stripe.calls import PINNED_API_VERSION, make_client, plain, stripe_time
from tollgate.stripe.catalog_calls import CatalogCalls
from tollgate.stripe.errors import StripeFailure, StripeNotFound
from tollgate.stripe.refund_calls import RefundCalls

__all__ = ["PINNED_API_VERSION", "StripeGateway", "make_client"]

log = logging.getLogger("tollgate.stripe")


class StripeGateway(CatalogCalls, RefundCalls):
    """Every call Tollgate makes to Stripe: the catalog calls, refunds, then customers, billing and
    money.

    See `StripeCalls` for the retries and errors every call shares.
    """

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
        return self._call_json(
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
        )

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
        return self._create_checkout_session(
            params=params,
            idempotency_key=f"checkout-create-{stripe_customer_id}-{request_id}",
        )

    def update_customer(
        self,
        stripe_customer_id: str,
        *,
        idempotency_key: str,
        email: str | None = None,
        name: str | None = None,
        address: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        tax_exempt: str | None = None,
    ) -> None:
        """Change the Stripe customer's email, name, address, metadata or tax status (None:
        left alone)."""
        params: dict[str, Any] = {}
        if tax_exempt is not None:
            params["tax_exempt"] = tax_exempt
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

    def tax_ids(self, stripe_customer_id: str) -> list[dict[str, Any]]:
        """The customer's tax IDs (id, type, value, country, verification)."""
        # A customer has at most 25: one page.
        page = self._call(
            "customers.tax_ids.list",
            self._client.v1.customers.tax_ids.list,
            stripe_customer_id,
            params={"limit": 100},
        )
        return [dict(tax_id.to_dict(for_json=True)) for tax_id in page.data]

    def add_tax_id(
        self, stripe_customer_id: str, *, kind: str, value: str, idempotency_key: str
    ) -> dict[str, Any]:
        """Add a tax ID to the customer; Stripe refuses a value not of the type's form."""
        return self._call_json(
            "customers.tax_ids.create",
            self._client.v1.customers.tax_ids.create,
            stripe_customer_id,
            params={"type": kind, "value": value},
            idempotency_key=idempotency_key,
        )

    def remove_tax_id(self, stripe_customer_id: str, tax_id: str) -> None:
        """Delete one of the customer's tax IDs (one already gone is no error)."""
        with contextlib.suppress(StripeNotFound):
            self._call(
                "customers.tax_ids.delete",
                self._client.v1.customers.tax_ids.delete,
                stripe_customer_id,
                tax_id,
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
        payment_method_types: list[str] | None = None,
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
            # Stripe Tax needs where the buyer is: Checkout asks for the billing address (and a
            # business's tax ID) and saves both on the existing customer, as Stripe requires.
            params["automatic_tax"] = {"enabled": True}
            params["billing_address_collection"] = "required"
            params["tax_id_collection"] = {"enabled": True}
            params["customer_update"] = {"address": "auto", "name": "auto"}
        if allow_promotion_codes:
            params["allow_promotion_codes"] = True
        if payment_method_types is not None:
            params["allowed_payment_method_types"] = payment_method_types
        return self._create_checkout_session(params=params, idempotency_key=idempotency_key)

    def _create_checkout_session(
        self, *, params: dict[str, Any], idempotency_key: str
    ) -> tuple[str, str]:
        """Create a Checkout Session; return its id and the URL to send the customer to."""
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
        return self._call_json(
            "subscriptions.create",
            self._client.v1.subscriptions.create,
            params=params,
            idempotency_key=idempotency_key,
        )

    def update_subscription(
        self, subscription_id: str, *, idempotency_key: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Update a subscription with Stripe's parameters; returns it."""
        return self._call_json(
            "subscriptions.update",
            self._client.v1.subscriptions.update,
            subscription_id,
            params=params,
            idempotency_key=idempotency_key,
        )

    def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict[str, Any]:
        """Cancel a subscription now; returns it."""
        return self._call_json(
            "subscriptions.cancel",
            self._client.v1.subscriptions.cancel,
            subscription_id,
            idempotency_key=idempotency_key,
        )

    def preview_subscription_invoice(
        self, *, stripe_customer_id: str, subscription_id: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        """Stripe's invoice preview of a subscription with `subscription_details` changes."""
        return self._call_json(
            "invoices.create_preview",
            self._client.v1.invoices.create_preview,
            params={
                "customer": stripe_customer_id,
                "subscription": subscription_id,
                "subscription_details": details,
            },
        )

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
            schedule = self._call_json(
                "subscription_schedules.create",
                self._client.v1.subscription_schedules.create,
                params={"from_subscription": subscription_id},
                idempotency_key=f"{idempotency_key}-schedule",
            )
        else:
            schedule = self._call_json(
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
        return self._call_json(
            "subscription_schedules.update",
            self._client.v1.subscription_schedules.update,
            schedule["id"],
            params={"phases": phases, "end_behavior": "release", "metadata": metadata},
            idempotency_key=f"{idempotency_key}-phases",
        )

    # -- catalog ---------------------------------------------------------------------------

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
        return self.retrieve_current("customer", customer_id).value

    def default_payment_method_type(
        self, customer_id: str, payment_method_id: str | None = None
    ) -> str | None:
        """The type of the payment method that pays (card, us_bank_account, …): the one named
        (a subscription's own default), else the customer's default."""
        if payment_method_id:
            named = self._call_json(
                "payment_methods.retrieve",
                self._client.v1.payment_methods.retrieve,
                payment_method_id,
            )
            return str(named.get("type") or "") or None
        customer = self._call_json(
            "customers.retrieve",
            self._client.v1.customers.retrieve,
            customer_id,
            params={"expand": ["invoice_settings.default_payment_method"]},
        )
        method = (customer.get("invoice_settings") or {}).get("default_payment_method")
        return str(method.get("type")) if isinstance(method, dict) else None

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription as Stripe has it now, with its items."""
        return self.retrieve_current("subscription", subscription_id).value

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        """The invoice as Stripe has it now."""
        return self.retrieve_current("invoice", invoice_id).value

    def retrieve_discounts(self, parent_id: str) -> list[dict[str, Any]]:
        """The discounts of a subscription (`sub_…`) or an invoice, each with its coupon."""
        params = {"expand": ["discounts.source.coupon"]}
        if parent_id.startswith("in_"):
            found: Any = self._call(
                "invoices.retrieve", self._client.v1.invoices.retrieve, parent_id, params=params
            )
        else:
            found = self._call(
                "subscriptions.retrieve",
                self._client.v1.subscriptions.retrieve,
                parent_id,
                params=params,
            )
        listed = dict(found.to_dict(for_json=True)).get("discounts") or []
        discounts = [item for item in listed if isinstance(item, dict) and not item.get("deleted")]
        for discount in discounts:
            source = discount.get("source") or {}
            coupon = source.get("coupon")
            if isinstance(coupon, dict) and coupon.get("amount_off") is not None:
                # Its amounts in other currencies come only when asked for.
                source["coupon"] = self._call_json(
                    "coupons.retrieve",
                    self._client.v1.coupons.retrieve,
                    coupon["id"],
                    params={"expand": ["currency_options"]},
                )
        return discounts

    def retrieve_tax_rates(self, rate_ids: str) -> list[dict[str, Any]]:
        """The tax rates named, comma-separated (`txr_a,txr_b`); those Stripe lacks left out."""
        found = []
        for rate_id in rate_ids.split(","):
            try:
                found.append(
                    self._call_json(
                        "tax_rates.retrieve", self._client.v1.tax_rates.retrieve, rate_id
                    )
                )
            except StripeNotFound:
                continue
        return found

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        """The charge as Stripe has it now."""
        return self.retrieve_current("charge", charge_id).value

    def retrieve_dispute(self, dispute_id: str) -> dict[str, Any]:
        """The dispute as Stripe has it now."""
        return self.retrieve_current("dispute", dispute_id).value

    def retrieve_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        """The PaymentIntent as Stripe has it now."""
        return self.retrieve_current("payment_intent", payment_intent_id).value

    def retrieve_cash_balance(self, stripe_customer_id: str) -> dict[str, Any]:
        """The customer's cash balance (bank transfers received, not yet applied) at Stripe."""
        return self._call_json(
            "customers.cash_balance.retrieve",
            self._client.v1.customers.cash_balance.retrieve,
            stripe_customer_id,
        )

    def list_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        """Every refund of the charge."""
        return [
            refund.to_dict(for_json=True)
            for refund in self._list(
                "refunds.list", self._client.v1.refunds.list, {"charge": charge_id}
            )
        ]

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
        return self._create_checkout_session(
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
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": page_size, **extra}
        while True:
            page = self._get_raw(f"{object_type}s.list", path, params).data
            objects: list[dict[str, Any]] = page["data"]
            if objects:
                yield objects
            if not page.get("has_more") or not objects:
                return
            params = {**params, "starting_after": objects[-1]["id"]}

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
                "metadata": plain(session.metadata),
            }

    def retrieve_object(self, object_type: str, object_id: str) -> dict[str, Any]:
        """The subscription, invoice, charge, refund or dispute as Stripe has it now."""
        return self.retrieve_current(object_type, object_id).value

    def retrieve_current(self, object_type: str, object_id: str) -> Current:
        """An object (a type of `CURRENT_OBJECTS`) as Stripe has it now, as plain JSON, with
        Stripe's clock when it answered.

        Read with a raw request, as the reconciliation's listings are: building the SDK's
        objects and turning them back into JSON cost more than the request itself.
        """
        path = CURRENT_OBJECTS[object_type].format(quote(object_id, safe=""))
        answer = self._get_raw(f"{object_type}s.retrieve", path)
        return Current(answer.data, stripe_time(answer.headers))

    def _get_raw(self, operation: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path` as a raw request, through `_call`'s backoff and errors: Stripe's answer
        as sent (`.data`, plain JSON; `.headers`), with no SDK objects built. With no
        parameters, a plain GET first (`PlainGets`); the SDK's request when that is not a 200."""
        plain = self._plain_gets if not params else None

        def get(*, params: dict[str, Any], options: dict[str, Any]) -> Any:
            if plain is not None:
                answer = plain.get(path, options.get("stripe_account"))
                if answer is not None:
                    return answer
            return self._client.raw_request("get", path, **params, **options)

        return self._call(operation, get, params=params)


@dataclass(frozen=True, slots=True)
class Current:
    """An object as Stripe has it now, and Stripe's clock (whole seconds) when it answered."""

    value: dict[str, Any]
    stripe_time: int | None


# Where each object `retrieve_current` reads is, by type.
CURRENT_OBJECTS = {
    "customer": "/v1/customers/{}",
    "subscription": "/v1/subscriptions/{}",
    "invoice": "/v1/invoices/{}",
    "charge": "/v1/charges/{}",
    "dispute": "/v1/disputes/{}",
    "payment_intent": "/v1/payment_intents/{}",
    "refund": "/v1/refunds/{}",
}

# Where each reconciled type is listed, and what else the list needs.
_LISTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    # Without `status=all` Stripe leaves out canceled subscriptions.
    "subscription": ("/v1/subscriptions", {"status": "all"}),
    "invoice": ("/v1/invoices", {}),
    "charge": ("/v1/charges", {}),
    "refund": ("/v1/refunds", {}),
    "dispute": ("/v1/disputes", {}),
}
