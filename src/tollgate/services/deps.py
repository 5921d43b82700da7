"""What a use case works with, passed as one argument: `def verb_noun(deps, *, ...)`.

The one bundle is the Container (`tollgate.bootstrap`): routes, pages, the CLI, jobs and the
in-process client hand it over whole. This protocol names the part of it services read, so
that `services/` does not import `bootstrap` (which imports `services/`), and so that a test
may hand over anything with these attributes. It is not a frozen dataclass on purpose: the
container builds its gateway lazily and swaps in a newer synced catalog while it runs, and a
copy would miss both. A use case that reads the catalog several times keeps `deps.catalog`
in a local once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.dunning import DunningPolicy
from tollgate.services.closed_days import ClosedDays
from tollgate.stripe.gateway import StripeGateway


class Deps(Protocol):
    """The database, catalog, clock, settings and Stripe gateway a use case runs on."""

    @property
    def db(self) -> Database: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def grace(self) -> timedelta: ...

    @property
    def dunning_policy(self) -> DunningPolicy: ...

    @property
    def closed_days(self) -> ClosedDays: ...

    def optional_stripe(self) -> StripeGateway | None:
        """The Stripe gateway, or None without a STRIPE_SECRET_KEY."""
        ...

    def forget_decisions(self, customers: Sequence[str]) -> None:
        """Drop this process's cached entitlement decisions of these customers."""
        ...
