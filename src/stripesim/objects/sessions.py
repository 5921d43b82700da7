"""Hosted sessions: Checkout Sessions and their line items, the Billing Portal's configurations
and sessions."""

from __future__ import annotations

from typing import Any

from stripesim.objects.base import template


@template("checkout.session")
def checkout_session() -> dict[str, Any]:
    return {
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": None,
        "amount_total": None,
        "automatic_tax": {"enabled": False, "liability": None, "status": None, "provider": None},
        "billing_address_collection": None,
        "cancel_url": None,
        "client_reference_id": None,
        "client_secret": None,
        "consent": None,
        "consent_collection": None,
        "created": 0,
        "currency": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_creation": None,
        "customer_details": None,
        "customer_email": None,
        "expires_at": 0,
        "id": "",
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": None,
        "metadata": {},
        "mode": "payment",
        "object": "checkout.session",
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": None,
        "payment_method_configuration_details": None,
        "payment_method_options": None,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": None,
        "total_details": None,
        "ui_mode": "hosted_page",
        "url": None,
        "adaptive_pricing": None,
        "discounts": [],
        "collected_information": None,
        "permissions": None,
        "wallet_options": None,
        "origin_context": None,
        "currency_conversion": None,
        "customer_account": None,
        "integration_identifier": None,
        "managed_payments": None,
    }


@template("item")
def item() -> dict[str, Any]:
    return {
        "amount_discount": 0,
        "amount_subtotal": 0,
        "amount_tax": 0,
        "amount_total": 0,
        "currency": "",
        "description": None,
        "id": "",
        "object": "item",
        "price": None,
        "quantity": None,
        "metadata": {},
        "adjustable_quantity": None,
    }


@template("billing_portal.configuration")
def billing_portal_configuration() -> dict[str, Any]:
    return {
        "active": True,
        "application": None,
        "business_profile": {
            "headline": None,
            "privacy_policy_url": None,
            "terms_of_service_url": None,
        },
        "created": 0,
        "default_return_url": None,
        "features": {
            "customer_update": {"allowed_updates": [], "enabled": False},
            "invoice_history": {"enabled": False},
            "payment_method_update": {"enabled": False, "payment_method_configuration": None},
            "subscription_cancel": {
                "cancellation_reason": {"enabled": False, "options": []},
                "enabled": False,
                "mode": "at_period_end",
                "proration_behavior": "none",
            },
            "subscription_update": {
                "default_allowed_updates": [],
                "enabled": False,
                "products": [],
                "proration_behavior": "none",
                "schedule_at_period_end": {"conditions": []},
                "trial_update_behavior": "end_trial",
                "billing_cycle_anchor": None,
            },
        },
        "id": "",
        "is_default": False,
        "livemode": False,
        "login_page": {"enabled": False, "url": None},
        "metadata": {},
        "object": "billing_portal.configuration",
        "updated": 0,
        "name": None,
    }


@template("billing_portal.session")
def billing_portal_session() -> dict[str, Any]:
    return {
        "configuration": "",
        "created": 0,
        "customer": "",
        "flow": None,
        "id": "",
        "livemode": False,
        "locale": None,
        "object": "billing_portal.session",
        "on_behalf_of": None,
        "return_url": None,
        "url": "",
        "customer_account": None,
    }
