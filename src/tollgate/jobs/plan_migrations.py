"""Finish plan migrations whose run stopped part-way (the process running it died)."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.plan_migrations import resume_plan_migrations


def resume_stalled_plan_migrations(app: Container) -> dict[str, int]:
    """Resume running migrations nobody has touched for two minutes; each resumes safely."""
    return resume_plan_migrations(
        db=app.db, catalog=app.catalog, gateway=app.stripe, clock=app.clock
    )
