"""Test clocks: frozen time for the customers on them; advancing runs the billing engine."""

from __future__ import annotations

from typing import Any

from stripesim import billing, objects
from stripesim.errors import StripeError
from stripesim.lists import render, required_int
from stripesim.registry import Ctx, list_route, retrieve_route, route
from stripesim.resources.customers import delete_customer

_KIND = "test_helpers.test_clock"
_NO_SUBSCRIPTION_LIMIT = 2 * 365 * billing.DAY  # Stripe: two years when no subscription


def _clock(ctx: Ctx, clock_id: str) -> dict[str, Any]:
    return ctx.account.get(clock_id, _KIND, label="test_helpers.test_clock")


@route("POST", "/v1/test_helpers/test_clocks", "test_helpers.TestClockCreateParams")
def create_test_clock(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    frozen = required_int(params, "frozen_time")
    created = ctx.now()
    clock = ctx.build(
        _KIND,
        "clock",
        created=created,
        deletes_after=created + 30 * billing.DAY,
        frozen_time=frozen,
        name=params.get("name") or None,
        status="ready",
        status_details={},
    )
    ctx.account.add(clock)
    ctx.emit("test_helpers.test_clock.created", clock, created=created)
    return clock


retrieve_route(
    "/v1/test_helpers/test_clocks/{clock_id}",
    _KIND,
    "test_helpers.TestClockRetrieveParams",
    label="test_helpers.test_clock",
)


list_route("/v1/test_helpers/test_clocks", _KIND, "test_helpers.TestClockListParams")


@route("DELETE", "/v1/test_helpers/test_clocks/{clock_id}", "test_helpers.TestClockDeleteParams")
def delete_test_clock(ctx: Ctx, params: dict[str, Any], clock_id: str) -> dict[str, Any]:
    clock = _clock(ctx, clock_id)
    # Deleting a clock deletes the customers on it (and so cancels their subscriptions).
    for customer in ctx.account.where("customer", test_clock=clock_id):
        delete_customer(ctx, {}, customer["id"])
    ctx.account.delete(clock)
    ctx.emit("test_helpers.test_clock.deleted", clock, created=ctx.now())
    return objects.deleted(_KIND, clock_id)


@route(
    "POST", "/v1/test_helpers/test_clocks/{clock_id}/advance", "test_helpers.TestClockAdvanceParams"
)
def advance_test_clock(ctx: Ctx, params: dict[str, Any], clock_id: str) -> dict[str, Any]:
    clock = _clock(ctx, clock_id)
    target = required_int(params, "frozen_time")
    current = int(clock["frozen_time"])
    if target <= current:
        raise StripeError(
            "The frozen time must be after the test clock's current frozen time.",
            param="frozen_time",
        )
    shortest = billing.shortest_interval_seconds(ctx, clock_id)
    limit = 2 * shortest if shortest else _NO_SUBSCRIPTION_LIMIT
    if target - current > limit:
        raise StripeError(
            "Cannot advance the test clock more than two intervals of the shortest subscription "
            "on it (two years when it has none).",
            param="frozen_time",
        )
    clock["status"] = "advancing"
    clock["status_details"] = {"advancing": {"target_frozen_time": target}}
    ctx.emit("test_helpers.test_clock.advancing", clock, created=current)
    answer = render(clock)
    # Stripe advances asynchronously; we run the engine now so the clock is ready when it answers,
    # but the response still shows `advancing` as Stripe's does.
    for hook in ctx.sim.time_hooks:
        hook(ctx.sim, ctx.account, clock_id, target)
    clock["frozen_time"] = target
    clock["status"] = "ready"
    clock["status_details"] = {}
    ctx.emit("test_helpers.test_clock.ready", clock, created=target)
    return answer
