"""Events: list (newest first, type filters with `*` wildcards) and retrieve."""

from __future__ import annotations

import fnmatch
from typing import Any

from stripesim.errors import StripeError
from stripesim.lists import as_bool, paginate
from stripesim.registry import Ctx, retrieve_route, route

LIST_WINDOW_SECONDS = 30 * 86400  # Stripe lists events from the last 30 days only


def _type_matcher(params: dict[str, Any]) -> Any:
    pattern = params.get("type")
    types = params.get("types")
    if pattern and types:
        raise StripeError(
            "You may only specify one of these parameters: type, types.", param="types"
        )
    if types:
        if not isinstance(types, list) or len(types) > 20:
            raise StripeError(
                "Invalid types: must be a list of at most 20 event types", param="types"
            )
        wanted = set(types)
        return lambda event_type: event_type in wanted
    if pattern:
        # `customer.*` matches every customer event, `*.created` every creation.
        return lambda event_type: fnmatch.fnmatchcase(event_type, pattern)
    return lambda event_type: True


@route("GET", "/v1/events", "EventListParams")
def list_events(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    matches = _type_matcher(params)
    delivered = as_bool(params, "delivery_success")
    oldest = ctx.sim.wall_time() - LIST_WINDOW_SECONDS

    def wanted(event: dict[str, Any]) -> bool:
        if not matches(event["type"]) or int(event["created"]) < oldest:
            return False
        if delivered is None:
            return True
        return (event.get("pending_webhooks", 0) == 0) == delivered

    pattern = params.get("type")
    exact = pattern if pattern and "*" not in pattern else None
    return paginate(
        ctx.account, "event", params, "/v1/events", filters={"type": exact}, where=wanted
    )


retrieve_route("/v1/events/{event_id}", "event", "EventRetrieveParams")
