"""Stripe's failures, as Tollgate's own error types (no SDK types leak past the gateway)."""

from __future__ import annotations

from typing import ClassVar

from tollgate.domain.errors import TollgateError


class StripeFailure(TollgateError):
    """Stripe refused or could not do what was asked."""

    type: ClassVar[str] = "stripe_error"
    status: ClassVar[int] = 502

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class StripeUnavailable(StripeFailure):
    """Stripe did not answer, or kept answering 429/5xx after every retry."""

    type: ClassVar[str] = "stripe_unavailable"
    status: ClassVar[int] = 503


class StripeAuthenticationFailed(StripeFailure):
    """Stripe rejected the API key, or the key lacks a permission (restricted keys)."""

    type: ClassVar[str] = "stripe_authentication_error"
    status: ClassVar[int] = 502


class StripeNotFound(StripeFailure):
    """The Stripe object named does not exist."""

    type: ClassVar[str] = "stripe_not_found"
    status: ClassVar[int] = 404


class PaymentDeclined(StripeFailure):
    """The card was declined or needs the customer to act."""

    type: ClassVar[str] = "card_declined"
    status: ClassVar[int] = 402


class IdempotencyKeyReused(StripeFailure):
    """An idempotency key came back with other parameters than it was first used with."""

    type: ClassVar[str] = "idempotency_error"
    status: ClassVar[int] = 409
