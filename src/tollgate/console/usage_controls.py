"""The console's spend cap and usage alerts of a customer: support and admin change them.

Each form is checked like every console action (session, CSRF, the `act_on_customers` role),
calls the same use cases as the JSON API, and writes an audit row naming the operator
(services/usage/controls.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tollgate.console.pages import _app, _text, acting
from tollgate.services.usage import controls

router = APIRouter(prefix="/console", include_in_schema=False)


@router.post("/customers/{customer_id}/usage-controls/{change}")
async def change_usage_controls(request: Request, customer_id: str, change: str) -> Response:
    """Set or remove the customer's spend cap (`spend-cap`), add an alert or remove one."""
    session, form = await acting(request, "act_on_customers")
    app = _app(request)
    await run_in_threadpool(
        controls.change_from_page,
        app,
        customer_id=customer_id,
        change=change,
        fields={name: _text(form, name) for name in form},
        actor=session.actor,
    )
    app.forget_decisions([customer_id])
    return RedirectResponse(
        f"/console/customers/{customer_id}?done={change}#controls-title", status_code=303
    )
