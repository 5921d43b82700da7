"""ACH Direct Debit: `us_bank_account` PaymentMethods for Stripe's test bank accounts.

Their debits (`payments.start_debit`, `payments.settle_debit`) are `processing` until they settle.
"""

from __future__ import annotations

from typing import Any

from stripesim import bank_accounts, objects
from stripesim.errors import StripeError, parameter_missing
from stripesim.registry import Ctx


def new_bank_payment_method(
    ctx: Ctx,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Store an unattached `us_bank_account` PaymentMethod for one of Stripe's test accounts."""
    bank_params = params.get("us_bank_account")
    if not isinstance(bank_params, dict):
        raise parameter_missing("us_bank_account")
    for key in ("account_number", "routing_number"):
        if not bank_params.get(key):
            raise parameter_missing(f"us_bank_account[{key}]")
    details = objects.payments.billing_details()
    for key, value in (params.get("billing_details") or {}).items():
        if key == "address" and isinstance(value, dict):
            details["address"].update(value)
        elif key in details:
            details[key] = value or None
    if not details.get("name"):
        # Stripe requires the account holder's name for ACH.
        raise parameter_missing("billing_details[name]")
    spec = bank_accounts.by_details(
        str(bank_params["account_number"]), str(bank_params["routing_number"])
    )
    holder = bank_params.get("account_holder_type") or "individual"
    if holder not in ("individual", "company"):
        raise StripeError(
            "Invalid account_holder_type: must be one of individual or company",
            param="us_bank_account[account_holder_type]",
        )
    pm = ctx.build(
        "payment_method",
        "pm",
        created=ctx.now(),
        billing_details=details,
        type="us_bank_account",
        _test_bank=spec.key,
    )
    # Stripe's PaymentMethod carries only its own type's hash.
    del pm["card"]
    pm["us_bank_account"] = {
        "account_holder_type": holder,
        "account_type": bank_params.get("account_type") or "checking",
        "bank_name": "STRIPE TEST BANK",
        "financial_connections_account": None,
        "fingerprint": spec.fingerprint,
        "last4": spec.last4,
        "networks": {"preferred": "ach", "supported": ["ach"]},
        "routing_number": bank_accounts.ROUTING_NUMBER,
        "status_details": {},
    }
    if params.get("metadata"):
        pm["metadata"] = {key: str(value) for key, value in params["metadata"].items()}
    return ctx.account.add(pm)
