"""Stripe's test US bank accounts (ACH Direct Debit): what each account number does.

A `us_bank_account` PaymentMethod stores the account's public details (bank name, last4, routing
number) and a private `_test_bank` tag naming how its debits settle. A debit is `processing`
until it settles, `SETTLEMENT_DAYS` later by the simulator's clock or the customer's test clock
(Stripe: about 4 business days).
"""

from __future__ import annotations

from dataclasses import dataclass

from stripesim.cards import fingerprint
from stripesim.errors import StripeError

ROUTING_NUMBER = "110000000"
DAY = 86400
SETTLEMENT_DAYS = 4

SUCCEEDS = "succeeds"
FAILS = "fails"  # the debit is returned when it settles


@dataclass(frozen=True)
class BankSpec:
    """One of Stripe's documented test bank accounts."""

    key: str
    account_number: str
    behaviour: str
    failure_code: str | None = None
    failure_message: str | None = None

    @property
    def last4(self) -> str:
        return self.account_number[-4:]

    @property
    def fingerprint(self) -> str:
        return fingerprint(f"stripesim-bank:{self.account_number}")


_BANKS = [
    BankSpec("success", "000123456789", SUCCEEDS),
    BankSpec(
        "insufficientFunds",
        "000222222227",
        FAILS,
        "insufficient_funds",
        "The customer's account has insufficient funds to cover this payment.",
    ),
    BankSpec(
        "accountClosed",
        "000111111113",
        FAILS,
        "account_closed",
        "The customer's bank account has been closed.",
    ),
    BankSpec(
        "noAccount",
        "000111111116",
        FAILS,
        "no_account",
        "The customer's bank account could not be located.",
    ),
    BankSpec(
        "debitNotAuthorized",
        "000333333335",
        FAILS,
        "debit_not_authorized",
        "The customer's bank account has not authorized debits from Stripe.",
    ),
]
BY_KEY = {bank.key: bank for bank in _BANKS}
BY_NUMBER = {bank.account_number: bank for bank in _BANKS}


# Micro-deposit verification (Stripe's test values): the amounts 32 and 45 (cents), or the
# descriptor code SM11AA, verify the account; anything else is a mismatch. Stripe allows 3
# attempts with amounts and 10 with a descriptor code, then the verification fails for good.
MICRODEPOSIT_AMOUNTS = (32, 45)
MICRODEPOSIT_CODE = "SM11AA"
MICRODEPOSIT_ATTEMPTS = {"amounts": 3, "descriptor_code": 10}
MICRODEPOSIT_ARRIVAL_DAYS = 2  # the deposits reach the account in 1-2 business days
VERIFICATION_METHODS = ("automatic", "instant", "microdeposits")


def ach_fee(amount: int) -> int:
    """Stripe's fee for an ACH Direct Debit: 0.8 %, at most $5."""
    return min(round(amount * 0.008), 500)


def by_key(key: str | None) -> BankSpec | None:
    return BY_KEY.get(key or "")


def by_details(account_number: str, routing_number: str) -> BankSpec:
    """The test account for these numbers; anything else is refused as Stripe's test mode does."""
    if routing_number != ROUTING_NUMBER:
        raise StripeError(
            f"Routing number must be the test routing number {ROUTING_NUMBER} in test mode.",
            code="routing_number_invalid",
            param="us_bank_account[routing_number]",
        )
    spec = BY_NUMBER.get(account_number)
    if spec is None:
        raise StripeError(
            "Use one of Stripe's test account numbers (" + ", ".join(BY_NUMBER) + ") in test mode.",
            code="account_number_invalid",
            param="us_bank_account[account_number]",
        )
    return spec
