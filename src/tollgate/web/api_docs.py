"""/docs and /redoc without a CDN: Swagger UI's and ReDoc's files come from the
`fastapi-offline` package (a dependency), served by Tollgate under /docs-assets."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
PREFIX = "/docs-assets"
# Swagger UI starts from an inline script and ReDoc runs a worker from a blob; nothing may come
# from elsewhere (ReDoc's bundle would fetch its "by Redocly" logo from its CDN).
DOCS_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' blob:",
        "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ]
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    """ReDoc's policy: its bundle runs a worker from a blob and inline code, so it cannot be
    pinned by hashes as /docs is (with_script_hashes); still nothing from elsewhere."""
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


def install_api_docs(app: FastAPI) -> None:
    """Serve /docs (Swagger UI) and /redoc (ReDoc) from packaged files; `app` must have been
    made with docs_url=None and redoc_url=None."""
    redoc_js = (
        (ASSETS / "redoc.standalone.js")
        .read_bytes()
        .replace(b"https://cdn.redoc.ly/redoc/logo-mini.svg", f"{PREFIX}/favicon.png".encode())
    )

    @app.get(f"{PREFIX}/redoc.standalone.js", include_in_schema=False)
    async def redoc_bundle() -> Response:
        # ReDoc's bundle, with its "by Redocly" logo pointed here instead of at its CDN.
        return Response(
            redoc_js,
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return with_script_hashes(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} API",
                oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
                swagger_js_url=f"{root}{PREFIX}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{PREFIX}/swagger-ui.css",
                swagger_favicon_url=f"{root}{PREFIX}/favicon.png",
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _offline(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} API",
                redoc_js_url=f"{root}{PREFIX}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{PREFIX}/favicon.png",
                with_google_fonts=False,
            )
        )


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def with_script_hashes(page: HTMLResponse) -> HTMLResponse:
    """Give the docs page a Content-Security-Policy (issue 18): scripts from this server and
    the page's own inline start-up script by its SHA-256, nothing from anywhere else."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )
    page.headers["Cache-Control"] = "no-store"
    return page
