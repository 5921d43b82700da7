"""ACH Direct Debit: `us_bank_account` PaymentMethods for Stripe's test bank accounts, their
mandates, and micro-deposit verification.

Their debits (`payments.start_debit`, `payments.settle_debit`) are `processing` until they settle.
A payment or setup that asks for micro-deposits (`verification_method=microdeposits`) waits in
`requires_action` (`next_action.verify_with_microdeposits`) until the customer enters Stripe's
test values on the hosted page or through `verify_microdeposits`: the amounts 32 and 45, or the
descriptor code SM11AA. A mismatch leaves attempts (3 with amounts, 10 with a code); the last one
fails the payment, and the mandate becomes `inactive`.
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
    details = objects.payments.billing_details(params.get("billing_details"))
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


# -- mandates and micro-deposit verification ------------------------------------------------


def verification_of(options: Any) -> str | None:
    """`payment_method_options.us_bank_account.verification_method` of a request or settings."""
    bank = (options or {}).get("us_bank_account") if isinstance(options, dict) else None
    method = bank.get("verification_method") if isinstance(bank, dict) else None
    if method is not None and method not in bank_accounts.VERIFICATION_METHODS:
        raise StripeError(
            "Invalid payment_method_options[us_bank_account][verification_method]: must be one "
            f"of {', '.join(bank_accounts.VERIFICATION_METHODS)}",
            param="payment_method_options[us_bank_account][verification_method]",
        )
    return str(method) if method else None


def needs_verification(pm: dict[str, Any], intent: dict[str, Any]) -> bool:
    """Whether debiting `pm` for `intent` waits for micro-deposits first.

    The test accounts count as instantly verified (Financial Connections) unless the payment
    or setup asks for micro-deposits (`verification_method=microdeposits`); once verified, an
    account is never asked again.
    """
    return intent.get("_verification") == "microdeposits" and not pm.get("_verified")


def mandate_for(ctx: Ctx, pm: dict[str, Any], now: int) -> dict[str, Any]:
    """The PaymentMethod's multi-use mandate, made the first time it is confirmed; `pending`
    until its account is verified."""
    existing = ctx.account.find(pm.get("_mandate"))
    if existing is not None:
        return existing
    mandate = ctx.build(
        "mandate",
        "mandate",
        payment_method=pm["id"],
        payment_method_details={
            "type": "us_bank_account",
            "us_bank_account": {"collection_method": "paper"},
        },
        status="active" if pm.get("_verified", True) else "pending",
    )
    mandate["customer_acceptance"]["accepted_at"] = now
    pm["_mandate"] = mandate["id"]
    return ctx.account.add(mandate)


def request_microdeposits(ctx: Ctx, intent: dict[str, Any], pm: dict[str, Any], now: int) -> None:
    """Stop `intent` for micro-deposit verification: `requires_action`, the hosted page."""
    pm["_verified"] = False
    mandate = mandate_for(ctx, pm, now)
    if intent["object"] == "setup_intent":
        intent["mandate"] = mandate["id"]
    previous = intent["status"]
    intent["status"] = "requires_action"
    intent["next_action"] = {
        "type": "verify_with_microdeposits",
        "verify_with_microdeposits": {
            "arrival_date": now + bank_accounts.MICRODEPOSIT_ARRIVAL_DAYS * bank_accounts.DAY,
            "hosted_verification_url": f"{ctx.base_url}/microdeposits/{intent['id']}",
            "microdeposit_type": "amounts",
        },
    }
    intent.setdefault("_microdeposit_attempts", 0)
    ctx.emit(
        f"{intent['object']}.requires_action", intent, previous={"status": previous}, created=now
    )


def waiting_for_microdeposits(intent: dict[str, Any]) -> bool:
    return (
        intent["status"] == "requires_action"
        and (intent.get("next_action") or {}).get("type") == "verify_with_microdeposits"
    )


def check_microdeposits(intent: dict[str, Any], params: dict[str, Any]) -> bool:
    """Check what the customer read off their statement: True when it verifies the account,
    False when the last attempt allowed failed (the verification is over); a mismatch with
    attempts left raises Stripe's error."""
    if not waiting_for_microdeposits(intent):
        raise StripeError(
            f"This {intent['object'].replace('_', ' ')} is not waiting for micro-deposits "
            f"(status {intent['status']}).",
            code=f"{intent['object']}_unexpected_state",
        )
    amounts, code = params.get("amounts"), params.get("descriptor_code")
    if (amounts is None) == (code is None):
        raise StripeError(
            "Provide either `amounts` (two integers) or `descriptor_code`.",
            param="amounts" if amounts is None else "descriptor_code",
        )
    kind = "amounts" if amounts is not None else "descriptor_code"
    if kind == "amounts":
        try:
            given: Any = tuple(int(value) for value in amounts or [])
        except (TypeError, ValueError):
            raise StripeError("Invalid integer in amounts.", param="amounts") from None
        if len(given) != 2:
            raise StripeError("Provide exactly two amounts.", param="amounts")
        matched = given == bank_accounts.MICRODEPOSIT_AMOUNTS
    else:
        matched = str(code).strip().upper() == bank_accounts.MICRODEPOSIT_CODE
    if matched:
        return True
    intent["_microdeposit_attempts"] = int(intent.get("_microdeposit_attempts") or 0) + 1
    left = bank_accounts.MICRODEPOSIT_ATTEMPTS[kind] - intent["_microdeposit_attempts"]
    if left <= 0:
        return False
    noun = "amounts" if kind == "amounts" else "descriptor code"
    raise StripeError(
        f"The {noun} provided do not match the {noun} that were sent to the bank account. "
        f"You have {left} verification attempt{'s' if left != 1 else ''} remaining.",
        code=f"payment_method_microdeposit_verification_{kind}_mismatch",
        param=kind,
    )


def verification_failed_error() -> StripeError:
    return StripeError(
        "You have exceeded the number of allowed verification attempts.",
        status=402,
        code="payment_method_microdeposit_verification_attempts_exceeded",
    )


def settle_verification(
    ctx: Ctx, intent: dict[str, Any], pm: dict[str, Any], verified: bool, now: int
) -> None:
    """Record the verification's end on the account and its mandate (`mandate.updated`)."""
    mandate = mandate_for(ctx, pm, now)
    previous = {"status": mandate["status"]}
    pm["_verified"] = verified
    mandate["status"] = "active" if verified else "inactive"
    ctx.emit("mandate.updated", mandate, previous=previous, created=now)
    intent["next_action"] = None
