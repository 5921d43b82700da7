"""The billing page's spend cap and usage alerts: the customer sets them itself.

The cap only where the catalog says `customer_spend_caps: true` (else the use case refuses with
403); alerts always. Each form carries the page session's CSRF token, calls the same use cases
as the JSON API and is audited as the customer's (services/usage/controls.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from tollgate.bootstrap import Container
from tollgate.services.page_access import PageSession
from tollgate.services.usage import controls
from tollgate.web.billing import _action, _text

router = APIRouter(include_in_schema=False)


@router.post("/billing/usage-controls/{change}")
async def change_usage_controls(request: Request, change: str) -> Response:
    """Set or remove the spend cap (`spend-cap`), add an alert or remove one."""

    async def run(app: Container, session: PageSession, form: FormData) -> Response:
        await run_in_threadpool(
            controls.change_from_page,
            app,
            customer_id=session.customer_id,
            change=change,
            fields={name: _text(form, name) for name in form},
            actor=None,
        )
        app.forget_decisions([session.customer_id])
        # The notice, and the controls' card in view.
        return RedirectResponse(f"/billing?done={change}#usage-controls", status_code=303)

    return await _action(request, run)
