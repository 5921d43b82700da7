"""The errors Tollgate's API answers with, as exceptions: one class per `error.type`.

The server raises the same classes (its `tollgate.domain.errors` builds on these), so code that
catches them works against the HTTP client and the in-process one alike.
"""

from __future__ import annotations

from typing import ClassVar

from tollgate_client.decisions import Code, Decision


class TollgateError(Exception):
    """Base of Tollgate's expected errors: a stable `type`, a message and the offending param."""

    type: ClassVar[str] = "tollgate_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_json(self) -> dict[str, str]:
        """Return the body of the API's {"error": ...} answer."""
        body = {"type": self.type, "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        return body


class InvalidRequest(TollgateError):
    """The request is malformed or asks for something the catalog or state does not allow."""

    type: ClassVar[str] = "invalid_request_error"


class NotFound(TollgateError):
    """The named object does not exist."""

    type: ClassVar[str] = "not_found"


class Conflict(TollgateError):
    """The request contradicts the current state, e.g. a repeat with different content."""

    type: ClassVar[str] = "conflict"


# Codes a payment would fix answer 402 Payment Required; a feature outside the plan is 403.
PAYMENT_CODES = frozenset({Code.LIMIT_EXCEEDED, Code.PAYMENT_OVERDUE, Code.INSUFFICIENT_CREDITS})


class ApiError(TollgateError):
    """An error answer without a more specific class here; `type` and `status` are the API's."""

    type: ClassVar[str] = "api_error"

    def __init__(
        self, message: str, *, param: str | None = None, type_: str = "api_error", status: int = 0
    ) -> None:
        super().__init__(message, param=param)
        self.type = type_  # type: ignore[misc]
        self.status = status


class FeatureDenied(TollgateError):
    """The customer may not use the feature now; `decision` says why (`reason`, `code`)."""

    type: ClassVar[str] = "feature_denied"

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason, param=decision.feature)
        self.decision = decision
        self.status = denied_status(decision)


def denied_status(decision: Decision) -> int:
    """402 when paying would allow it, 403 when the plan lacks it."""
    return 402 if decision.code in PAYMENT_CODES else 403
