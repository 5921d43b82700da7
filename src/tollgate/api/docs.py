"""`/docs`: Swagger UI served from the installed package, never from a CDN.

FastAPI's own page loads a floating version of Swagger UI from a CDN, with no integrity check:
whoever serves that file runs script on a page where operators paste API keys. Here the files
come from the `swagger-ui-bundle-v2` package (a pinned release, installed with Tollgate), the
page starts them from a script file of its own (no inline script), and its
Content-Security-Policy lets it load and call nothing but this server.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from tollgate.domain.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""
_START = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


@router.get("/docs")
def docs_page(request: Request) -> HTMLResponse:
    """The API's description, browsable; `Authorize` takes an API key."""
    page = _PAGE.format(title=request.app.title)
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


@router.get("/docs/start.js")
def docs_start() -> Response:
    return Response(_START, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such file")
    return FileResponse(
        str(swagger_ui_path / name),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
