"""Customers and what hangs off them: tax ids, balance transactions, sessions, discounts."""

from __future__ import annotations

from typing import Any

from stripesim.objects.base import template


@template("customer")
def customer() -> dict[str, Any]:
    return {
        "address": None,
        "balance": 0,
        "created": 0,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "id": "",
        "invoice_prefix": None,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "object": "customer",
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


@template("tax_id")
def tax_id() -> dict[str, Any]:
    return {
        "country": None,
        "created": 0,
        "customer": None,
        "id": "",
        "livemode": False,
        "object": "tax_id",
        "owner": None,
        "type": "",
        "value": "",
        "verification": None,
        "customer_account": None,
    }


@template("customer_balance_transaction")
def customer_balance_transaction() -> dict[str, Any]:
    return {
        "amount": 0,
        "created": 0,
        "credit_note": None,
        "currency": "",
        "customer": "",
        "description": None,
        "ending_balance": 0,
        "id": "",
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "object": "customer_balance_transaction",
        "type": "adjustment",
        "checkout_session": None,
        "customer_account": None,
    }


@template("customer_session")
def customer_session() -> dict[str, Any]:
    return {
        "client_secret": "",
        "components": {
            "buy_button": {"enabled": False},
            "payment_element": {"enabled": False, "features": None},
            "pricing_table": {"enabled": False},
            "customer_sheet": {"enabled": False, "features": None},
            "mobile_payment_element": {"enabled": False, "features": None},
        },
        "created": 0,
        "customer": "",
        "expires_at": 0,
        "livemode": False,
        "object": "customer_session",
        "customer_account": None,
    }


@template("discount")
def discount() -> dict[str, Any]:
    return {
        "checkout_session": None,
        "customer": None,
        "end": None,
        "id": "",
        "invoice": None,
        "invoice_item": None,
        "object": "discount",
        "promotion_code": None,
        "start": 0,
        "subscription": None,
        "subscription_item": None,
        "source": {"coupon": None, "type": "coupon"},
        "customer_account": None,
    }


@template("cash_balance")
def cash_balance() -> dict[str, Any]:
    return {
        "available": {},
        "customer": "",
        "customer_account": None,
        "livemode": False,
        "object": "cash_balance",
        "settings": {"reconciliation_mode": "automatic", "using_merchant_default": True},
    }


@template("customer_cash_balance_transaction")
def customer_cash_balance_transaction() -> dict[str, Any]:
    return {
        "created": 0,
        "currency": "",
        "customer": "",
        "customer_account": None,
        "ending_balance": 0,
        "id": "",
        "livemode": False,
        "net_amount": 0,
        "object": "customer_cash_balance_transaction",
        "type": "funded",
    }


@template("funding_instructions")
def funding_instructions() -> dict[str, Any]:
    return {
        "bank_transfer": {"country": "US", "financial_addresses": [], "type": "us_bank_transfer"},
        "currency": "usd",
        "funding_type": "bank_transfer",
        "livemode": False,
        "object": "funding_instructions",
    }
