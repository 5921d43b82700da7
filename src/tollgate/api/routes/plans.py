"""Plan migrations for the console (issue 20): preview, start, and follow one."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from tollgate.api.deps import container, read_scope, write_actor
from tollgate.api.schemas import RequestBody
from tollgate.bootstrap import Container
from tollgate.domain.errors import NotFound
from tollgate.services.plan_migrations import (
    MigrationRequest,
    get_plan_migration,
    preview_plan_migration,
    run_plan_migration,
    start_plan_migration,
)

router = APIRouter(prefix="/v1/plans", tags=["plans"])
log = logging.getLogger("tollgate.plan_migrations")


class PlanMigrationCreate(RequestBody):
    """Move a plan's subscribers from one version to another."""

    from_version: int = Field(ge=1, le=1_000_000, description="The version moved from.")
    to_version: int = Field(ge=1, le=1_000_000, description="The version moved to.")
    at: Literal["renewal", "now"] = "renewal"
    proration: Literal["create_prorations", "always_invoice", "none"] = "none"
    customers: list[str] | None = Field(None, max_length=100_000)
    notify: bool = False
    dry_run: bool = False


@router.post("/{plan}/migrations")
def post_plan_migration(
    plan: str,
    body: PlanMigrationCreate,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> JSONResponse:
    """Preview (`dry_run`) or start a migration; it runs in the background: follow it by id."""
    catalog = app.catalog
    request = MigrationRequest(
        plan=plan,
        from_version=body.from_version,
        to_version=body.to_version,
        at=body.at,
        proration=body.proration,
        customers=tuple(body.customers) if body.customers is not None else None,
        notify=body.notify,
    )
    if body.dry_run:
        lines = preview_plan_migration(db=app.db, catalog=catalog, clock=app.clock, request=request)
        return JSONResponse({"dry_run": True, "customers": [line.to_json() for line in lines]})
    started = start_plan_migration(
        db=app.db, catalog=catalog, clock=app.clock, request=request, actor=actor
    )
    if started.status == "done":  # the same request again, after the first one finished
        return JSONResponse(started.to_json(with_lines=False), status_code=200)
    gateway = app.stripe

    def run() -> None:
        try:
            run_plan_migration(
                db=app.db,
                catalog=catalog,
                gateway=gateway,
                clock=app.clock,
                migration_id=started.id,
            )
        except Exception:  # the worker's resume_plan_migrations job finishes it
            log.exception("plan migration %s stopped", started.id)

    threading.Thread(target=run, name=f"tollgate-{started.id}", daemon=True).start()
    return JSONResponse(started.to_json(with_lines=False), status_code=202)


@router.get("/{plan}/migrations/{migration_id}", dependencies=[Depends(read_scope)])
def get_plan_migration_route(
    plan: str, migration_id: str, app: Container = Depends(container)
) -> dict[str, Any]:
    """A migration: its status, counts per status, and each customer's line."""
    found = get_plan_migration(db=app.db, migration_id=migration_id)
    if found.plan != plan:
        raise NotFound(f"no plan migration {migration_id!r} of plan {plan!r}", param="migration")
    return found.to_json()
