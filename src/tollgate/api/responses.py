"""Answers shared by several routes."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def created_or_repeated(body: dict[str, Any], *, created: bool) -> JSONResponse:
    """Answer an idempotent create: 201 when this request made it, 200 when an earlier request
    with the same key did (the body is then what that one made)."""
    return JSONResponse(body, status_code=201 if created else 200)
