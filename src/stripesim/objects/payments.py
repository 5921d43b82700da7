"""Moving money: payment methods, payment and setup intents, charges, refunds, disputes, and
the balance with its transactions."""

from __future__ import annotations

from typing import Any

from stripesim.objects.base import address, empty_list, template

DISPUTE_EVIDENCE = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)


def billing_details(given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a payment method's (or charge's) billing details: every key at its default, but
    those `given` (a request's `billing_details`; unknown keys ignored, the address merged)."""
    details: dict[str, Any] = {
        "address": address(),
        "email": None,
        "name": None,
        "phone": None,
        "tax_id": None,
    }
    for key, value in (given or {}).items():
        if key == "address" and isinstance(value, dict):
            details["address"].update(value)
        elif key in details:
            details[key] = value or None
    return details


def card_charge_details() -> dict[str, Any]:
    """Return `payment_method_details.card` of a card charge, every key at its default."""
    return {
        "amount_authorized": None,
        "authorization_code": None,
        "brand": None,
        "checks": None,
        "country": None,
        "exp_month": 0,
        "exp_year": 0,
        "extended_authorization": {"status": "disabled"},
        "fingerprint": None,
        "funding": None,
        "incremental_authorization": {"status": "unavailable"},
        "installments": None,
        "last4": None,
        "mandate": None,
        "multicapture": {"status": "unavailable"},
        "network": None,
        "network_token": {"used": False},
        "network_transaction_id": None,
        "overcapture": {"maximum_amount_capturable": 0, "status": "unavailable"},
        "regulated_status": "unregulated",
        "three_d_secure": None,
        "transaction_link_id": None,
        "wallet": None,
    }


@template("payment_method")
def payment_method() -> dict[str, Any]:
    return {
        "allow_redisplay": "unspecified",
        "billing_details": billing_details(),
        "card": {
            "brand": "",
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": None,
            },
            "country": None,
            "display_brand": None,
            "exp_month": 0,
            "exp_year": 0,
            "fingerprint": None,
            "funding": "credit",
            "generated_from": None,
            "last4": "",
            "networks": None,
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
            "regulated_status": "unregulated",
        },
        "created": 0,
        "customer": None,
        "id": "",
        "livemode": False,
        "metadata": {},
        "object": "payment_method",
        "type": "card",
        "customer_account": None,
    }


@template("payment_intent")
def payment_intent() -> dict[str, Any]:
    return {
        "amount": 0,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": None,
        "confirmation_method": "automatic",
        "created": 0,
        "currency": "",
        "customer": None,
        "description": None,
        "id": "",
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "object": "payment_intent",
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": None,
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
        "source": None,
        "excluded_payment_method_types": None,
        "customer_account": None,
        "managed_payments": None,
    }


@template("charge")
def charge() -> dict[str, Any]:
    return {
        "amount": 0,
        "amount_captured": 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": billing_details(),
        "calculated_statement_descriptor": None,
        "captured": False,
        "created": 0,
        "currency": "",
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "id": "",
        "livemode": False,
        "metadata": {},
        "object": "charge",
        "on_behalf_of": None,
        "outcome": None,
        "paid": False,
        "payment_intent": None,
        "payment_method": None,
        "payment_method_details": None,
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        "refunds": empty_list(""),
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "pending",
        "transfer_data": None,
        "transfer_group": None,
        "source": None,
    }


@template("refund")
def refund() -> dict[str, Any]:
    return {
        "amount": 0,
        "balance_transaction": None,
        "charge": None,
        "created": 0,
        "currency": "",
        "destination_details": None,
        "id": "",
        "metadata": {},
        "object": "refund",
        "payment_intent": None,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
        "customer": None,
        "customer_account": None,
        "payment_method": None,
    }


@template("dispute")
def dispute() -> dict[str, Any]:
    return {
        "amount": 0,
        "balance_transactions": [],
        "charge": "",
        "created": 0,
        "currency": "",
        "evidence": {
            **dict.fromkeys(DISPUTE_EVIDENCE),
            "enhanced_evidence": {},
        },
        "evidence_details": {
            "due_by": None,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        },
        "id": "",
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "object": "dispute",
        "payment_intent": None,
        "payment_method_details": None,
        "reason": "general",
        "status": "needs_response",
        "enhanced_eligibility_types": [],
    }


@template("setup_intent")
def setup_intent() -> dict[str, Any]:
    return {
        "application": None,
        "automatic_payment_methods": None,
        "cancellation_reason": None,
        "client_secret": None,
        "created": 0,
        "customer": None,
        "description": None,
        "flow_directions": None,
        "id": "",
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "mandate": None,
        "metadata": {},
        "next_action": None,
        "object": "setup_intent",
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": None,
        "payment_method_types": ["card"],
        "single_use_mandate": None,
        "status": "requires_payment_method",
        "usage": "off_session",
        "excluded_payment_method_types": None,
    }


@template("balance")
def balance() -> dict[str, Any]:
    return {
        "available": [],
        "connect_reserved": [],
        "livemode": False,
        "object": "balance",
        "pending": [],
    }


@template("balance_transaction")
def balance_transaction() -> dict[str, Any]:
    return {
        "amount": 0,
        "available_on": 0,
        "created": 0,
        "currency": "",
        "description": None,
        "exchange_rate": None,
        "fee": 0,
        "fee_details": [],
        "id": "",
        "net": 0,
        "object": "balance_transaction",
        "reporting_category": "charge",
        "source": None,
        "status": "pending",
        "type": "charge",
        "balance_type": "payments",
    }


@template("mandate")
def mandate() -> dict[str, Any]:
    return {
        "customer_acceptance": {
            "accepted_at": 0,
            "online": {"ip_address": "127.0.0.1", "user_agent": "stripesim"},
            "type": "online",
        },
        "id": "",
        "livemode": False,
        "multi_use": {},
        "object": "mandate",
        "payment_method": "",
        "payment_method_details": {"type": "us_bank_account", "us_bank_account": {}},
        "status": "active",
        "type": "multi_use",
    }
