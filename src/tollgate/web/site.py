"""Mount the pages on the API's app: the packaged static files, the theme and every page router."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from tollgate.web import billing
from tollgate.web.api_docs import install_api_docs
from tollgate.web.pages import STATIC
from tollgate.web.theme import theme_css

router = APIRouter(include_in_schema=False)


@router.get("/theme.css")
async def theme(request: Request) -> Response:
    """The brand's CSS variables (TOLLGATE_BRAND_COLOR, TOLLGATE_BRAND_FONT)."""
    settings = request.app.state.container.settings
    return Response(
        theme_css(settings),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def install_pages(app: FastAPI) -> None:
    """Serve the pages, their stylesheet and scripts on `app`."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)
    app.include_router(billing.router)
    install_api_docs(app)
