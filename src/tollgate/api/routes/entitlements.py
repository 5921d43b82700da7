"""Entitlement checks (the hot path: answered from the process's cache) and the change feed."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import Connection

from tollgate.api.deps import container, read_scope
from tollgate.api.schemas import json_response
from tollgate.bootstrap import Container
from tollgate.db.queries.changes import changes_after, last_change

router = APIRouter(tags=["entitlements"], dependencies=[Depends(read_scope)])

MAX_WAIT_SECONDS = 30.0
MAX_SEQ = 2**63 - 1  # a change's number is a BIGINT


@router.get("/v1/customers/{customer_id}/entitlements")
async def get_entitlements(customer_id: str, request: Request) -> Response:
    """Every feature the customer has now: type, enabled, limit, used, remaining, hard."""
    return json_response(container(request).entitlements.entitlements(customer_id).to_json())


@router.get("/v1/customers/{customer_id}/entitlements/{feature}")
async def check_entitlement(
    request: Request,
    customer_id: str,
    feature: str,
    quantity: int = Query(1, ge=0, description="How much more the customer wants to use."),
    in_use: int | None = Query(
        None, ge=0, description="For a limit feature: how many the customer has now."
    ),
) -> Response:
    """May the customer use `quantity` more of the feature now? With a reason for people."""
    # The container is read here, not through a dependency: FastAPI runs a sync dependency on
    # the thread pool, a round trip that costs more than the check itself.
    cache = container(request).entitlements
    decision = cache.check(customer_id, feature, quantity, in_use=in_use)
    return json_response(decision.to_json())


@router.get("/v1/changes")
async def get_changes(
    request: Request,
    after: int | None = Query(
        None, ge=0, le=MAX_SEQ, description="The `last` of the previous answer."
    ),
    wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="Long-poll up to N seconds."),
    app: Container = Depends(container),
) -> Response:
    """Customers whose entitlements changed after `after` (long-poll with `wait`)."""
    deadline = time.monotonic() + wait
    while True:
        with app.db.engine.connect() as connection:
            changes, last = _read(connection, after)
        if (
            changes
            or after is None
            or time.monotonic() >= deadline
            or await request.is_disconnected()
        ):
            return json_response(
                {
                    "last": last,
                    "changes": [
                        {"seq": seq, "customer": customer, "reason": reason}
                        for seq, customer, reason in changes
                    ],
                }
            )
        await asyncio.sleep(0.05)


def _read(connection: Connection, after: int | None) -> tuple[list[tuple[int, str, str]], int]:
    try:
        if after is None:
            return [], last_change(connection)
        changes = changes_after(connection, after, limit=1000)
        return changes, changes[-1][0] if changes else after
    finally:
        connection.rollback()
