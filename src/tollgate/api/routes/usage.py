"""Usage: record events exactly once, and read a customer's usage this period."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from tollgate.api import operations
from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.schemas import UsageBatch, json_response
from tollgate.bootstrap import Container
from tollgate.domain.errors import InvalidRequest

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
    batch = UsageBatch.parse(body)
    report = await run_in_threadpool(operations.record_usage, app, batch)
    return json_response(report.to_json())


@router.get("/v1/customers/{customer_id}/usage", dependencies=[Depends(read_scope)])
def get_customer_usage(customer_id: str, app: Container = Depends(container)) -> Response:
    """This period per meter: used, included, percentage, estimated overage, days left."""
    return json_response(operations.get_usage(app, customer_id).to_json())
