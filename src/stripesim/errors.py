"""Stripe-shaped API errors."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any


@dataclass(eq=False)
class StripeError(Exception):
    """An error answered in Stripe's JSON shape: `{"error": {type, code, message, param}}`.

    `extra` holds the error object's further keys (`decline_code`, the `payment_intent`).
    """

    message: str
    _: KW_ONLY
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        if request_id:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error.update(self.extra)
        return {"error": error}


def resource_missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(
        f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param
    )


def parameter_missing(param: str) -> StripeError:
    return StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)


def parameter_invalid(param: str, message: str) -> StripeError:
    return StripeError(message, code="parameter_invalid_string", param=param)


def card_error(
    message: str, *, code: str | None, decline_code: str | None = None, param: str | None = None
) -> StripeError:
    """Return a card error (402): a decline, a bad card field, a failed authentication."""
    extra = {"decline_code": decline_code} if decline_code else {}
    return StripeError(message, status=402, type="card_error", code=code, param=param, extra=extra)
