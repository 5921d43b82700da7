"""Define the error types Tollgate's layers share; the API maps `type` to its JSON errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar


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


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """One thing wrong with a catalog, at a dotted path such as `plans.pro.prices[1].currency`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CatalogError(TollgateError):
    """The catalog is invalid; lists every problem found, not just the first."""

    type: ClassVar[str] = "catalog_error"

    def __init__(self, problems: Iterable[CatalogProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
