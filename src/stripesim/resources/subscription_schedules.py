"""Subscription schedules: routes over billing.schedules (phases that change a subscription)."""

from __future__ import annotations

from typing import Any

from stripesim.billing import schedules
from stripesim.lists import as_bool, paginate
from stripesim.registry import Ctx, retrieve_route, route

KIND = schedules.KIND


def _schedule(ctx: Ctx, schedule_id: str) -> dict[str, Any]:
    return ctx.account.get(schedule_id, KIND, label="subscription schedule")


@route("POST", "/v1/subscription_schedules", "SubscriptionScheduleCreateParams")
def create_schedule(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return schedules.create_schedule(ctx, params)


retrieve_route(
    "/v1/subscription_schedules/{schedule_id}",
    KIND,
    "SubscriptionScheduleRetrieveParams",
    label="subscription schedule",
)


@route("POST", "/v1/subscription_schedules/{schedule_id}", "SubscriptionScheduleUpdateParams")
def update_schedule(ctx: Ctx, params: dict[str, Any], schedule_id: str) -> dict[str, Any]:
    return schedules.update_schedule(ctx, _schedule(ctx, schedule_id), params)


@route(
    "POST",
    "/v1/subscription_schedules/{schedule_id}/release",
    "SubscriptionScheduleReleaseParams",
)
def release_schedule(ctx: Ctx, params: dict[str, Any], schedule_id: str) -> dict[str, Any]:
    return schedules.release_schedule(ctx, _schedule(ctx, schedule_id))


@route(
    "POST",
    "/v1/subscription_schedules/{schedule_id}/cancel",
    "SubscriptionScheduleCancelParams",
)
def cancel_schedule(ctx: Ctx, params: dict[str, Any], schedule_id: str) -> dict[str, Any]:
    return schedules.cancel_schedule(
        ctx,
        _schedule(ctx, schedule_id),
        invoice_now=bool(as_bool(params, "invoice_now", False)),
        prorate=bool(as_bool(params, "prorate", False)),
    )


@route("GET", "/v1/subscription_schedules", "SubscriptionScheduleListParams")
def list_schedules(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    scheduled = as_bool(params, "scheduled")
    return paginate(
        ctx.account,
        KIND,
        params,
        "/v1/subscription_schedules",
        filters={"customer": params.get("customer")},
        where=lambda s: scheduled is None or (s["status"] == "not_started") == scheduled,
    )
