"""Which payment method types may pay a subscription's invoices (`payment_settings`).

Stripe offers an invoice only the types in `payment_settings.payment_method_types` (the
invoice's own, else its subscription's); a default payment method of another type is not
charged, and the invoice waits for a method that may pay it.
"""

from __future__ import annotations

from typing import Any

from stripesim.errors import StripeError

# The types stripesim can collect with, and those Stripe also knows (accepted, never charged).
METHOD_TYPES = (
    "card",
    "us_bank_account",
    "customer_balance",
    "acss_debit",
    "bacs_debit",
    "link",
    "sepa_debit",
)


def read_method_types(raw: Any, param: str) -> list[str] | None:
    """Check `payment_settings[payment_method_types]`; "" (or nothing) means any."""
    if raw in (None, "", []):
        return None
    if not isinstance(raw, list):
        raise StripeError(f"Invalid array: {param}", param=param)
    for index, kind in enumerate(raw):
        if kind not in METHOD_TYPES:
            raise StripeError(
                f"Invalid {param}[{index}]: must be one of {', '.join(METHOD_TYPES)}",
                param=f"{param}[{index}]",
            )
    return [str(kind) for kind in dict.fromkeys(raw)]


def set_payment_settings(target: dict[str, Any], params: dict[str, Any], prefix: str) -> None:
    """Apply a `payment_settings` param to a subscription or invoice, as Stripe merges it."""
    raw = params.get("payment_settings")
    if not isinstance(raw, dict) or "payment_method_types" not in raw:
        return
    types = read_method_types(raw["payment_method_types"], f"{prefix}[payment_method_types]")
    target["payment_settings"]["payment_method_types"] = types


def method_types_of(invoice: dict[str, Any], sub: dict[str, Any] | None) -> list[str] | None:
    """Return the types that may pay the invoice: its own, else its subscription's."""
    own = (invoice.get("payment_settings") or {}).get("payment_method_types")
    if own:
        return list(own)
    inherited = ((sub or {}).get("payment_settings") or {}).get("payment_method_types")
    return list(inherited) if inherited else None


def incompatible_method_error(kind: str, types: list[str]) -> StripeError:
    """The error of an invoice whose payer's method is not among the types it accepts."""
    return StripeError(
        f"The payment method of type {kind} may not pay this invoice: its "
        f"payment_settings.payment_method_types are {', '.join(types)}.",
        status=402,
        type="invalid_request_error",
        code="payment_intent_incompatible_payment_method",
    )
