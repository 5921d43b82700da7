"""The platform itself: events, webhook endpoints, Connect accounts, billing meters and usage."""

from __future__ import annotations

from typing import Any

from stripesim.objects.base import address, template


@template("event")
def event() -> dict[str, Any]:
    return {
        "api_version": None,
        "created": 0,
        "data": {"object": {}},
        "id": "",
        "livemode": False,
        "object": "event",
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": "",
    }


@template("webhook_endpoint")
def webhook_endpoint() -> dict[str, Any]:
    return {
        "api_version": None,
        "application": None,
        "created": 0,
        "description": None,
        "enabled_events": [],
        "id": "",
        "livemode": False,
        "metadata": {},
        "object": "webhook_endpoint",
        # Shown once, in the answer to the create request (resources.webhook_endpoints._view).
        "secret": None,
        "status": "enabled",
        "url": "",
    }


def _requirements() -> dict[str, Any]:
    return {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": [],
        "disabled_reason": None,
        "errors": [],
        "eventually_due": [],
        "past_due": [],
        "pending_verification": [],
    }


@template("account")
def account() -> dict[str, Any]:
    return {
        "business_profile": {
            "annual_revenue": None,
            "estimated_worker_count": None,
            "mcc": None,
            "name": None,
            "product_description": None,
            "support_address": None,
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
            "minority_owned_business_designation": None,
        },
        "business_type": None,
        "capabilities": {},
        "charges_enabled": False,
        "controller": {"type": "account"},
        "country": "US",
        "created": 0,
        "default_currency": "usd",
        "details_submitted": False,
        "email": None,
        "external_accounts": {"object": "list", "data": [], "has_more": False, "url": ""},
        "future_requirements": _requirements(),
        "id": "",
        "metadata": {},
        "object": "account",
        "payouts_enabled": False,
        "requirements": _requirements(),
        "settings": {
            "bacs_debit_payments": {"display_name": None, "service_user_number": None},
            "branding": {
                "icon": None,
                "logo": None,
                "primary_color": None,
                "secondary_color": None,
            },
            "card_issuing": {"tos_acceptance": {"date": None, "ip": None}},
            "card_payments": {
                "decline_on": {"avs_failure": False, "cvc_failure": False},
                "statement_descriptor_prefix": None,
                "statement_descriptor_prefix_kana": None,
                "statement_descriptor_prefix_kanji": None,
            },
            "dashboard": {"display_name": None, "timezone": "Etc/UTC"},
            "invoices": {"default_account_tax_ids": None, "hosted_payment_method_save": None},
            "payments": {
                "statement_descriptor": None,
                "statement_descriptor_kana": None,
                "statement_descriptor_kanji": None,
                "statement_descriptor_prefix_kana": None,
                "statement_descriptor_prefix_kanji": None,
            },
            "payouts": {
                "debit_negative_balances": True,
                "schedule": {"delay_days": 2, "interval": "daily"},
                "statement_descriptor": None,
            },
            "sepa_debit_payments": {},
        },
        "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
        "type": "standard",
    }


def support_address(given: Any) -> dict[str, Any] | None:
    """Return an account's support address (an Address), or None when not given."""
    return address(given) if isinstance(given, dict) else None


@template("billing.meter")
def billing_meter() -> dict[str, Any]:
    return {
        "created": 0,
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": "sum"},
        "display_name": "",
        "event_name": "",
        "event_time_window": None,
        "id": "",
        "livemode": False,
        "object": "billing.meter",
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": 0,
        "value_settings": {"event_payload_key": "value"},
    }


@template("billing.meter_event")
def billing_meter_event() -> dict[str, Any]:
    return {
        "created": 0,
        "event_name": "",
        "identifier": "",
        "livemode": False,
        "object": "billing.meter_event",
        "payload": {},
        "timestamp": 0,
    }


@template("billing.meter_event_adjustment")
def billing_meter_event_adjustment() -> dict[str, Any]:
    return {
        "cancel": None,
        "event_name": "",
        "livemode": False,
        "object": "billing.meter_event_adjustment",
        "status": "pending",
        "type": "cancel",
    }


@template("billing.meter_event_summary")
def billing_meter_event_summary() -> dict[str, Any]:
    return {
        "aggregated_value": 0,
        "end_time": 0,
        "id": "",
        "livemode": False,
        "meter": "",
        "object": "billing.meter_event_summary",
        "start_time": 0,
    }
