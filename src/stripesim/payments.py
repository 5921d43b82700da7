"""Moving money: PaymentMethods from test cards, PaymentIntents, Charges, Refunds and Disputes.

Shared by the payment routes, Checkout, the Portal and the billing engine (`collect_payment`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stripesim import balances, bank_accounts, cards, cash_balances, debits, objects
from stripesim.currency import format_amount
from stripesim.errors import StripeError, card_error, parameter_invalid, resource_missing
from stripesim.lists import render
from stripesim.payment_settings import incompatible_method_error
from stripesim.registry import Ctx
from stripesim.state import new_id, snapshot

NO_PAYMENT_METHOD = (
    "This customer has no attached payment source or default payment method. Please consider "
    "adding a default payment method. For more information, visit "
    "https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority."
)


@dataclass
class PaymentOutcome:
    """What happened when money was asked for."""

    status: str  # "succeeded" | "failed" | "requires_action" | "processing"
    payment_intent: dict[str, Any]
    charge: dict[str, Any] | None
    error: StripeError | None


def client_secret(object_id: str) -> str:
    return f"{object_id}_secret_{secrets.token_urlsafe(18).replace('-', 'x').replace('_', 'y')}"


# -- PaymentMethods ------------------------------------------------------------------------


def new_card_payment_method(
    ctx: Ctx,
    card: cards.CardSpec,
    *,
    exp_month: int | None = None,
    exp_year: int | None = None,
    cvc: str | None = None,
    billing_details: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """Store a new, unattached card PaymentMethod for a test card."""
    now = created or ctx.now()
    year = datetime.fromtimestamp(now, UTC).year
    month = int(exp_month) if exp_month is not None else 12
    year_value = int(exp_year) if exp_year is not None else year + 3
    if year_value < 100:
        year_value += 2000
    if not 1 <= month <= 12:
        raise card_error(
            "Your card's expiration month is invalid.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        )
    current = datetime.fromtimestamp(now, UTC)
    if year_value < current.year or year_value > current.year + 50:
        raise card_error(
            "Your card's expiration year is invalid.",
            code="invalid_expiry_year",
            param="card[exp_year]",
        )
    if year_value == current.year and month < current.month:
        raise card_error(
            "Your card's expiration date is in the past.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        )
    if cvc is not None and not (str(cvc).isdigit() and len(str(cvc)) in (3, 4)):
        raise card_error(
            "Your card's security code is invalid.", code="invalid_cvc", param="card[cvc]"
        )
    details = objects.payments.billing_details(billing_details)
    pm = ctx.build(
        "payment_method",
        "pm",
        created=now,
        billing_details=details,
        card={
            "brand": card.brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": "pass" if cvc else None,
            },
            "country": card.country,
            "display_brand": card.brand,
            "exp_month": month,
            "exp_year": year_value,
            "fingerprint": card.fingerprint,
            "funding": card.funding,
            "generated_from": None,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": None},
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
            "regulated_status": "unregulated",
        },
        _test_card=card.key,
    )
    if metadata:
        pm["metadata"] = {key: str(value) for key, value in metadata.items()}
    return ctx.account.add(pm)


def payment_method_for(ctx: Ctx, pm_id: str, *, param: str = "payment_method") -> dict[str, Any]:
    """The stored PaymentMethod `pm_id`; Stripe's magic `pm_card_*` ids give a fresh one."""
    card = cards.BY_PM_ID.get(pm_id)
    if card is not None:
        return new_card_payment_method(ctx, card)
    obj = ctx.account.find(pm_id)
    if obj is None or obj.get("object") != "payment_method":
        raise resource_missing("PaymentMethod", str(pm_id), param)
    return obj


def payment_method_param(ctx: Ctx, params: dict[str, Any]) -> str | None:
    """The id of the PaymentMethod the request's `payment_method` names, if it names one."""
    if params.get("payment_method"):
        return str(payment_method_for(ctx, params["payment_method"])["id"])
    return None


def attach_payment_method(ctx: Ctx, pm: dict[str, Any], customer_id: str) -> dict[str, Any]:
    """Attach `pm` to a customer; cards that fail Stripe's card check raise a 402 card error."""
    customer = ctx.account.get(customer_id, "customer", param="customer")
    if pm.get("customer") == customer_id:
        return pm
    if pm.get("customer"):
        raise StripeError(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )
    card = cards.by_key(pm.get("_test_card"))
    if card.behaviour == cards.DECLINE:
        error = card.decline()
        error.param = ""
        raise error
    pm["customer"] = customer["id"]
    ctx.emit("payment_method.attached", pm, created=ctx.now_for_customer(customer_id))
    return pm


def detach_payment_method(ctx: Ctx, pm: dict[str, Any]) -> dict[str, Any]:
    """Detach `pm` from its customer (clearing it as the customer's default)."""
    customer_id = pm.get("customer")
    if not customer_id:
        raise StripeError(
            "The payment method you provided is not attached to a customer so detachment "
            "is impossible.",
            code="payment_method_unexpected_state",
        )
    now = ctx.now_for_customer(customer_id)
    previous = {"customer": customer_id}
    pm["customer"] = None
    customer = ctx.account.find(customer_id)
    if customer and customer.get("invoice_settings", {}).get("default_payment_method") == pm["id"]:
        before = dict(customer["invoice_settings"])
        customer["invoice_settings"]["default_payment_method"] = None
        ctx.emit("customer.updated", customer, previous={"invoice_settings": before}, created=now)
    ctx.emit("payment_method.detached", pm, previous=previous, created=now)
    return pm


def resolve_payment_method(
    ctx: Ctx,
    customer_id: str,
    *,
    explicit: str | None = None,
    subscription: dict[str, Any] | None = None,
) -> str | None:
    """Pick the payer: explicit, the subscription's, the customer's default, the newest card."""
    if explicit:
        return str(payment_method_for(ctx, explicit)["id"])
    if subscription and subscription.get("default_payment_method"):
        return str(subscription["default_payment_method"])
    customer = ctx.account.find(customer_id)
    if customer is None:
        return None
    default = (customer.get("invoice_settings") or {}).get("default_payment_method")
    if default:
        return str(default)
    newest = ctx.account.newest("payment_method", customer=customer_id, type="card")
    return str(newest["id"]) if newest else None


# -- PaymentIntents and Charges ------------------------------------------------------------


def require_authentication(ctx: Ctx, intent: dict[str, Any]) -> None:
    """Stop a PaymentIntent or SetupIntent for 3D Secure on the simulator's challenge page."""
    intent["status"] = "requires_action"
    intent["next_action"] = {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {
            "type": "three_d_secure_redirect",
            "stripe_js": f"{ctx.base_url}/3ds/{intent['id']}",
            "source": None,
        },
    }


def new_payment_intent(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    customer_id: str | None,
    payment_method_id: str | None,
    created: int,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    capture_method: str = "automatic",
    application_fee_amount: int | None = None,
    automatic_payment_methods: bool = False,
    setup_future_usage: str | None = None,
    receipt_email: str | None = None,
    statement_descriptor: str | None = None,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """Store a new PaymentIntent (not yet confirmed) and emit `payment_intent.created`."""
    pi = ctx.build(
        "payment_intent",
        "pi",
        created=created,
        amount=amount,
        application_fee_amount=application_fee_amount,
        automatic_payment_methods={"allow_redirects": "always", "enabled": True}
        if automatic_payment_methods
        else None,
        capture_method=capture_method,
        currency=currency.lower(),
        customer=customer_id,
        description=description,
        payment_method=payment_method_id,
        payment_method_options={
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        receipt_email=receipt_email,
        setup_future_usage=setup_future_usage,
        statement_descriptor=statement_descriptor,
        status="requires_confirmation" if payment_method_id else "requires_payment_method",
        _invoice=invoice_id,
    )
    pi["client_secret"] = client_secret(pi["id"])
    if metadata:
        pi["metadata"] = {key: str(value) for key, value in metadata.items()}
    ctx.account.add(pi)
    ctx.emit("payment_intent.created", pi, created=created)
    return pi


def _build_charge(
    ctx: Ctx, pi: dict[str, Any], pm: dict[str, Any], now: int, **fields: Any
) -> dict[str, Any]:
    """Build (not store) a charge of `pi` by `pm`; `fields` hold what the way of paying decides."""
    charge_id = new_id("ch")
    return ctx.build(
        "charge",
        "ch",
        id=charge_id,
        created=now,
        amount=pi["amount"],
        billing_details=snapshot(pm["billing_details"]),
        calculated_statement_descriptor="STRIPESIM",
        currency=pi["currency"],
        customer=pi["customer"],
        description=pi["description"],
        payment_intent=pi["id"],
        payment_method=pm["id"],
        receipt_url=f"{ctx.base_url}/receipts/{charge_id}",
        refunds=objects.empty_list(f"/v1/charges/{charge_id}/refunds"),
        **fields,
    )


def _new_charge(
    ctx: Ctx,
    pi: dict[str, Any],
    pm: dict[str, Any],
    card: cards.CardSpec,
    now: int,
    *,
    succeeded: bool,
    capture: bool,
    error: StripeError | None,
) -> dict[str, Any]:
    fee_amount = pi.get("application_fee_amount")
    captured = succeeded and capture
    outcome = {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "approved_by_network" if succeeded else "declined_by_network",
        "reason": None
        if succeeded
        else (error.extra.get("decline_code") if error else "generic_decline"),
        "risk_level": "normal",
        "risk_score": 32,
        "seller_message": "Payment complete."
        if succeeded
        else "The bank did not return any further details with this decline.",
        "type": "authorized" if succeeded else "issuer_declined",
    }
    pm_card = pm["card"]
    charge = _build_charge(
        ctx,
        pi,
        pm,
        now,
        amount_captured=pi["amount"] if captured else 0,
        application_fee=new_id("fee")
        if fee_amount and ctx.account.id != ctx.sim.platform.id and captured
        else None,
        application_fee_amount=fee_amount,
        captured=captured,
        failure_code=None if succeeded or error is None else error.code,
        failure_message=None if succeeded or error is None else error.message,
        outcome=outcome,
        paid=succeeded,
        payment_method_details={"card": _card_details(pi, pm_card, succeeded), "type": "card"},
        receipt_email=pi.get("receipt_email"),
        statement_descriptor=pi.get("statement_descriptor"),
        status="succeeded" if succeeded else "failed",
    )
    if card.behaviour == cards.DECLINE_AFTER_ATTACH and not succeeded:
        charge["outcome"]["reason"] = "generic_decline"
    ctx.account.add(charge)
    if captured:
        _record_charge(ctx, charge, charge["amount"], now)
    return charge


def _record_charge(
    ctx: Ctx, charge: dict[str, Any], amount: int, now: int, *, fee: int | None = None
) -> None:
    """Put a captured charge's money (less Stripe's fee: a card's unless `fee`) in the balance."""
    txn = balances.record_transaction(
        ctx,
        amount=amount,
        currency=charge["currency"],
        kind="charge",
        category="charge",
        source=charge["id"],
        description=charge.get("description"),
        now=now,
        fee=balances.card_fee(amount) if fee is None else fee,
    )
    charge["balance_transaction"] = txn["id"]


def _card_details(pi: dict[str, Any], card: dict[str, Any], succeeded: bool) -> dict[str, Any]:
    """Return a card charge's `payment_method_details.card` from the card charged."""
    details = objects.payments.card_charge_details()
    details.update(
        amount_authorized=pi["amount"] if succeeded else None,
        brand=card["brand"],
        checks=snapshot(card["checks"]),
        country=card["country"],
        exp_month=card["exp_month"],
        exp_year=card["exp_year"],
        fingerprint=card["fingerprint"],
        funding=card["funding"],
        last4=card["last4"],
        network=card["brand"],
        network_transaction_id=str(secrets.randbelow(10**15)).zfill(15) if succeeded else None,
        overcapture={"maximum_amount_capturable": pi["amount"], "status": "unavailable"},
    )
    return details


def fail_intent(
    ctx: Ctx, intent: dict[str, Any], error: StripeError, pm: dict[str, Any], now: int
) -> None:
    """The customer's attempt failed: the PaymentIntent or SetupIntent wants another method."""
    intent["status"] = "requires_payment_method"
    intent["next_action"] = None
    if intent["object"] == "setup_intent":
        intent["last_setup_error"] = intent_error(error, pm)
        ctx.emit("setup_intent.setup_failed", intent, created=now)
    else:
        intent["last_payment_error"] = intent_error(error, pm)
        ctx.emit("payment_intent.payment_failed", intent, created=now)


def intent_error(
    error: StripeError, pm: dict[str, Any], charge: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `last_payment_error` (or `last_setup_error`) hash Stripe puts on a failed intent."""
    body = error.body()["error"]
    body.pop("request_log_url", None)
    body["payment_method"] = render(pm)
    if charge is not None:
        body["charge"] = charge["id"]
    return body


def attempt(
    ctx: Ctx,
    pi: dict[str, Any],
    *,
    now: int,
    off_session: bool,
    billing: bool,
    capture: bool = True,
) -> PaymentOutcome:
    """Confirm `pi` with its payment method: succeed, decline, or stop for authentication.

    `billing` marks Stripe Billing's own attempts (invoices), where an authentication-required card
    leaves the PaymentIntent in `requires_action` even off-session; a merchant's off-session
    PaymentIntent instead fails with `authentication_required`.
    """
    pm_id = pi.get("payment_method")
    if not pm_id:
        error = StripeError(
            NO_PAYMENT_METHOD, status=402, code="invoice_payment_intent_requires_action"
        )
        pi["status"] = "requires_payment_method"
        return PaymentOutcome("failed", pi, None, error)
    pm = ctx.account.get(pm_id, "payment_method", param="payment_method", label="PaymentMethod")
    if pm.get("type") == "us_bank_account":
        if debits.needs_verification(pm, pi):
            debits.request_microdeposits(ctx, pi, pm, now)
            pi["payment_method_types"] = ["us_bank_account"]
            error = StripeError(
                "The provided payment method requires customer actions to complete: its bank "
                "account must be verified with micro-deposits.",
                status=402,
                code="payment_intent_action_required",
            )
            return PaymentOutcome("requires_action", pi, None, error)
        return start_debit(ctx, pi, pm, now)
    if pm.get("type") == cash_balances.METHOD:
        cash_balances.start_transfer(ctx, pi, now)
        if pi["status"] == "succeeded":
            return transfer_succeeded(ctx, pi, now)
        return PaymentOutcome("requires_action", pi, None, None)
    card = cards.by_key(pm.get("_test_card"))
    previous_status = pi["status"]

    if card.behaviour == cards.AUTHENTICATE and not _authenticated(pi, pm, card, off_session):
        error = cards.authentication_error()
        if off_session and not billing:
            charge = _new_charge(
                ctx, pi, pm, card, now, succeeded=False, capture=capture, error=error
            )
            return _fail(ctx, pi, pm, charge, error, now)
        require_authentication(ctx, pi)
        pi["last_payment_error"] = None
        ctx.emit(
            "payment_intent.requires_action", pi, previous={"status": previous_status}, created=now
        )
        return PaymentOutcome("requires_action", pi, None, error)

    if card.behaviour in (cards.DECLINE, cards.DECLINE_AFTER_ATTACH):
        error = card.decline()
        charge = _new_charge(ctx, pi, pm, card, now, succeeded=False, capture=capture, error=error)
        return _fail(ctx, pi, pm, charge, error, now)

    charge = _new_charge(ctx, pi, pm, card, now, succeeded=True, capture=capture, error=None)
    pi["latest_charge"] = charge["id"]
    pi["last_payment_error"] = None
    pi["next_action"] = None
    if capture:
        pi["status"] = "succeeded"
        pi["amount_received"] = pi["amount"]
        pi["amount_capturable"] = 0
    else:
        pi["status"] = "requires_capture"
        pi["amount_capturable"] = pi["amount"]
    ctx.emit("charge.succeeded", charge, created=now)
    if capture:
        ctx.emit("payment_intent.succeeded", pi, created=now)
    else:
        ctx.emit(
            "payment_intent.amount_capturable_updated",
            pi,
            previous={"amount_capturable": 0},
            created=now,
        )
    if card.behaviour == cards.DISPUTE and capture:
        open_dispute(ctx, charge, now, card)
    return PaymentOutcome("succeeded", pi, charge, None)


# -- ACH Direct Debit: `processing` until the debit settles, days later --------------------------


def _bank_charge(
    ctx: Ctx,
    pi: dict[str, Any],
    pm: dict[str, Any],
    now: int,
    *,
    details: dict[str, Any],
    status: str,
) -> dict[str, Any]:
    """Store the charge of a payment by bank (a debit `pending` until it settles, or a
    transfer `succeeded`): no card checks, no risk assessment."""
    charge = _build_charge(
        ctx,
        pi,
        pm,
        now,
        amount_captured=pi["amount"],
        captured=True,
        outcome={
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "not_assessed",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        paid=status == "succeeded",
        payment_method_details=details,
        status=status,
    )
    return ctx.account.add(charge)


def start_debit(ctx: Ctx, pi: dict[str, Any], pm: dict[str, Any], now: int) -> PaymentOutcome:
    """Confirm `pi` with a bank account: `processing`, a pending charge, settlement scheduled."""
    bank = pm["us_bank_account"]
    mandate = debits.mandate_for(ctx, pm, now)
    details = {
        "type": "us_bank_account",
        "us_bank_account": {
            "account_holder_type": bank["account_holder_type"],
            "account_type": bank["account_type"],
            "bank_name": bank["bank_name"],
            "fingerprint": bank["fingerprint"],
            "last4": bank["last4"],
            "mandate": mandate["id"],
            "payment_reference": None,
            "routing_number": bank["routing_number"],
        },
    }
    charge = _bank_charge(ctx, pi, pm, now, details=details, status="pending")
    pi["status"] = "processing"
    pi["latest_charge"] = charge["id"]
    pi["last_payment_error"] = None
    pi["next_action"] = None
    pi["payment_method_types"] = ["us_bank_account"]
    pi["_settle_at"] = now + bank_accounts.SETTLEMENT_DAYS * bank_accounts.DAY
    ctx.emit("charge.pending", charge, created=now)
    ctx.emit("payment_intent.processing", pi, created=now)
    return PaymentOutcome("processing", pi, charge, None)


def transfer_succeeded(ctx: Ctx, pi: dict[str, Any], now: int) -> PaymentOutcome:
    """A bank-transfer PaymentIntent got all its money from the cash balance: its charge, events."""
    pm = ctx.account.get(pi["payment_method"], "payment_method")
    details = {"customer_balance": {}, "type": cash_balances.METHOD}
    charge = _bank_charge(ctx, pi, pm, now, details=details, status="succeeded")
    _record_charge(ctx, charge, charge["amount"], now, fee=0)
    pi["latest_charge"] = charge["id"]
    pi["last_payment_error"] = None
    ctx.emit("charge.succeeded", charge, created=now)
    ctx.emit("payment_intent.succeeded", pi, created=now)
    return PaymentOutcome("succeeded", pi, charge, None)


def settle_debit(ctx: Ctx, pi: dict[str, Any], now: int) -> PaymentOutcome:
    """Settle a processing debit as its test account says: succeeded, or returned (failed)."""
    pi.pop("_settle_at", None)
    charge = ctx.account.get(pi["latest_charge"], "charge")
    pm = ctx.account.get(pi["payment_method"], "payment_method")
    spec: bank_accounts.BankSpec | None = bank_accounts.by_key(pm.get("_test_bank"))
    if spec is None or spec.behaviour == bank_accounts.SUCCEEDS:
        charge["status"] = "succeeded"
        charge["paid"] = True
        _record_charge(
            ctx, charge, charge["amount"], now, fee=bank_accounts.ach_fee(charge["amount"])
        )
        pi["status"] = "succeeded"
        pi["amount_received"] = pi["amount"]
        ctx.emit("charge.succeeded", charge, created=now)
        ctx.emit("payment_intent.succeeded", pi, created=now)
        return PaymentOutcome("succeeded", pi, charge, None)
    error = StripeError(
        spec.failure_message or "The payment failed.",
        status=402,
        code=spec.failure_code,
    )
    charge["status"] = "failed"
    charge["amount_captured"] = 0
    charge["failure_code"] = spec.failure_code
    charge["failure_message"] = spec.failure_message
    charge["outcome"]["network_status"] = "declined_by_network"
    charge["outcome"]["type"] = "issuer_declined"
    charge["outcome"]["reason"] = spec.failure_code
    pi["status"] = "requires_payment_method"
    pi["last_payment_error"] = intent_error(error, pm, charge)
    ctx.emit("charge.failed", charge, created=now)
    ctx.emit("payment_intent.payment_failed", pi, created=now)
    error.extra["payment_intent"] = render(pi)
    return PaymentOutcome("failed", pi, charge, error)


def _authenticated(
    pi: dict[str, Any], pm: dict[str, Any], card: cards.CardSpec, off_session: bool
) -> bool:
    """Whether a card that needs 3D Secure may be charged now."""
    if pi.get("_authenticated"):
        return True
    if pm.pop("_authenticate_next", False):
        # The cardholder just completed the challenge on a hosted page (Checkout, Portal).
        pi["_authenticated"] = True
        return True
    # 4000002500003155: once set up with authentication, off-session payments need none.
    return bool(
        off_session
        and card.key == "authenticationRequiredOnSetup"
        and pm.get("_setup_authenticated")
    )


def _fail(
    ctx: Ctx,
    pi: dict[str, Any],
    pm: dict[str, Any],
    charge: dict[str, Any],
    error: StripeError,
    now: int,
) -> PaymentOutcome:
    pi["status"] = "requires_payment_method"
    pi["latest_charge"] = charge["id"]
    pi["next_action"] = None
    pi["last_payment_error"] = intent_error(error, pm, charge)
    ctx.emit("charge.failed", charge, created=now)
    ctx.emit("payment_intent.payment_failed", pi, created=now)
    error.extra.setdefault("charge", charge["id"])
    error.extra["payment_intent"] = render(pi)
    return PaymentOutcome("failed", pi, charge, error)


def collect_payment(
    ctx: Ctx,
    *,
    customer_id: str,
    amount: int,
    currency: str,
    payment_method_id: str | None,
    description: str | None = None,
    invoice_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    off_session: bool = True,
    application_fee_amount: int | None = None,
    verification: str | None = None,
    payment_method_types: list[str] | None = None,
) -> PaymentOutcome:
    """Create and confirm a PaymentIntent for `amount`; declines come back as a failed outcome.

    With `payment_method_types` (an invoice's `payment_settings`) a payer of another type is
    not charged: the PaymentIntent waits for a method that may pay (`requires_payment_method`).
    `verification` is the invoice's `us_bank_account` verification method (`microdeposits`:
    an unverified bank account waits for them).
    """
    now = ctx.now_for_customer(customer_id)
    refused = None
    if payment_method_id:
        pm = payment_method_for(ctx, payment_method_id)
        payment_method_id = str(pm["id"])
        if payment_method_types and pm.get("type") not in payment_method_types:
            refused = incompatible_method_error(str(pm.get("type")), payment_method_types)
            payment_method_id = None
    pi = new_payment_intent(
        ctx,
        amount=amount,
        currency=currency,
        customer_id=customer_id,
        payment_method_id=payment_method_id,
        created=now,
        description=description,
        metadata=metadata,
        application_fee_amount=application_fee_amount,
        invoice_id=invoice_id,
    )
    if verification:
        pi["_verification"] = verification
    if payment_method_types:
        pi["payment_method_types"] = list(payment_method_types)
    if refused is not None:
        pi["status"] = "requires_payment_method"
        pi["last_payment_error"] = refused.body()["error"]
        return PaymentOutcome("failed", pi, None, refused)
    return attempt(ctx, pi, now=now, off_session=off_session, billing=True)


def capture_payment_intent(
    ctx: Ctx, pi: dict[str, Any], amount: int | None, now: int
) -> dict[str, Any]:
    """Capture an authorized PaymentIntent (all, or less; the rest is released)."""
    if pi["status"] != "requires_capture":
        raise StripeError(
            f"This PaymentIntent could not be captured because it has a status of {pi['status']}. "
            "Only a PaymentIntent with one of the following statuses may be captured: "
            "requires_capture.",
            code="payment_intent_unexpected_state",
        )
    amount = pi["amount"] if amount is None else amount
    if not 0 < amount <= pi["amount_capturable"]:
        raise StripeError(
            "The amount to capture must be positive and at most the amount capturable.",
            code="amount_too_large",
            param="amount_to_capture",
        )
    charge = ctx.account.get(pi["latest_charge"], "charge")
    previous = {"amount_captured": charge["amount_captured"], "captured": False}
    charge["captured"] = True
    charge["amount_captured"] = amount
    _record_charge(ctx, charge, amount, now)
    if amount < charge["amount"]:
        # Stripe refunds the uncaptured rest.
        charge["amount_refunded"] = charge["amount"] - amount
    pi["status"] = "succeeded"
    pi["amount_received"] = amount
    pi["amount_capturable"] = 0
    ctx.emit("charge.captured", charge, previous=previous, created=now)
    ctx.emit("payment_intent.succeeded", pi, created=now)
    return pi


# -- Disputes ------------------------------------------------------------------------------

EVIDENCE_FIELDS = frozenset(objects.payments.DISPUTE_EVIDENCE)


def open_dispute(
    ctx: Ctx, charge: dict[str, Any], now: int, card: cards.CardSpec | None = None
) -> dict[str, Any]:
    """Open a dispute on `charge`, as Stripe's dispute test cards do right after paying: 0259
    fraudulent, 2685 product not received, 1976 an inquiry (no funds withdrawn)."""
    card = card or cards.BY_KEY["createDispute"]
    due = (now // 86400 + 8) * 86400 - 1  # end of the 7th day after, like Stripe's due_by
    dispute = ctx.build(
        "dispute",
        "dp",
        created=now,
        amount=charge["amount"],
        charge=charge["id"],
        currency=charge["currency"],
        payment_intent=charge["payment_intent"],
        payment_method_details={
            "card": {
                "brand": charge["payment_method_details"]["card"]["brand"],
                "case_type": "chargeback",
                "network_reason_code": "10.4",
                "network": charge["payment_method_details"]["card"]["network"],
            },
            "type": "card",
        },
        reason=card.dispute_reason,
    )
    dispute["evidence_details"]["due_by"] = due
    if card.inquiry:
        dispute["status"] = "warning_needs_response"
        dispute["payment_method_details"]["card"]["case_type"] = "inquiry"
    ctx.account.add(dispute)
    charge["disputed"] = True
    ctx.emit("charge.dispute.created", dispute, created=now)
    if not card.inquiry:
        _move_dispute_funds(ctx, dispute, now, withdrawn=True)
        ctx.emit("charge.dispute.funds_withdrawn", dispute, created=now)
    return dispute


def _move_dispute_funds(ctx: Ctx, dispute: dict[str, Any], now: int, *, withdrawn: bool) -> None:
    """Take the disputed amount and fee out of the balance, or give both back (a won dispute)."""
    sign = -1 if withdrawn else 1
    txn = balances.record_transaction(
        ctx,
        amount=sign * dispute["amount"],
        currency=dispute["currency"],
        kind="adjustment",
        category="dispute" if withdrawn else "dispute_reversal",
        source=dispute["id"],
        description=(
            f"Chargeback {'withdrawal' if withdrawn else 'reversal'} for {dispute['charge']}"
        ),
        now=now,
        fee=-sign * balances.DISPUTE_FEE,
        fee_description="Dispute fee" if withdrawn else "Dispute fee refunded",
    )
    # A dispute carries its balance transactions in full, not as ids.
    dispute["balance_transactions"].append(render(txn))


def close_dispute(ctx: Ctx, dispute: dict[str, Any], status: str, now: int) -> dict[str, Any]:
    """End a dispute as `won` or `lost` and emit `charge.dispute.closed`."""
    previous = {"status": dispute["status"]}
    if dispute["status"].startswith("warning_"):
        # An inquiry withdrew nothing: whatever the outcome, it ends `warning_closed`.
        status = "warning_closed"
    dispute["status"] = status
    dispute["is_charge_refundable"] = False
    if status == "won":
        _move_dispute_funds(ctx, dispute, now, withdrawn=False)
        ctx.emit("charge.dispute.funds_reinstated", dispute, created=now)
    ctx.emit("charge.dispute.closed", dispute, previous=previous, created=now)
    return dispute


# -- Refunds -------------------------------------------------------------------------------


def refund(
    ctx: Ctx,
    charge_id: str,
    amount: int | None = None,
    reason: str | None = None,
    *,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Refund all or part of a succeeded charge and emit `refund.created` + `charge.refunded`."""
    charge = ctx.account.get(charge_id, "charge", param="charge")
    now = ctx.now_for_customer(charge.get("customer"))
    if charge["status"] != "succeeded" or not charge["captured"]:
        raise StripeError(
            f"Charge {charge_id} has not been captured or did not succeed.",
            code="charge_not_refundable",
            param="charge",
        )
    if charge["disputed"]:
        dispute = next(iter(ctx.account.where("dispute", charge=charge_id)), None)
        if dispute is None or dispute["status"] in ("needs_response", "under_review", "lost"):
            raise StripeError(
                f"Charge {charge_id} has been charged back; cannot issue a refund.",
                code="charge_disputed",
                param="charge",
            )
    remaining = charge["amount_captured"] - charge["amount_refunded"]
    if remaining <= 0:
        raise StripeError(
            f"Charge {charge_id} has already been refunded.",
            code="charge_already_refunded",
            param="charge",
        )
    amount = remaining if amount is None else amount
    if amount <= 0:
        raise StripeError(
            "Invalid positive integer", code="parameter_invalid_integer", param="amount"
        )
    if amount > remaining:
        raise StripeError(
            f"Refund amount ({format_amount(amount, charge['currency'])}) is greater than "
            "unrefunded amount "
            f"on charge ({format_amount(remaining, charge['currency'])})",
            code="amount_too_large",
            param="amount",
        )
    if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer"):
        raise parameter_invalid(
            "reason",
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
        )
    refund_obj = ctx.build(
        "refund",
        "re",
        created=now,
        amount=amount,
        charge=charge_id,
        currency=charge["currency"],
        destination_details={
            "card": {
                # The acquirer reference number (ARN) the cardholder's bank can trace.
                "reference": str(secrets.randbelow(10**23)).zfill(23),
                "reference_status": "available",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        payment_intent=charge["payment_intent"],
        reason=reason,
        customer=charge.get("customer"),
        payment_method=charge.get("payment_method"),
    )
    if metadata:
        refund_obj["metadata"] = {key: str(value) for key, value in metadata.items()}
    ctx.account.add(refund_obj)
    refund_obj["balance_transaction"] = balances.record_transaction(
        ctx,
        amount=-amount,
        currency=charge["currency"],
        kind="refund",
        category="refund",
        source=refund_obj["id"],
        description="REFUND FOR CHARGE",
        now=now,
    )["id"]
    previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
    sync_charge_refunds(ctx, charge)
    ctx.emit("refund.created", refund_obj, created=now)
    ctx.emit("charge.refunded", charge, previous=previous, created=now)
    return refund_obj


def sync_charge_refunds(ctx: Ctx, charge: dict[str, Any]) -> None:
    """Refresh the embedded `refunds` list on a charge from the stored refunds."""
    keys = ctx.account.table("refund").keys
    found = ctx.account.where("refund", charge=charge["id"])
    rows = [render(r) for r in sorted(found, key=lambda r: keys[r["id"]][1], reverse=True)]
    charge["refunds"] = {
        "object": "list",
        "data": rows[:10],
        "has_more": len(rows) > 10,
        "total_count": len(rows),
        "url": f"/v1/charges/{charge['id']}/refunds",
    }
