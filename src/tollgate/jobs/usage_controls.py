"""Usage controls' jobs: reservations whose time ran out give their hold back."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.usage.reservations import Usage, release_expired_reservations


def release_expired_holds(app: Container) -> int:
    """Release held reservations past their `expires_at`; return how many."""
    usage = Usage(app.db, app.catalog, app.clock, app.grace, app.usage_counters)
    return release_expired_reservations(usage)
