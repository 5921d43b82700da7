"""Render pages: one Jinja environment over web/templates, the theme, the security headers.

Every page extends `base.html` and is rendered by `render_page`, which adds the brand (name,
logo, colour, font from settings), the CSRF token of the browser's session when there is one,
and the headers of `web.security`. The operator console uses the same function and layout.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from tollgate import __version__
from tollgate.config import Settings
from tollgate.money import format_minor
from tollgate.web.csrf import FIELD, csrf_token
from tollgate.web.security import page_headers

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def _money(amount_minor: int | Decimal | None, currency: str | None) -> str:
    if amount_minor is None or not currency:
        return "—"
    return format_minor(amount_minor, currency)


def _date(value: datetime | None, fmt: str = "%b %-d, %Y") -> str:
    return value.strftime(fmt) if value else "—"


def _number(value: int | float | Decimal | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | Decimal) and value != int(value):
        return f"{value:,.2f}"
    return f"{int(value):,}"


def static_url(path: str) -> str:
    """Return the URL of a packaged static file (versioned, so a new release is fetched)."""
    return f"/static/{path}?v={__version__}"


def page_environment(loader: BaseLoader) -> Environment:
    """Return a Jinja environment for pages over `loader`: everything escaped (strings too), an
    unknown name an error, with the pages' filters and globals (the console adds its own)."""
    made = Environment(
        loader=loader,
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    made.filters.update(money=_money, date=_date, number=_number)
    made.globals.update(version=__version__, csrf_field=FIELD, static=static_url)
    return made


environment = page_environment(FileSystemLoader(TEMPLATES))


def render_page(
    request: Request,
    template: str,
    *,
    settings: Settings,
    secret: bytes | None = None,
    session_id: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render `template` with the brand, the session's CSRF token and the page headers."""
    token = csrf_token(secret, session_id) if secret and session_id else ""
    html = environment.get_template(template).render(
        request=request,
        brand=settings,
        csrf=token,
        embed=request.query_params.get("embed") == "1",
        **context,
    )
    return HTMLResponse(
        html, status_code=status, headers={**page_headers(settings), **(headers or {})}
    )


def message_page(
    request: Request,
    *,
    settings: Settings,
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
    link: str | None = None,
) -> HTMLResponse:
    """Render a plain page that says what went wrong (a refused link, a missing page)."""
    return render_page(
        request,
        "message.html",
        settings=settings,
        status=status,
        headers=headers,
        title=title,
        message=message,
        link=link,
    )
