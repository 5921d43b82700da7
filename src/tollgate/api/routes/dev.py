"""Routes of `tollgate dev` only: its page, and its one clock (see services/dev_clock.py).

Mounted when TOLLGATE_ENV=dev. The JSON route takes a write key like every other; the page's
buttons post a form, accepted only from the page's own origin (the dev server listens on
127.0.0.1, but another site open in the same browser could otherwise post to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tollgate.api.deps import Forbidden, container, write_scope
from tollgate.bootstrap import Container
from tollgate.clock import AdjustableClock
from tollgate.domain.errors import NotFound
from tollgate.services.dev_clock import DevTime, advance_dev_clock, dev_time

router = APIRouter(prefix="/dev", tags=["dev"], include_in_schema=False)
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(),
)
MOVES = ("1h", "1d", "3d", "1w", "1mo")


class ClockMove(BaseModel):
    by: str = Field(min_length=1, max_length=64, description="`3d`, `12h`, `1mo` or an ISO time.")


def _dev_clock(app: Container) -> tuple[AdjustableClock, str]:
    if not isinstance(app.clock, AdjustableClock) or not app.settings.stripe_test_clock:
        raise NotFound("the dev clock exists only under `tollgate dev`")
    return app.clock, app.settings.stripe_test_clock


def _advance(app: Container, by: str) -> DevTime:
    clock, test_clock = _dev_clock(app)
    return advance_dev_clock(gateway=app.stripe, clock=clock, test_clock=test_clock, by=by)


@router.get("/clock", dependencies=[Depends(write_scope)])
async def get_dev_clock(app: Container = Depends(container)) -> JSONResponse:
    """Where the simulated Stripe's clock and Tollgate's stand."""
    clock, test_clock = _dev_clock(app)
    now = await run_in_threadpool(dev_time, gateway=app.stripe, clock=clock, test_clock=test_clock)
    return JSONResponse(now.to_json())


@router.post("/clock/advance", dependencies=[Depends(write_scope)])
async def advance_clock(move: ClockMove, app: Container = Depends(container)) -> JSONResponse:
    """Move both clocks forward: Stripe renews, ends trials and retries on the way."""
    return JSONResponse((await run_in_threadpool(_advance, app, move.by)).to_json())


@router.get("", response_class=HTMLResponse)
async def dev_page(request: Request, app: Container = Depends(container)) -> HTMLResponse:
    """The dev instance at a glance: both clocks, buttons to move them, the links."""
    clock, test_clock = _dev_clock(app)
    now = await run_in_threadpool(dev_time, gateway=app.stripe, clock=clock, test_clock=test_clock)
    page = _PAGES.get_template("dev.html").render(
        now=now, moves=MOVES, api=str(request.base_url).rstrip("/"), moved=request.query_params
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.post("/advance")
async def advance_from_page(
    request: Request, by: Annotated[str, Form()], app: Container = Depends(container)
) -> RedirectResponse:
    """The page's buttons: move both clocks, then show the page again."""
    origin = request.headers.get("origin")
    if origin != str(request.base_url).rstrip("/"):
        raise Forbidden("the dev page's buttons work only from the dev page itself")
    await run_in_threadpool(_advance, app, by)
    return RedirectResponse(f"/dev?moved={by}", status_code=303)
