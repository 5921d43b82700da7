"""Usage controls: consume (check and record in one step), reservations, corrections."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from tollgate.api import operations
from tollgate.api.deps import container, read_scope, write_actor, write_scope
from tollgate.api.schemas import (
    AlertCreate,
    AutoTopupPut,
    ConsumeCreate,
    ReservationCommit,
    ReservationCreate,
    SpendCapPut,
    UsageVoid,
    json_response,
)
from tollgate.bootstrap import Container

router = APIRouter(tags=["usage controls"])


@router.post("/v1/customers/{customer_id}/consume", dependencies=[Depends(write_scope)])
async def post_consume(
    customer_id: str, body: ConsumeCreate, app: Container = Depends(container)
) -> Response:
    """Use `quantity` of a metered feature if allowed, in one atomic step, once per `id`.

    Allowed: counted, `allowed: true`. Denied: nothing counted, `allowed: false` with the
    reason and code (200 either way: the answer is a decision). A retry with the same `id`
    returns the first answer (header `Idempotent-Replayed: true`) and counts nothing again;
    the same `id` with another customer, feature or quantity is 409.
    """
    consumed = await app.consume_writer.consume(operations.consume_call(customer_id, body))
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


@router.post("/v1/usage/void")
def post_usage_void(
    body: UsageVoid,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> Response:
    """Take back recorded usage events of the open billing period, once each, with a reason.

    Each voided event is counted down (Redis counters too) and audited (who, why). Overage
    already queued for Stripe is lowered; overage Stripe has is compensated with a meter event
    adjustment (cancel by identifier, once) and the rest sent again. Events of a closed period
    are rejected with `closed_period`: their invoice is final. Answers `{voided, duplicates,
    rejected: [{index, id, error}]}`.
    """
    report = operations.void_usage(app, body, actor=actor)
    return json_response(report.to_json())


@router.put("/v1/customers/{customer_id}/spend-cap")
def put_spend_cap(
    customer_id: str,
    body: SpendCapPut,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> Response:
    """Set the most the customer's overage may cost a period (`amount` null removes it).

    Past the cap, soft limits turn hard for the rest of the period (to the minor unit):
    usage, consume and reservations are refused with the reason. `by_customer: true` records
    the customer's own choice and needs the catalog's `customer_spend_caps: true` (else 403).
    """
    view = operations.set_spend_cap(app, customer_id, body, actor=actor)
    return json_response(view.to_json())


@router.get("/v1/customers/{customer_id}/spend-cap", dependencies=[Depends(read_scope)])
def get_spend_cap(customer_id: str, app: Container = Depends(container)) -> Response:
    """The customer's spend cap (`spend_cap` null: none), who set it and when."""
    return json_response(operations.get_spend_cap(app, customer_id).to_json())


@router.post(
    "/v1/customers/{customer_id}/alerts", dependencies=[Depends(write_scope)], status_code=201
)
def post_alert(
    customer_id: str, body: AlertCreate, app: Container = Depends(container)
) -> Response:
    """Alert when a feature's usage this period reaches `threshold` (units, percent of the
    included quantity, or money of overage): once a period, as the app webhook `usage.alert`
    and an email. Set below the usage already reached, it fires at once (`fired: true`)."""
    answer = json_response(operations.create_alert(app, customer_id, body).to_json())
    answer.status_code = 201
    return answer


@router.get("/v1/customers/{customer_id}/alerts", dependencies=[Depends(read_scope)])
def get_alerts(customer_id: str, app: Container = Depends(container)) -> Response:
    """The customer's usage alerts."""
    views = operations.list_alerts(app, customer_id)
    return json_response({"alerts": [view.to_json() for view in views]})


@router.delete(
    "/v1/customers/{customer_id}/alerts/{alert_id}",
    dependencies=[Depends(write_scope)],
    status_code=204,
)
def delete_alert(customer_id: str, alert_id: str, app: Container = Depends(container)) -> Response:
    """Remove a usage alert."""
    operations.delete_alert(app, customer_id, alert_id)
    return Response(status_code=204)


@router.put("/v1/customers/{customer_id}/auto-topup", dependencies=[Depends(write_scope)])
def put_auto_topup(
    customer_id: str, body: AutoTopupPut, app: Container = Depends(container)
) -> Response:
    """Buy `pack` with the saved card when the credit balance falls below `below`, once per
    fall (an off-session payment; a refused one emails the customer and is not retried).
    `below: null` turns it off."""
    return json_response(operations.set_auto_topup(app, customer_id, body).to_json())
