"""Every error the API answers has one shape: {"error": {"type", "message", "param"?}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from tollgate.api.deps import Forbidden, Unauthenticated
from tollgate.api.schemas import invalid_input
from tollgate.config import ConfigError
from tollgate.domain.errors import CatalogError, Conflict, InvalidRequest, NotFound, TollgateError

log = logging.getLogger("tollgate.api")


class BodyTooLarge(Exception):
    """A streamed request body grew past the limit (api/middleware.py answers 413)."""


STATUS = {
    InvalidRequest: 400,
    CatalogError: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
}


def status_of(error: TollgateError) -> int:
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return int(getattr(error, "status", 400))


def error_response(
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    *,
    request_id: str | None = None,
) -> JSONResponse:
    body: dict[str, str] = {"type": type_, "message": message}
    if param:
        body["param"] = param
    if request_id:
        body["request_id"] = request_id
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(TollgateError)
    async def tollgate_error(request: Request, error: TollgateError) -> JSONResponse:
        return error_response(status_of(error), error.type, error.message, error.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        refused = invalid_input(error.errors()[0])
        return error_response(400, refused.type, refused.message, refused.param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # FastAPI answers a body it could not read with a 400; a client that went away or a
        # body over the limit is not that (see api/guard.py and api/middleware.py).
        if isinstance(error.__cause__, ClientDisconnect | BodyTooLarge):
            raise error.__cause__
        kind = "not_found" if error.status_code == 404 else "invalid_request_error"
        message = "no such route" if error.status_code == 404 else str(error.detail)
        return error_response(error.status_code, kind, message)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, error: ConfigError) -> JSONResponse:
        return error_response(503, "configuration_error", str(error))
