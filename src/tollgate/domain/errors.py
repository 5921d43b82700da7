"""Define the error types Tollgate's layers share; the API maps `type` to its JSON errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

# The errors the API answers with are the client's own classes, so an app catches the same ones
# from the HTTP client and the in-process client.
from tollgate_client.errors import Conflict as Conflict
from tollgate_client.errors import InvalidRequest as InvalidRequest
from tollgate_client.errors import NotFound as NotFound
from tollgate_client.errors import TollgateError as TollgateError


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
