"""Balances: the account's (charges in, refunds and disputes out, Stripe's fees) and each
customer's credit balance, with the transactions that move them.

Documented choices: card payments cost Stripe's standard 2.9% + 30 (minor units) and become
available two days after the charge (Stripe's standard US schedule); a dispute withdraws its
amount plus a 1,500 fee, and a won dispute gives both back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripesim import objects
from stripesim.registry import Ctx

DAY = 86_400
CARD_FEE_PERCENT = Decimal("2.9")
CARD_FEE_FIXED = 30
DISPUTE_FEE = 1500
AVAILABLE_AFTER_DAYS = 2


def card_fee(amount: int) -> int:
    """Return Stripe's fee for a card payment of `amount` (2.9% + 30, rounded half up)."""
    return int((Decimal(amount) * CARD_FEE_PERCENT / 100).quantize(Decimal(1))) + CARD_FEE_FIXED


def _fee_details(fee: int, currency: str, description: str) -> list[dict[str, Any]]:
    if not fee:
        return []
    return [
        {
            "amount": fee,
            "application": None,
            "currency": currency,
            "description": description,
            "type": "stripe_fee",
        }
    ]


def record_transaction(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    kind: str,
    category: str,
    source: str,
    description: str | None,
    now: int,
    fee: int = 0,
    fee_description: str = "Stripe processing fees",
) -> dict[str, Any]:
    """Store a balance transaction (money into or out of the account's balance)."""
    available_on = (now // DAY + AVAILABLE_AFTER_DAYS) * DAY
    txn = ctx.build(
        "balance_transaction",
        "txn",
        created=now,
        amount=amount,
        available_on=available_on,
        currency=currency,
        description=description,
        fee=fee,
        fee_details=_fee_details(fee, currency, fee_description),
        net=amount - fee,
        reporting_category=category,
        source=source,
        type=kind,
    )
    return ctx.account.add(txn)


def settle(txn: dict[str, Any], now: int) -> dict[str, Any]:
    """Mark a transaction available once its `available_on` has passed; return it."""
    if txn["status"] == "pending" and txn["available_on"] <= now:
        txn["status"] = "available"
    return txn


def balance(ctx: Ctx) -> dict[str, Any]:
    """Return the account's balance: net amounts by currency, available and pending."""
    now = ctx.now()
    totals: dict[str, dict[str, int]] = {}
    for txn in ctx.account.all("balance_transaction"):
        settle(txn, now)
        by_status = totals.setdefault(txn["currency"], {"available": 0, "pending": 0})
        by_status[txn["status"]] += txn["net"]
    currencies = sorted(totals) or ["usd"]
    shown = objects.new("balance")
    for status in ("available", "pending"):
        shown[status] = [
            {
                "amount": totals.get(currency, {}).get(status, 0),
                "currency": currency,
                "source_types": {"card": totals.get(currency, {}).get(status, 0)},
            }
            for currency in currencies
        ]
    shown["connect_reserved"] = [{"amount": 0, "currency": currency} for currency in currencies]
    return shown


# -- customers' credit balances ----------------------------------------------------------------


def adjust_customer_balance(
    ctx: Ctx,
    customer: dict[str, Any],
    amount: int,
    currency: str,
    *,
    kind: str,
    now: int,
    invoice: str | None = None,
    credit_note: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Move a customer's balance by `amount` (negative is credit) and record the transaction."""
    previous: dict[str, Any] = {"balance": customer.get("balance") or 0}
    customer["balance"] = int(customer.get("balance") or 0) + amount
    if customer.get("currency") is None and kind == "adjustment":
        # A balance given by hand fixes the customer's currency, as at Stripe.
        previous["currency"] = None
        customer["currency"] = currency
    txn = ctx.build(
        "customer_balance_transaction",
        "cbtxn",
        created=now,
        amount=amount,
        credit_note=credit_note,
        currency=currency,
        customer=customer["id"],
        description=description,
        ending_balance=customer["balance"],
        invoice=invoice,
        metadata=dict(metadata or {}),
        type=kind,
    )
    ctx.account.add(txn)
    ctx.emit_update("customer.updated", customer, previous, created=now)
    return txn
