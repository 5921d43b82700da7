"""Usage controls: consume (check and record in one step), reservations, corrections."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from tollgate.api import operations
from tollgate.api.deps import container, write_scope
from tollgate.api.schemas import ConsumeCreate, json_response
from tollgate.bootstrap import Container

router = APIRouter(tags=["usage controls"])


@router.post("/v1/customers/{customer_id}/consume", dependencies=[Depends(write_scope)])
def post_consume(
    customer_id: str, body: ConsumeCreate, app: Container = Depends(container)
) -> Response:
    """Use `quantity` of a metered feature if allowed, in one atomic step, once per `id`.

    Allowed: counted, `allowed: true`. Denied: nothing counted, `allowed: false` with the
    reason and code (200 either way: the answer is a decision). A retry with the same `id`
    returns the first answer (header `Idempotent-Replayed: true`) and counts nothing again;
    the same `id` with another customer, feature or quantity is 409.
    """
    consumed = operations.consume(app, customer_id, body)
    answer = json_response(consumed.to_json())
    if consumed.replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer
