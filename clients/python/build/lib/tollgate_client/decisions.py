"""An entitlement decision, as the API answers it and the client reads it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Why a decision came out as it did, for programs (the reason is for people)."""

    ALLOWED = "allowed"
    NOT_IN_PLAN = "not_in_plan"
    LIMIT_EXCEEDED = "limit_exceeded"
    PAYMENT_OVERDUE = "payment_overdue"
    INSUFFICIENT_CREDITS = "insufficient_credits"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this customer use `quantity` of `feature`?"."""

    allowed: bool
    feature: str
    reason: str
    code: Code
    limit: int | None
    used: int | None
    remaining: int | None
    warning: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "feature": self.feature,
            "reason": self.reason,
            "code": self.code.value,
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "warning": self.warning,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        """Return the decision `to_json` described (what a client reads from the API)."""
        return cls(
            allowed=bool(data["allowed"]),
            feature=str(data["feature"]),
            reason=str(data["reason"]),
            code=Code(data["code"]),
            limit=data.get("limit"),
            used=data.get("used"),
            remaining=data.get("remaining"),
            warning=data.get("warning"),
        )
