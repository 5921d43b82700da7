"""Translate Stripe's JSON objects (plain dicts, API version 2026-10-28) into Tollgate's snapshots.

Pure functions over dicts: event payloads and `StripeObject.to_dict()` results read the same.
Where the API moved a field, the current place is read first: an invoice names its subscription
under `parent.subscription_details.subscription`, and subscription periods live on the items
(`items.data[].current_period_*`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tollgate.domain.events import (
    BANK_TRANSFER,
    BankTransferSnapshot,
    ChargeSnapshot,
    CheckoutSessionSnapshot,
    CustomerSnapshot,
    DiscountSnapshot,
    DisputeSnapshot,
    InvoicePaymentSnapshot,
    InvoiceSnapshot,
    RefundSnapshot,
    SubscriptionItemSnapshot,
    SubscriptionSnapshot,
    TaxIdSnapshot,
    TaxRateSnapshot,
)

APP_ID_KEY = "tollgate_customer_id"
PLAN_KEY = "tollgate_plan"
PLAN_VERSION_KEY = "tollgate_plan_version"
FEATURE_KEY = "tollgate_feature"


def object_id(value: Any) -> str | None:
    """Return the id of a field that is either an id or an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def timestamp(value: Any) -> datetime | None:
    """Return Stripe's Unix seconds as an aware UTC datetime."""
    if value is None:
        return None  # most of them: a subscription's cancel_at, ended_at, trial_start, …
    # Exact types (JSON's own; a bool is not seconds): cheaper than isinstance on the hot path.
    kind = type(value)
    if kind is int:
        seconds = value
    elif kind is float or (kind is not bool and isinstance(value, int | float)):
        seconds = int(value)
    else:
        return None
    found = _INSTANTS.get(seconds)
    if found is None:
        if len(_INSTANTS) >= 4096:
            _INSTANTS.clear()
        found = _INSTANTS[seconds] = datetime.fromtimestamp(seconds, UTC)
    return found


# Webhooks carry the same few instants again and again (a subscription's periods, its trial),
# and an aware datetime is immutable: each is made once.
_INSTANTS: dict[int, datetime] = {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items() if item is not None}


def _list_data(value: Any) -> list[dict[str, Any]] | None:
    """Return a list object's complete data, or None when absent or only a first page."""
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        return None
    if value.get("has_more"):
        return None
    return [item for item in value["data"] if isinstance(item, dict)]


def customer_snapshot(obj: dict[str, Any], *, deleted: bool = False) -> CustomerSnapshot:
    """Return the customer; `deleted` marks one whose `customer.deleted` event this is."""
    metadata = _metadata(obj.get("metadata"))
    currency = _str(obj.get("currency"))
    # Positional, in the fields' order (see CustomerSnapshot).
    return CustomerSnapshot(
        str(obj["id"]),  # stripe_id
        metadata.get(APP_ID_KEY) or str(obj["id"]),  # app_id
        _str(obj.get("email")),
        _str(obj.get("name")),
        currency.lower() if currency else None,
        metadata,
        deleted or bool(obj.get("deleted")),
        _address(obj.get("address")),
        _str(obj.get("tax_exempt")),
    )


def _address(value: Any) -> dict[str, str] | None:
    """Return an address with only the fields that are set (None when none is)."""
    found = {key: str(part) for key, part in _dict(value).items() if part not in (None, "")}
    return found or None


def tax_id_snapshot(obj: dict[str, Any], *, deleted: bool = False) -> TaxIdSnapshot:
    """Return a customer's tax ID; `deleted` marks one whose `customer.tax_id.deleted` this is."""
    return TaxIdSnapshot(
        id=str(obj["id"]),
        stripe_customer_id=object_id(obj.get("customer"))
        or object_id(_dict(obj.get("owner")).get("customer"))
        or "",
        type=str(obj.get("type") or ""),
        value=str(obj.get("value") or ""),
        country=_str(obj.get("country")),
        verification=_str(_dict(obj.get("verification")).get("status")),
        deleted=deleted or bool(obj.get("deleted")),
    )


def tax_rate_snapshot(obj: dict[str, Any]) -> TaxRateSnapshot:
    """Return a tax rate's terms (the percentage as exact text)."""
    percentage = obj.get("percentage")
    exact = format(percentage, "g") if isinstance(percentage, int | float) else str(percentage)
    return TaxRateSnapshot(
        id=str(obj["id"]),
        display_name=str(obj.get("display_name") or "Tax"),
        jurisdiction=_str(obj.get("jurisdiction")),
        percentage=exact,
        inclusive=bool(obj.get("inclusive")),
    )


def _tax_amounts(obj: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """Return (tax rate id, amount) per tax: `total_taxes`, else the older `total_tax_amounts`."""
    if obj.get("total_taxes") is not None:
        return tuple(
            (found, _int(entry.get("amount")))
            for entry in obj.get("total_taxes") or []
            if isinstance(entry, dict)
            and (found := object_id(_dict(entry.get("tax_rate_details")).get("tax_rate")))
        )
    return tuple(
        (found, _int(entry.get("amount")))
        for entry in obj.get("total_tax_amounts") or []
        if isinstance(entry, dict) and (found := object_id(entry.get("tax_rate")))
    )


def subscription_item_snapshot(obj: dict[str, Any]) -> SubscriptionItemSnapshot:
    """Return one subscription item, with its price's plan and feature from metadata."""
    price = _dict(obj.get("price"))
    recurring = _dict(price.get("recurring"))
    # Three keys of the metadata, each as `_metadata` has it (text, or None when unset), read
    # without copying the whole of it: every subscription event reads them for every item.
    metadata = _dict(price.get("metadata"))
    quantity = obj.get("quantity")
    # Positional, in the fields' order (see SubscriptionItemSnapshot).
    return SubscriptionItemSnapshot(
        str(obj["id"]),
        object_id(obj.get("price")) or "",  # price_id
        _str(price.get("lookup_key")),
        _str(recurring.get("usage_type")),
        quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None,
        _str(recurring.get("interval")),
        _metadata_value(metadata, PLAN_KEY),  # plan
        _metadata_value(metadata, FEATURE_KEY),  # feature
        timestamp(obj.get("current_period_start")),
        timestamp(obj.get("current_period_end")),
        _version(_metadata_value(metadata, PLAN_VERSION_KEY)),  # plan_version
    )


def _metadata_value(metadata: dict[str, Any], key: str) -> str | None:
    """Return one key of metadata as `_metadata(...).get(key)` would."""
    value = metadata.get(key)
    return None if value is None else str(value)


def _version(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def subscription_snapshot(obj: dict[str, Any]) -> SubscriptionSnapshot:
    """Return the subscription with its items (items in id order, so snapshots compare)."""
    items = _list_data(obj.get("items")) or []
    currency = _str(obj.get("currency"))
    # Positional, in the fields' order (see SubscriptionSnapshot).
    return SubscriptionSnapshot(
        str(obj["id"]),
        object_id(obj.get("customer")) or "",  # stripe_customer_id
        str(obj.get("status") or "incomplete"),
        bool(obj.get("cancel_at_period_end")),
        timestamp(obj.get("cancel_at")),
        timestamp(obj.get("canceled_at")),
        timestamp(obj.get("ended_at")),
        timestamp(obj.get("trial_start")),
        timestamp(obj.get("trial_end")),
        _str(obj.get("collection_method")),
        currency.lower() if currency else None,
        object_id(obj.get("latest_invoice")),
        _item_snapshots(items),
        _ids(obj.get("discounts")),  # discount_ids
        object_id(obj.get("default_payment_method")),
        _method_types(obj.get("payment_settings")),  # payment_method_types
        obj.get("pending_update") is not None,  # change_pending
    )


def _item_snapshots(items: list[dict[str, Any]]) -> tuple[SubscriptionItemSnapshot, ...]:
    """Return the items' snapshots in id order (most subscriptions have one: nothing to sort)."""
    if len(items) == 1:
        return (subscription_item_snapshot(items[0]),)
    return tuple(sorted((subscription_item_snapshot(item) for item in items), key=_item_id))


def _item_id(item: SubscriptionItemSnapshot) -> str:
    return item.id


def _method_types(settings: Any) -> tuple[str, ...] | None:
    types = settings.get("payment_method_types") if isinstance(settings, dict) else None
    return tuple(str(kind) for kind in types) if types else None


def _ids(value: Any) -> tuple[str, ...]:
    """Return the ids of a list of ids or expanded objects."""
    if not isinstance(value, list):
        return ()
    return tuple(found for found in (object_id(item) for item in value) if found)


def discount_snapshot(obj: dict[str, Any]) -> DiscountSnapshot:
    """Return a discount whose coupon is expanded (`source.coupon`, or the older `coupon`)."""
    source = _dict(obj.get("source"))
    coupon = _dict(source.get("coupon")) or _dict(obj.get("coupon"))
    coupon_id = object_id(source.get("coupon")) or object_id(obj.get("coupon")) or ""
    percent = coupon.get("percent_off")
    currency = _str(coupon.get("currency"))
    options = _dict(coupon.get("currency_options"))
    return DiscountSnapshot(
        id=str(obj["id"]),
        stripe_customer_id=object_id(obj.get("customer")),
        subscription_id=object_id(obj.get("subscription")),
        coupon_id=coupon_id,
        catalog_coupon=_metadata(coupon.get("metadata")).get("tollgate_coupon"),
        name=_str(coupon.get("name")),
        percent_off=None if isinstance(percent, bool) or percent is None else format(percent, "g"),
        amount_off=coupon.get("amount_off") if isinstance(coupon.get("amount_off"), int) else None,
        currency=currency.lower() if currency else None,
        amounts_off={
            str(code).lower(): _int(_dict(option).get("amount_off"))
            for code, option in options.items()
            if str(code).lower() != (currency or "").lower()
        },
        duration=str(coupon.get("duration") or "once"),
        duration_in_months=_int(coupon.get("duration_in_months"), 0) or None,
        promotion_code=object_id(obj.get("promotion_code")),
        start=timestamp(obj.get("start")),
        end=timestamp(obj.get("end")),
    )


def invoice_subscription_id(obj: dict[str, Any]) -> str | None:
    """Return the invoice's subscription: `parent.subscription_details`, else the old field."""
    details = _dict(_dict(obj.get("parent")).get("subscription_details"))
    if object_id(details.get("subscription")):
        return object_id(details.get("subscription"))
    return object_id(obj.get("subscription"))


def invoice_payment_snapshot(obj: dict[str, Any], invoice_id: str) -> InvoicePaymentSnapshot:
    """Return one `invoice_payment`: which PaymentIntent or charge paid the invoice."""
    payment = _dict(obj.get("payment"))
    return InvoicePaymentSnapshot(
        id=str(obj["id"]),
        invoice_id=object_id(obj.get("invoice")) or invoice_id,
        payment_intent=object_id(payment.get("payment_intent")),
        charge_id=object_id(payment.get("charge")),
        status=_str(obj.get("status")),
    )


def invoice_snapshot(obj: dict[str, Any]) -> InvoiceSnapshot:
    """Return the invoice, with the payments the payload lists (`payments`, when included)."""
    invoice_id = str(obj["id"])
    payments = _list_data(obj.get("payments")) or []
    return InvoiceSnapshot(
        id=invoice_id,
        stripe_customer_id=object_id(obj.get("customer")) or "",
        subscription_id=invoice_subscription_id(obj),
        status=_str(obj.get("status")),
        currency=str(obj.get("currency") or "").lower(),
        amount_due=_int(obj.get("amount_due")),
        amount_paid=_int(obj.get("amount_paid")),
        amount_remaining=_int(obj.get("amount_remaining")),
        total=_int(obj.get("total")),
        attempt_count=_int(obj.get("attempt_count")),
        next_payment_attempt=timestamp(obj.get("next_payment_attempt")),
        hosted_invoice_url=_str(obj.get("hosted_invoice_url")),
        invoice_pdf=_str(obj.get("invoice_pdf")),
        billing_reason=_str(obj.get("billing_reason")),
        number=_str(obj.get("number")),
        period_start=timestamp(obj.get("period_start")),
        period_end=timestamp(obj.get("period_end")),
        payments=tuple(
            invoice_payment_snapshot(payment, invoice_id)
            for payment in payments
            if isinstance(payment.get("id"), str)
        ),
        subtotal=obj.get("subtotal") if isinstance(obj.get("subtotal"), int) else None,
        discount_amounts=tuple(
            (found, _int(entry.get("amount")))
            for entry in obj.get("total_discount_amounts") or []
            if isinstance(entry, dict) and (found := object_id(entry.get("discount")))
        ),
        tax=sum(_int(tax.get("amount")) for tax in obj.get("total_taxes") or []),
        tax_amounts=_tax_amounts(obj),
        customer_tax_exempt=_str(obj.get("customer_tax_exempt")),
        payment_method_types=tuple(
            str(kind)
            for kind in _dict(obj.get("payment_settings")).get("payment_method_types") or []
        ),
    )


def bank_transfer_snapshot(obj: dict[str, Any]) -> BankTransferSnapshot | None:
    """Return a bank-transfer PaymentIntent (None for any other kind of payment)."""
    if BANK_TRANSFER not in (obj.get("payment_method_types") or []):
        return None
    shown = _dict(_dict(obj.get("next_action")).get("display_bank_transfer_instructions"))
    account = None
    for address in shown.get("financial_addresses") or []:
        aba = _dict(_dict(address).get("aba"))
        if aba:
            keys = ("bank_name", "routing_number", "account_number", "account_holder_name")
            account = {key: str(aba.get(key) or "") for key in keys}
            break
    status = str(obj.get("status") or "")
    amount = _int(obj.get("amount"))
    remaining = (
        _int(shown.get("amount_remaining"), amount)
        if shown
        else (0 if status == "succeeded" else amount - _int(obj.get("amount_received")))
    )
    return BankTransferSnapshot(
        id=str(obj["id"]),
        stripe_customer_id=object_id(obj.get("customer")) or "",
        amount=amount,
        amount_remaining=remaining,
        currency=str(obj.get("currency") or "").lower(),
        status=status,
        reference=_str(shown.get("reference")),
        account=account,
        instructions_url=_str(shown.get("hosted_instructions_url")),
    )


def refund_snapshot(obj: dict[str, Any]) -> RefundSnapshot:
    """Return one refund."""
    return RefundSnapshot(
        id=str(obj["id"]),
        charge_id=object_id(obj.get("charge")),
        amount=_int(obj.get("amount")),
        currency=str(obj.get("currency") or "").lower(),
        status=_str(obj.get("status")),
        reason=_str(obj.get("reason")),
    )


def charge_snapshot(obj: dict[str, Any]) -> ChargeSnapshot:
    """Return the charge; `refunds` is None unless the payload lists every refund."""
    refunds = _list_data(obj.get("refunds"))
    return ChargeSnapshot(
        id=str(obj["id"]),
        stripe_customer_id=object_id(obj.get("customer")),
        payment_intent=object_id(obj.get("payment_intent")),
        amount=_int(obj.get("amount")),
        amount_refunded=_int(obj.get("amount_refunded")),
        currency=str(obj.get("currency") or "").lower(),
        status=str(obj.get("status") or "pending"),
        refunded=bool(obj.get("refunded")),
        disputed=bool(obj.get("disputed")),
        refunds=None if refunds is None else tuple(refund_snapshot(r) for r in refunds),
        payment_method_type=_str((obj.get("payment_method_details") or {}).get("type")),
    )


def dispute_snapshot(obj: dict[str, Any]) -> DisputeSnapshot:
    """Return the dispute."""
    return DisputeSnapshot(
        id=str(obj["id"]),
        charge_id=object_id(obj.get("charge")) or "",
        payment_intent=object_id(obj.get("payment_intent")),
        amount=_int(obj.get("amount")),
        currency=str(obj.get("currency") or "").lower(),
        status=str(obj.get("status") or ""),
        reason=_str(obj.get("reason")),
        evidence_due_by=timestamp((obj.get("evidence_details") or {}).get("due_by")),
    )


def checkout_session_snapshot(obj: dict[str, Any]) -> CheckoutSessionSnapshot:
    """Return the Checkout Session's customer and subscription."""
    return CheckoutSessionSnapshot(
        id=str(obj["id"]),
        mode=_str(obj.get("mode")),
        stripe_customer_id=object_id(obj.get("customer")),
        subscription_id=object_id(obj.get("subscription")),
        client_reference_id=_str(obj.get("client_reference_id")),
    )
