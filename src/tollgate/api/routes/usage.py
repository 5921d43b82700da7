"""Usage: record events exactly once, and read a customer's usage this period."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.schemas import json_response
from tollgate.bootstrap import Container
from tollgate.domain.errors import InvalidRequest
from tollgate.services.usage import get_usage, record_usage

router = APIRouter(tags=["usage"])

_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array",
                        "maxItems": 1000,
                        "items": {
                            "type": "object",
                            "required": ["id", "customer", "meter", "value"],
                            "properties": {
                                "id": {"type": "string", "maxLength": 255},
                                "customer": {"type": "string"},
                                "meter": {"type": "string"},
                                "value": {"type": "integer", "minimum": 0},
                                "timestamp": {
                                    "oneOf": [
                                        {"type": "string", "format": "date-time"},
                                        {"type": "integer"},
                                    ]
                                },
                            },
                        },
                    },
                    "enforce_limits": {"type": "boolean"},
                },
            }
        }
    },
}


@router.post("/v1/usage", dependencies=[Depends(write_scope)], openapi_extra={"requestBody": _BODY})
async def post_usage(request: Request, app: Container = Depends(container)) -> Response:
    """Record up to 1,000 usage events, each exactly once per `id`."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict) or "events" not in body:
        raise InvalidRequest('send {"events": [{id, customer, meter, value}, ...]}', param="events")
    enforce = body.get("enforce_limits", app.settings.usage_enforce_limits)
    if not isinstance(enforce, bool):
        raise InvalidRequest("enforce_limits must be true or false", param="enforce_limits")
    report = await run_in_threadpool(
        lambda: record_usage(
            db=app.db,
            catalog=app.catalog,
            clock=app.clock,
            events=body["events"],
            enforce_limits=enforce,
            grace=app.grace,
            counters=app.usage_counters,
        )
    )
    app.entitlements.forget(report.customers)
    return json_response(report.to_json())


@router.get("/v1/customers/{customer_id}/usage", dependencies=[Depends(read_scope)])
def get_customer_usage(customer_id: str, app: Container = Depends(container)) -> Response:
    """This period per meter: used, included, percentage, estimated overage, days left."""
    usage = get_usage(
        db=app.db, catalog=app.catalog, clock=app.clock, customer_id=customer_id, grace=app.grace
    )
    return json_response(usage.to_json())
