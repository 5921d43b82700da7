"""`require_feature`: the client's check as a FastAPI dependency in the app's own routes."""

from __future__ import annotations

from collections.abc import Callable
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
