"""The client's own errors, beside Tollgate's (`tollgate.domain.errors`)."""

from __future__ import annotations

from typing import ClassVar

from tollgate.domain.entitlements import Code, Decision
from tollgate.domain.errors import TollgateError

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
