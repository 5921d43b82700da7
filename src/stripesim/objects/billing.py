"""Billing: subscriptions and their items and schedules, invoices, invoice items, credit notes,
coupons, promotion codes, tax rates and test clocks."""

from __future__ import annotations

from typing import Any

from stripesim.objects.base import template
from stripesim.objects.catalog import plan, price


@template("subscription")
def subscription() -> dict[str, Any]:
    return {
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "billing_cycle_anchor": 0,
        "billing_cycle_anchor_config": None,
        "cancel_at": None,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": 0,
        "currency": "",
        "customer": "",
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": None,
        "id": "",
        "invoice_settings": {
            "account_tax_ids": None,
            "issuer": {"type": "self"},
            "custom_fields": None,
            "description": None,
            "footer": None,
        },
        "items": {"object": "list", "data": [], "has_more": False, "url": ""},
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "next_pending_invoice_item_invoice": None,
        "object": "subscription",
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": 0,
        "status": "incomplete",
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
        "cancel_at_period_end": False,
        "billing_thresholds": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": 0},
        "customer_account": None,
        "managed_payments": None,
        "billing_schedules": [],
    }


@template("subscription_item")
def subscription_item() -> dict[str, Any]:
    # A metered item has no quantity: Stripe leaves the key out (see billing.items.new_item).
    return {
        "created": 0,
        "discounts": [],
        "id": "",
        "metadata": {},
        "object": "subscription_item",
        "price": price(),
        "quantity": 1,
        "subscription": "",
        "tax_rates": [],
        "plan": plan(),
        "current_period_end": 0,
        "current_period_start": 0,
        "billing_thresholds": None,
    }


@template("invoice")
def invoice() -> dict[str, Any]:
    return {
        "account_country": None,
        "account_name": None,
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": False,
        "automatic_tax": {
            "enabled": False,
            "liability": None,
            "status": None,
            "disabled_reason": None,
            "provider": None,
        },
        "billing_reason": None,
        "collection_method": "charge_automatically",
        "created": 0,
        "currency": "",
        "custom_fields": None,
        "customer": None,
        "customer_address": None,
        "customer_email": None,
        "customer_name": None,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "id": "",
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {"object": "list", "data": [], "has_more": False, "url": ""},
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "object": "invoice",
        "on_behalf_of": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": 0,
        "period_start": 0,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "webhooks_delivered_at": None,
        "automatically_finalizes_at": None,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "amount_overpaid": 0,
        "parent": None,
        "customer_account": None,
    }


@template("line_item")
def line_item() -> dict[str, Any]:
    return {
        "amount": 0,
        "currency": "",
        "description": None,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "id": "",
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "object": "line_item",
        "period": {"end": 0, "start": 0},
        "quantity": None,
        "subscription": None,
        "pretax_credit_amounts": [],
        "taxes": [],
        "parent": None,
        "pricing": None,
        "subtotal": 0,
        "quantity_decimal": None,
    }


@template("invoiceitem")
def invoiceitem() -> dict[str, Any]:
    return {
        "amount": 0,
        "currency": "",
        "customer": "",
        "date": 0,
        "description": None,
        "discountable": True,
        "discounts": [],
        "id": "",
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "object": "invoiceitem",
        "period": {"end": 0, "start": 0},
        "proration": False,
        "quantity": 1,
        "tax_rates": [],
        "test_clock": None,
        "parent": None,
        "pricing": None,
        "net_amount": 0,
        "customer_account": None,
        "quantity_decimal": "1",
    }


@template("credit_note")
def credit_note() -> dict[str, Any]:
    return {
        "amount": 0,
        "amount_shipping": 0,
        "created": 0,
        "currency": "",
        "customer": "",
        "customer_balance_transaction": None,
        "discount_amount": 0,
        "discount_amounts": [],
        "effective_at": None,
        "id": "",
        "invoice": "",
        "lines": {"object": "list", "data": [], "has_more": False, "url": ""},
        "livemode": False,
        "memo": None,
        "metadata": {},
        "number": "",
        "object": "credit_note",
        "out_of_band_amount": None,
        "pdf": "",
        "shipping_cost": None,
        "status": "issued",
        "subtotal": 0,
        "subtotal_excluding_tax": None,
        "total": 0,
        "total_excluding_tax": None,
        "type": "pre_payment",
        "voided_at": None,
        "pretax_credit_amounts": [],
        "total_taxes": [],
        "refunds": [],
        "post_payment_amount": 0,
        "pre_payment_amount": 0,
        "reason": None,
        "customer_account": None,
    }


@template("credit_note_line_item")
def credit_note_line_item() -> dict[str, Any]:
    return {
        "amount": 0,
        "description": None,
        "discount_amount": 0,
        "discount_amounts": [],
        "id": "",
        "invoice_line_item": None,
        "livemode": False,
        "object": "credit_note_line_item",
        "quantity": None,
        "tax_rates": [],
        "type": "invoice_line_item",
        "unit_amount": None,
        "unit_amount_decimal": None,
        "pretax_credit_amounts": [],
        "taxes": [],
        "metadata": {},
    }


@template("subscription_schedule")
def subscription_schedule() -> dict[str, Any]:
    return {
        "application": None,
        "canceled_at": None,
        "completed_at": None,
        "created": 0,
        "current_phase": None,
        "customer": "",
        "default_settings": {
            "application_fee_percent": None,
            "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
            "billing_cycle_anchor": "automatic",
            "collection_method": None,
            "default_payment_method": None,
            "description": None,
            "invoice_settings": {
                "account_tax_ids": None,
                "days_until_due": None,
                "issuer": {"type": "self"},
                "custom_fields": None,
                "description": None,
                "footer": None,
            },
            "on_behalf_of": None,
            "transfer_data": None,
            "billing_thresholds": None,
        },
        "end_behavior": "release",
        "id": "",
        "livemode": False,
        "metadata": {},
        "object": "subscription_schedule",
        "phases": [],
        "released_at": None,
        "released_subscription": None,
        "status": "not_started",
        "subscription": None,
        "test_clock": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": 0},
        "customer_account": None,
    }


def schedule_phase() -> dict[str, Any]:
    """Return one phase of a subscription schedule, every key at its default."""
    return {
        "add_invoice_items": [],
        "application_fee_percent": None,
        "billing_cycle_anchor": None,
        "collection_method": None,
        "currency": "",
        "default_payment_method": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "end_date": 0,
        "invoice_settings": None,
        "items": [],
        "metadata": {},
        "on_behalf_of": None,
        "proration_behavior": "create_prorations",
        "start_date": 0,
        "transfer_data": None,
        "trial_end": None,
        "billing_thresholds": None,
    }


def schedule_phase_item() -> dict[str, Any]:
    """Return one item of a schedule phase, every key at its default."""
    return {
        "discounts": [],
        "metadata": {},
        "price": "",
        "quantity": 1,
        "tax_rates": [],
        "plan": "",
        "billing_thresholds": None,
    }


@template("coupon")
def coupon() -> dict[str, Any]:
    return {
        "amount_off": None,
        "created": 0,
        "currency": None,
        "duration": "once",
        "duration_in_months": None,
        "id": "",
        "livemode": False,
        "max_redemptions": None,
        "metadata": {},
        "name": None,
        "object": "coupon",
        "percent_off": None,
        "redeem_by": None,
        "times_redeemed": 0,
        "valid": True,
    }


@template("promotion_code")
def promotion_code() -> dict[str, Any]:
    return {
        "active": True,
        "code": "",
        "created": 0,
        "customer": None,
        "expires_at": None,
        "id": "",
        "livemode": False,
        "max_redemptions": None,
        "metadata": {},
        "object": "promotion_code",
        "restrictions": {
            "first_time_transaction": False,
            "minimum_amount": None,
            "minimum_amount_currency": None,
        },
        "times_redeemed": 0,
        "promotion": {"coupon": None, "type": "coupon"},
        "customer_account": None,
    }


@template("tax_rate")
def tax_rate() -> dict[str, Any]:
    return {
        "active": True,
        "country": None,
        "created": 0,
        "description": None,
        "display_name": "",
        "effective_percentage": None,
        "id": "",
        "inclusive": False,
        "jurisdiction": None,
        "jurisdiction_level": None,
        "livemode": False,
        "metadata": {},
        "object": "tax_rate",
        "percentage": 0,
        "state": None,
        "tax_type": None,
        "flat_amount": None,
        "rate_type": "percentage",
    }


@template("test_helpers.test_clock")
def test_clock() -> dict[str, Any]:
    return {
        "created": 0,
        "deletes_after": 0,
        "frozen_time": 0,
        "id": "",
        "livemode": False,
        "name": None,
        "object": "test_helpers.test_clock",
        "status": "ready",
        "status_details": {},
    }
