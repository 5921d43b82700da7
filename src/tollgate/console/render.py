"""Render console pages: the web package's layout, filters, CSRF tokens and headers, with the
console's own templates first."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse

from tollgate.config import Settings
from tollgate.domain.reconcile import values_text
from tollgate.services.operators import ConsoleSession
from tollgate.web import pages as web_pages
from tollgate.web.csrf import csrf_token
from tollgate.web.security import page_headers

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "—"


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


STATUS_TONE = {
    "active": "ok",
    "trialing": "ok",
    "succeeded": "ok",
    "sent": "ok",
    "delivered": "ok",
    "canceling": "warn",
    "past_due": "bad",
    "unpaid": "bad",
    "failed": "bad",
    "pending": "warn",
    "processing": "warn",
    "incomplete": "warn",
}

environment = web_pages.page_environment(
    ChoiceLoader([FileSystemLoader(TEMPLATES), FileSystemLoader(web_pages.TEMPLATES)])
)
environment.filters.update(when=_when, age=_age, values=values_text)
environment.globals["tone"] = lambda status: STATUS_TONE.get(str(status), "")


def render(
    request: Request,
    template: str,
    *,
    settings: Settings,
    session: ConsoleSession | None,
    status: int = 200,
    csrf: str = "",
    **context: Any,
) -> HTMLResponse:
    """Render a console page with the operator, its CSRF token and the page headers."""
    if session is not None:
        csrf = csrf_token(session.csrf_secret.encode(), session.id)
    html = environment.get_template(template).render(
        request=request,
        brand=settings,
        csrf=csrf,
        embed=False,
        operator=session,
        **context,
    )
    # The console's URLs carry no secret, and with `no-referrer` Chrome sends `Origin: null` on
    # the console's own form posts, which the origin check must refuse.
    headers = {**page_headers(settings), "Referrer-Policy": "same-origin"}
    return HTMLResponse(html, status_code=status, headers=headers)
