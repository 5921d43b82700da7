"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from tollgate.api.deps import Unauthenticated, container
from tollgate.api.openapi import error_answer
from tollgate.bootstrap import Container
from tollgate.db.migrate import current_revision, head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the same body, with the check that failed."}},
)
def readyz(app: Container = Depends(container)) -> JSONResponse:
    """The database answers and its schema is at the newest migration."""
    checks: dict[str, str] = {}
    try:
        with app.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = current_revision(app.db.engine), head_revision(app.db.url)
        checks["migrations"] = "ok" if current == head else f"at {current}, newest is {head}"
    except Exception as error:  # any failure means "not ready", with the reason
        checks.setdefault("database", f"unreachable: {type(error).__name__}")
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: error_answer(401, "TOLLGATE_METRICS_TOKEN is set and the bearer token is not it."),
    },
)
def metrics(request: Request, app: Container = Depends(container)) -> Response:
    """Prometheus metrics of this process (with TOLLGATE_METRICS_TOKEN set, behind that token)."""
    token = app.settings.metrics_token
    if token is not None and token.get_secret_value():
        kind, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if kind.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected):
            raise Unauthenticated("send TOLLGATE_METRICS_TOKEN as 'Authorization: Bearer <token>'")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
