"""FastAPI dependencies for the app's own routes: `require_feature` (the client's check) and
`consume_on_success` (the check before the route, `consume` after it succeeds)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from tollgate_client.decisions import Decision
from tollgate_client.errors import denied_status
from tollgate_client.verbs import Client


def require_feature(
    gate: Client,
    feature: str,
    *,
    customer: str | Callable[[Any], str] = "customer_id",
    quantity: int = 1,
) -> Callable[..., Any]:
    """A FastAPI dependency: answers 402/403 with the reason unless the customer may use the
    feature. `customer` names the path or query parameter holding the customer's id, or is a
    function of the request returning it.

        @app.post("/orgs/{customer_id}/listings",
                  dependencies=[Depends(require_feature(billing, "marketplace"))])
    """

    async def dependency(request: Request) -> Decision:
        customer_id: Any
        if callable(customer):
            customer_id = customer(request)
        else:
            customer_id = request.path_params.get(customer) or request.query_params.get(customer)
        if not customer_id:
            raise HTTPException(400, detail=f"no customer id in {customer!r}")
        if gate.backend.in_process:
            decision = gate.check(str(customer_id), feature, quantity)
        else:  # over HTTP: off the event loop
            decision = await run_in_threadpool(gate.check, str(customer_id), feature, quantity)
        if not decision.allowed:
            raise HTTPException(denied_status(decision), detail=decision.to_json())
        return decision

    return dependency


def consume_on_success(
    gate: Client,
    feature: str,
    *,
    customer: str | Callable[[Any], str] = "customer_id",
    quantity: int = 1,
    id: Callable[[Any], str] | None = None,
) -> Callable[..., Any]:
    """A FastAPI dependency that consumes the feature once the route succeeds.

    Before the route: the check (402/403 with the reason if the customer may not use it now).
    After the route returns without raising: `consume`, once per id, the request's
    `Idempotency-Key` header by default (or `id(request)`; without either a fresh one), so a
    retried request is counted once. A route that raises consumes nothing. Two requests that
    pass the check at once may both succeed while only one fits: the second's consume is then
    denied (and counts nothing); use a reservation where work must never start past the limit.

        @app.post("/orgs/{customer_id}/runs",
                  dependencies=[Depends(consume_on_success(billing, "runs"))])
    """

    async def dependency(request: Request) -> AsyncIterator[Decision]:
        customer_id: Any
        if callable(customer):
            customer_id = customer(request)
        else:
            customer_id = request.path_params.get(customer) or request.query_params.get(customer)
        if not customer_id:
            raise HTTPException(400, detail=f"no customer id in {customer!r}")
        if gate.backend.in_process:
            decision = gate.check(str(customer_id), feature, quantity)
        else:
            decision = await run_in_threadpool(gate.check, str(customer_id), feature, quantity)
        if not decision.allowed:
            raise HTTPException(denied_status(decision), detail=decision.to_json())
        use_id = id(request) if id is not None else request.headers.get("Idempotency-Key")
        yield decision
        # Reached only when the route returned: an exception in it is raised here instead.
        await run_in_threadpool(
            gate.consume,
            str(customer_id),
            feature,
            quantity,
            id=use_id or f"{feature}-{uuid.uuid4().hex}",
        )

    return dependency
