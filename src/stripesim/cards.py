"""Stripe's test cards: what each number, `pm_card_*` id and `tok_*` token does.

The simulator never keeps a card number: a PaymentMethod stores the card's public details
(brand, last4, expiry, fingerprint) and a private `_test_card` tag naming the behaviour below.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stripesim.errors import StripeError, card_error

# What happens when a card is attached or charged.
OK = "ok"  # every charge succeeds
DECLINE = "decline"  # declined at attach (card check) and at every charge
DECLINE_AFTER_ATTACH = "decline_after_attach"  # attaches, then every charge is declined
# Needs 3D Secure: requires_action on-session, authentication_required off-session.
AUTHENTICATE = "authenticate"
DISPUTE = "dispute"  # charge succeeds, then a fraudulent dispute is opened


_FINGERPRINT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def fingerprint(number: str) -> str:
    """A stable fingerprint of an account or card number, like Stripe's (same number, same
    fingerprint); the caller salts `number` with its kind."""
    digest = hashlib.sha256(number.encode()).digest()
    return "".join(_FINGERPRINT_ALPHABET[byte % len(_FINGERPRINT_ALPHABET)] for byte in digest[:16])


@dataclass(frozen=True)
class CardSpec:
    """One of Stripe's documented test cards."""

    key: str  # the private tag stored on the PaymentMethod
    number: str
    brand: str
    behaviour: str
    pm_id: str
    token: str
    funding: str = "credit"
    country: str = "US"
    code: str = "card_declined"
    decline_code: str | None = "generic_decline"
    message: str = "Your card was declined."
    # DISPUTE cards: the dispute's reason, and whether it is an inquiry (no funds withdrawn).
    dispute_reason: str = "fraudulent"
    inquiry: bool = False

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def fingerprint(self) -> str:
        return fingerprint(f"stripesim:{self.number}")

    def decline(self) -> StripeError:
        """The card error Stripe answers when this card is declined."""
        return card_error(self.message, code=self.code, decline_code=self.decline_code)


def authentication_error() -> StripeError:
    """The error for a card that needs authentication the payment could not get."""
    return card_error(
        "Your card was declined. This transaction requires authentication.",
        code="authentication_required",
        decline_code="authentication_required",
    )


_CARDS = [
    CardSpec("visa", "4242424242424242", "visa", OK, "pm_card_visa", "tok_visa"),
    CardSpec(
        "visa_debit",
        "4000056655665556",
        "visa",
        OK,
        "pm_card_visa_debit",
        "tok_visa_debit",
        funding="debit",
    ),
    CardSpec(
        "mastercard", "5555555555554444", "mastercard", OK, "pm_card_mastercard", "tok_mastercard"
    ),
    CardSpec("amex", "378282246310005", "amex", OK, "pm_card_amex", "tok_amex"),
    CardSpec(
        "chargeDeclined",
        "4000000000000002",
        "visa",
        DECLINE,
        "pm_card_chargeDeclined",
        "tok_chargeDeclined",
    ),
    CardSpec(
        "insufficientFunds",
        "4000000000009995",
        "visa",
        DECLINE,
        "pm_card_visa_chargeDeclinedInsufficientFunds",
        "tok_visa_chargeDeclinedInsufficientFunds",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
    ),
    CardSpec(
        "expiredCard",
        "4000000000000069",
        "visa",
        DECLINE,
        "pm_card_chargeDeclinedExpiredCard",
        "tok_chargeDeclinedExpiredCard",
        code="expired_card",
        decline_code="expired_card",
        message="Your card has expired.",
    ),
    CardSpec(
        "chargeCustomerFail",
        "4000000000000341",
        "visa",
        DECLINE_AFTER_ATTACH,
        "pm_card_chargeCustomerFail",
        "tok_chargeCustomerFail",
    ),
    CardSpec(
        "authenticationRequiredOnSetup",
        "4000002500003155",
        "visa",
        AUTHENTICATE,
        "pm_card_authenticationRequiredOnSetup",
        "tok_authenticationRequiredOnSetup",
    ),
    CardSpec(
        "authenticationRequired",
        "4000002760003184",
        "visa",
        AUTHENTICATE,
        "pm_card_authenticationRequired",
        "tok_authenticationRequired",
    ),
    # 3-D Secure 2 must be completed for every payment, set up or not.
    CardSpec(
        "threeDSecure2Required",
        "4000000000003220",
        "visa",
        AUTHENTICATE,
        "pm_card_threeDSecure2Required",
        "tok_threeDSecure2Required",
    ),
    CardSpec(
        "createDispute",
        "4000000000000259",
        "visa",
        DISPUTE,
        "pm_card_createDispute",
        "tok_createDispute",
    ),
    CardSpec(
        "createDisputeProductNotReceived",
        "4000000000002685",
        "visa",
        DISPUTE,
        "pm_card_createDisputeProductNotReceived",
        "tok_createDisputeProductNotReceived",
        dispute_reason="product_not_received",
    ),
    CardSpec(
        "createDisputeInquiry",
        "4000000000001976",
        "visa",
        DISPUTE,
        "pm_card_createDisputeInquiry",
        "tok_createDisputeInquiry",
        inquiry=True,
    ),
]

BY_KEY = {card.key: card for card in _CARDS}
BY_NUMBER = {card.number: card for card in _CARDS}
BY_PM_ID = {card.pm_id: card for card in _CARDS}
BY_TOKEN = {card.token: card for card in _CARDS}


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def by_number(raw: str) -> CardSpec:
    """The test card for a typed number (spaces and dashes allowed), or Stripe's card error."""
    number = "".join(ch for ch in str(raw) if ch not in " -")
    if not number.isdigit() or not 12 <= len(number) <= 19 or not luhn_valid(number):
        raise card_error(
            "Your card number is incorrect.", code="incorrect_number", param="card[number]"
        )
    card = BY_NUMBER.get(number)
    if card is None:
        # Stripe's test mode refuses real card numbers.
        raise card_error(
            "Your card was declined. Your request was in test mode, but used a non test card. "
            "For a list of valid test cards, visit: https://stripe.com/docs/testing.",
            code="card_declined",
            decline_code="test_mode_live_card",
        )
    return card


def by_key(key: str | None) -> CardSpec:
    """The behaviour of a stored PaymentMethod (by its private `_test_card` tag)."""
    return BY_KEY.get(key or "visa", BY_KEY["visa"])
