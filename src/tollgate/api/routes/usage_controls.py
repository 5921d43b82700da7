"""Usage controls: consume (check and record in one step), reservations, corrections."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from tollgate.api import operations
from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.schemas import (
    ConsumeCreate,
    ReservationCommit,
    ReservationCreate,
    json_response,
)
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


@router.post(
    "/v1/customers/{customer_id}/reservations",
    dependencies=[Depends(write_scope)],
    status_code=201,
)
def post_reservation(
    customer_id: str, body: ReservationCreate, app: Container = Depends(container)
) -> Response:
    """Hold `quantity` units against the limit for `ttl_seconds`, if they fit; once per `id`.

    Held units count in every decision (consume, usage, checks) until committed, released or
    expired. Denied: `status: "denied"`, `allowed: false` with the reason; the reservation is
    stored either way, and a retry with the id answers it as stored (its status).
    """
    view = operations.create_reservation(app, customer_id, body)
    return json_response(view.to_json())


@router.get(
    "/v1/customers/{customer_id}/reservations/{reservation_id}", dependencies=[Depends(read_scope)]
)
def get_reservation(
    customer_id: str,
    reservation_id: str,
    app: Container = Depends(container),
) -> Response:
    """The reservation: held, committed, released, expired or denied."""
    return json_response(operations.get_reservation(app, customer_id, reservation_id).to_json())


@router.post(
    "/v1/customers/{customer_id}/reservations/{reservation_id}/commit",
    dependencies=[Depends(write_scope)],
)
def post_reservation_commit(
    customer_id: str,
    reservation_id: str,
    body: ReservationCommit,
    app: Container = Depends(container),
) -> Response:
    """Record `quantity` used and release the rest of the hold (more than held where it fits).

    Past a hard limit: `allowed: false`, and the reservation stays held. Repeating a commit
    answers it again; committing a released or expired reservation is 409.
    """
    view = operations.commit_reservation(app, customer_id, reservation_id, body)
    return json_response(view.to_json())


@router.post(
    "/v1/customers/{customer_id}/reservations/{reservation_id}/release",
    dependencies=[Depends(write_scope)],
)
def post_reservation_release(
    customer_id: str, reservation_id: str, app: Container = Depends(container)
) -> Response:
    """Give back the hold, recording nothing (a repeat, or an expired one, answers as is)."""
    view = operations.release_reservation(app, customer_id, reservation_id)
    return json_response(view.to_json())
