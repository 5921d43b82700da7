"""Bank transfers (`customer_balance`): each customer's cash balance, the virtual bank account that
funds it, and the PaymentIntents it pays.

A PaymentIntent paid by bank transfer waits in `requires_action` with
`next_action.display_bank_transfer_instructions` (the account to pay, a reference, the amount
remaining). Money arrives through `POST /v1/test_helpers/customers/{id}/fund_cash_balance`; with
Stripe's automatic reconciliation it goes first to the PaymentIntent whose reference the transfer
quotes, then to the oldest waiting ones. A part payment leaves the rest to pay
(`payment_intent.partially_funded`); what no payment needs stays on the cash balance
(`cash_balance.funds_available`) and pays the next PaymentIntent as soon as it is confirmed.
Transfers cost no Stripe fee here (Stripe's fee for US bank transfers is documented per
payment; the simulator leaves it out).
"""

from __future__ import annotations

import hashlib
from typing import Any

from stripesim import objects
from stripesim.errors import StripeError
from stripesim.registry import Ctx
from stripesim.state import new_id

ROUTING_NUMBER = "110000000"
BANK_NAME = "STRIPE TEST BANK"
TRANSFER_TYPE = "us_bank_transfer"
METHOD = "customer_balance"
# What a transfer of `amount` did to one PaymentIntent: (the PaymentIntent, the amount applied).
Applied = tuple[dict[str, Any], int]


def _account_number(customer_id: str) -> str:
    """The customer's own virtual account number (the same every time, like Stripe's)."""
    digest = hashlib.sha256(f"stripesim-transfer:{customer_id}".encode()).hexdigest()
    return "1111" + str(int(digest[:12], 16))[-8:].zfill(8)


def financial_addresses(customer_id: str) -> list[dict[str, Any]]:
    """The bank account the customer sends transfers to (an ABA address, ACH or wire)."""
    bank_address = objects.address(
        {"line1": "354 Oyster Point Blvd", "city": "South San Francisco", "state": "CA"}
    )
    bank_address.update(country="US", postal_code="94080")
    return [
        {
            "aba": {
                "account_holder_address": bank_address,
                "account_holder_name": "Stripesim Payments",
                "account_number": _account_number(customer_id),
                "account_type": "checking",
                "bank_address": bank_address,
                "bank_name": BANK_NAME,
                "routing_number": ROUTING_NUMBER,
            },
            "supported_networks": ["ach", "domestic_wire_us"],
            "type": "aba",
        }
    ]


def check_bank_transfer_params(params: dict[str, Any], param: str = "bank_transfer") -> None:
    """Refuse a bank transfer type other than US transfers (the only one simulated)."""
    transfer = params.get("bank_transfer")
    kind = transfer.get("type") if isinstance(transfer, dict) else None
    if kind not in (None, TRANSFER_TYPE):
        raise StripeError(
            f"stripesim simulates only {TRANSFER_TYPE} bank transfers, not '{kind}'.",
            param=f"{param}[type]",
        )


def funding_instructions(customer: dict[str, Any], currency: str) -> dict[str, Any]:
    """What `customers.create_funding_instructions` answers: where to send money."""
    if currency.lower() != "usd":
        raise StripeError(
            f"Bank transfers in {currency} need a {currency.upper()} account; stripesim "
            "simulates US bank transfers (usd) only.",
            param="currency",
        )
    shown = objects.new("funding_instructions")
    shown["bank_transfer"]["financial_addresses"] = financial_addresses(customer["id"])
    shown["currency"] = "usd"
    return shown


def cash_balance(customer: dict[str, Any]) -> dict[str, Any]:
    """The customer's `cash_balance` object (available funds by currency)."""
    shown = objects.new("cash_balance")
    shown["customer"] = customer["id"]
    shown["available"] = {
        currency: amount
        for currency, amount in sorted((customer.get("_cash") or {}).items())
        if amount
    }
    return shown


def available(customer: dict[str, Any], currency: str) -> int:
    return int((customer.get("_cash") or {}).get(currency, 0))


def _record(
    ctx: Ctx,
    customer: dict[str, Any],
    currency: str,
    net_amount: int,
    kind: str,
    now: int,
    **details: Any,
) -> dict[str, Any]:
    """Move the cash balance by `net_amount` and store its transaction (with its event)."""
    cash = customer.setdefault("_cash", {})
    cash[currency] = int(cash.get(currency, 0)) + net_amount
    txn = ctx.build(
        "customer_cash_balance_transaction",
        "ccsbtxn",
        created=now,
        currency=currency,
        customer=customer["id"],
        ending_balance=cash[currency],
        net_amount=net_amount,
        type=kind,
    )
    txn.update(details)  # each type carries only its own hash, as at Stripe
    ctx.account.add(txn)
    ctx.emit("customer_cash_balance_transaction.created", txn, created=now)
    return txn


def payment_method_for(ctx: Ctx, customer_id: str, now: int) -> dict[str, Any]:
    """The customer's `customer_balance` PaymentMethod (Stripe makes one per customer)."""
    existing = ctx.account.newest("payment_method", customer=customer_id, type=METHOD)
    if existing is not None:
        return existing
    pm = ctx.build("payment_method", "pm", created=now, type=METHOD, customer=customer_id)
    del pm["card"]
    pm["customer_balance"] = {}
    return ctx.account.add(pm)


def _instructions(ctx: Ctx, pi: dict[str, Any]) -> dict[str, Any]:
    remaining = int(pi["_transfer_remaining"])
    return {
        "type": "display_bank_transfer_instructions",
        "display_bank_transfer_instructions": {
            "amount_remaining": remaining,
            "currency": pi["currency"],
            "financial_addresses": financial_addresses(pi["customer"]),
            "hosted_instructions_url": f"{ctx.base_url}/bank-transfer/{pi['id']}",
            "reference": pi["_transfer_reference"],
            "type": TRANSFER_TYPE,
        },
    }


def start_transfer(ctx: Ctx, pi: dict[str, Any], now: int) -> int:
    """Confirm `pi` as a bank transfer: take what the cash balance holds, wait for the rest.

    Returns the amount taken from the cash balance now; `pi` is `succeeded` when that covered it,
    else `requires_action` with the instructions for the rest.
    """
    pi["payment_method_types"] = [METHOD]
    pi["payment_method_options"] = {
        METHOD: {
            "bank_transfer": {"requested_address_types": ["aba"], "type": TRANSFER_TYPE},
            "funding_type": "bank_transfer",
        }
    }
    pi.setdefault("_transfer_remaining", pi["amount"])
    if not pi.get("_transfer_reference"):
        pi["_transfer_reference"] = new_id("", 12).lstrip("_").upper()
    customer = ctx.account.get(pi["customer"], "customer")
    taken = min(available(customer, pi["currency"]), int(pi["_transfer_remaining"]))
    if taken:
        apply_to_payment(ctx, customer, pi, taken, now)
    if pi["_transfer_remaining"] > 0:
        pi["status"] = "requires_action"
        pi["next_action"] = _instructions(ctx, pi)
        ctx.emit("payment_intent.requires_action", pi, created=now)
    return taken


def apply_to_payment(
    ctx: Ctx, customer: dict[str, Any], pi: dict[str, Any], amount: int, now: int
) -> None:
    """Move `amount` of the cash balance to `pi`; it succeeds once nothing remains."""
    _record(
        ctx,
        customer,
        pi["currency"],
        -amount,
        "applied_to_payment",
        now,
        applied_to_payment={"payment_intent": pi["id"]},
    )
    pi["_transfer_remaining"] = int(pi["_transfer_remaining"]) - amount
    pi["amount_received"] = pi["amount"] - pi["_transfer_remaining"]
    if pi["_transfer_remaining"] > 0:
        pi["next_action"] = _instructions(ctx, pi)
        if pi["status"] == "requires_action":
            ctx.emit("payment_intent.partially_funded", pi, created=now)
        return
    pi["status"] = "succeeded"
    pi["next_action"] = None
    pi["amount_received"] = pi["amount"]


def waiting_payments(ctx: Ctx, customer_id: str, currency: str, reference: str | None) -> list:
    """The customer's PaymentIntents waiting for transfers: the one `reference` names first."""
    waiting = [
        pi
        for pi in ctx.account.where(
            "payment_intent", customer=customer_id, status="requires_action"
        )
        if pi.get("_transfer_remaining") and pi["currency"] == currency
    ]
    waiting.sort(key=lambda pi: (pi.get("_transfer_reference") != reference, pi["created"]))
    return waiting


def fund(
    ctx: Ctx,
    customer: dict[str, Any],
    *,
    amount: int,
    currency: str,
    reference: str | None,
    now: int,
) -> tuple[dict[str, Any], list[Applied]]:
    """A transfer of `amount` arrived: fund the cash balance, then pay what waits for it."""
    funded = _record(
        ctx,
        customer,
        currency,
        amount,
        "funded",
        now,
        funded={
            "bank_transfer": {
                "reference": reference or "",
                "type": TRANSFER_TYPE,
                "us_bank_transfer": {"network": "ach", "sender_name": customer.get("name")},
            }
        },
    )
    applied: list[Applied] = []
    for pi in waiting_payments(ctx, customer["id"], currency, reference):
        left = available(customer, currency)
        if left <= 0:
            break
        taken = min(left, int(pi["_transfer_remaining"]))
        apply_to_payment(ctx, customer, pi, taken, now)
        applied.append((pi, taken))
    if available(customer, currency) > 0:
        ctx.emit("cash_balance.funds_available", cash_balance(customer), created=now)
    return funded, applied
