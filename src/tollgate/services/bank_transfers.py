"""Bank transfers (issue 21): what a customer paying by transfer has to send, and where.

A subscription or invoice paid by bank transfer (`customer_balance`) waits at Stripe with
instructions: the account to pay, a reference, the amount still to come. The webhook handlers
mirror them (`bank_transfers`) with the customer's cash balance (money received that no invoice
took yet: an over-payment, which pays the next invoice); this reads the mirror for the API and
the billing page. Reconciliation compares the mirrored cash balance with Stripe's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tollgate.db.queries import customer_pages
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import NotFound


@dataclass(frozen=True)
class WaitingTransfer:
    """A payment waiting for bank transfers; amounts in minor units of `currency`."""

    payment_intent: str
    amount: int
    amount_remaining: int
    currency: str
    reference: str | None
    account: dict[str, str] | None
    instructions_url: str | None

    @property
    def amount_received(self) -> int:
        return self.amount - self.amount_remaining

    def to_json(self) -> dict[str, Any]:
        def money(amount: int) -> dict[str, Any]:
            return {"amount": amount, "currency": self.currency}

        return {
            "payment_intent": self.payment_intent,
            "amount": money(self.amount),
            "amount_received": money(self.amount_received),
            "amount_remaining": money(self.amount_remaining),
            "reference": self.reference,
            "account": self.account,
            "instructions_url": self.instructions_url,
        }


@dataclass(frozen=True)
class BankTransfersView:
    """The customer's cash balance (by currency) and its payments waiting for transfers."""

    cash_balance: dict[str, int]
    waiting: tuple[WaitingTransfer, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "cash_balance": [
                {"amount": amount, "currency": currency}
                for currency, amount in sorted(self.cash_balance.items())
            ],
            "waiting": [transfer.to_json() for transfer in self.waiting],
        }


def get_bank_transfers(*, db: Database, customer_id: str) -> BankTransfersView:
    """Return the customer's cash balance and the transfers it still has to make."""
    with db.engine.connect() as connection:
        balance, rows = customer_pages.bank_transfers_of(connection, customer_id)
        connection.rollback()
    if balance is None:
        raise NotFound(f"no customer {customer_id!r}", param="id")
    return BankTransfersView(
        cash_balance={
            currency: int(amount) for currency, amount in (balance.cash_balance or {}).items()
        },
        waiting=tuple(
            WaitingTransfer(
                payment_intent=row.id,
                amount=row.amount,
                amount_remaining=row.amount_remaining,
                currency=row.currency,
                reference=row.reference,
                account=row.account,
                instructions_url=row.instructions_url,
            )
            for row in rows
        ),
    )
