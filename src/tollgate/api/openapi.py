"""`/openapi.json` as the API answers: each operation's real statuses, the error shape, the key.

FastAPI describes what it can see: a 422 for every operation with parameters (Tollgate never
sends one: a request its models refuse is a 400, see api/errors.py), and nothing of the errors
the services, the key check, the body limit and the rate limits answer. This module rewrites
the generated description once, by rules that follow from how the API is built:

- every operation may answer 400 (a malformed request; the outermost layer refuses a NUL in
  any path or query string);
- `/v1` routes need a key (401), may be rate limited (429), and may find a setting or a service
  they need missing (503); writes need a write key (403), may conflict with state (409) and
  call Stripe, which may decline a card (402) or fail (502);
- an operation with a path parameter names something that may not exist (404), and one with a
  body may send too much of it (413).

Every error is declared with one schema, `Error`, and the `/v1` routes with an HTTP bearer
scheme, so the docs page can send a key. A fuzz test (tests/integration/test_openapi_fuzz.py)
calls every operation with generated input and fails on any answer the description does not
declare, so this stays true as routes are added.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "description": "Stable, for code to branch on."},
                "message": {"type": "string", "description": "For people."},
                "param": {"type": "string", "description": "The field or parameter at fault."},
                "request_id": {
                    "type": "string",
                    "description": "On unexpected errors: find it in the server's log.",
                },
            },
        }
    },
}

DESCRIPTIONS = {
    400: "The request is malformed or asks for what the catalog or state does not allow.",
    401: "No API key, or one that is unknown or revoked.",
    402: "Stripe declined the payment.",
    403: "The API key's scope does not allow this route.",
    404: "No such customer, feature or object.",
    409: "The request contradicts the current state (e.g. the same id with other details).",
    413: "The request body is larger than TOLLGATE_MAX_BODY_BYTES.",
    429: "Too many requests from this key or address; retry after `Retry-After` seconds.",
    500: "The event is stored but could not be applied; Stripe delivers it again.",
    502: "Stripe refused the request.",
    503: "A service Tollgate needs (Stripe, Redis) or a setting for this route is missing.",
}
SECURITY_SCHEME = "apiKey"


def error_answer(status: int, description: str | None = None) -> dict[str, Any]:
    """A route's `responses` entry for an error it answers beyond the rules below."""
    return {
        "description": description or DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_WRITES = {"post", "put", "patch", "delete"}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /openapi.json and /docs) answer the truthful description."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = truthful(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def truthful(schema: dict[str, Any]) -> dict[str, Any]:
    """Return `schema` with each operation's real error statuses, the Error shape and the key."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`tollgate apikeys create`): read keys for GET routes "
            "and entitlement checks, write keys for everything.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in error_statuses(path, method, operation):
                responses.setdefault(str(status), error_answer(status))
            if path.startswith("/v1/"):
                operation["security"] = [{SECURITY_SCHEME: []}]
    return schema


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses an operation can answer, by the rules in this module's docstring."""
    statuses = {400}
    if path.startswith("/v1/"):
        statuses |= {401, 429, 503}
        if method in _WRITES:
            statuses |= {402, 403, 409, 502}
    if any(part.get("in") == "path" for part in operation.get("parameters", [])):
        statuses.add(404)
    if "requestBody" in operation:
        statuses.add(413)
    return sorted(statuses)
