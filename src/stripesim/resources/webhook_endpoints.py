"""Webhook endpoints: create (the only time the signing `secret` is shown), read, update, delete."""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlparse

from stripesim import objects
from stripesim.errors import StripeError, parameter_invalid, parameter_missing
from stripesim.lists import as_bool, paginate, update_metadata
from stripesim.registry import Ctx, route

KIND = "webhook_endpoint"
# Stripe accepts exact event types or the lone "*" (no partial wildcards such as "customer.*").
_EVENT_TYPE = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)+)$")


def _url(value: Any, param: str = "url") -> str:
    parsed = urlparse(str(value or ""))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise StripeError(
            f"Invalid URL: {value}. URLs must begin with http:// or https://",
            code="url_invalid",
            param=param,
        )
    return str(value)


def _enabled_events(value: Any) -> list[str]:
    if not value or not isinstance(value, list):
        raise parameter_missing("enabled_events")
    for index, event_type in enumerate(value):
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
            raise parameter_invalid(f"enabled_events[{index}]", f"Invalid event type: {event_type}")
    return list(value)


def _view(endpoint: dict[str, Any]) -> dict[str, Any]:
    # The secret is returned only when the endpoint is created.
    return {key: value for key, value in endpoint.items() if key != "secret"}


@route("POST", "/v1/webhook_endpoints", "WebhookEndpointCreateParams")
def create_webhook_endpoint(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    url = _url(params.get("url"))
    events = _enabled_events(params.get("enabled_events"))
    endpoint = ctx.build(
        KIND,
        "we",
        created=ctx.now(),
        api_version=params.get("api_version") or None,
        application=None,
        description=params.get("description") or None,
        enabled_events=events,
        status="enabled",
        url=url,
        secret="whsec_" + secrets.token_urlsafe(24),
        # The dispatcher sends connected accounts' events only to `connect` endpoints.
        _connect=bool(as_bool(params, "connect", False)),
    )
    update_metadata(endpoint, params.get("metadata"))
    ctx.account.add(endpoint)
    return endpoint


@route("GET", "/v1/webhook_endpoints/{endpoint_id}", "WebhookEndpointRetrieveParams")
def retrieve_webhook_endpoint(ctx: Ctx, params: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    return _view(ctx.account.get(endpoint_id, KIND, label="webhook endpoint"))


@route("POST", "/v1/webhook_endpoints/{endpoint_id}", "WebhookEndpointUpdateParams")
def update_webhook_endpoint(ctx: Ctx, params: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    endpoint = ctx.account.get(endpoint_id, KIND, label="webhook endpoint")
    if "url" in params:
        endpoint["url"] = _url(params["url"])
    if "enabled_events" in params:
        endpoint["enabled_events"] = _enabled_events(params["enabled_events"])
    if "description" in params:
        endpoint["description"] = params["description"] or None
    if "disabled" in params:
        endpoint["status"] = "disabled" if as_bool(params, "disabled") else "enabled"
    update_metadata(endpoint, params.get("metadata"))
    return _view(endpoint)


@route("DELETE", "/v1/webhook_endpoints/{endpoint_id}", "WebhookEndpointDeleteParams")
def delete_webhook_endpoint(ctx: Ctx, params: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    ctx.account.get(endpoint_id, KIND, label="webhook endpoint")
    # Removed outright: deliveries still queued for it find no endpoint and stop.
    ctx.account.remove(endpoint_id)
    return objects.deleted(KIND, endpoint_id)


@route("GET", "/v1/webhook_endpoints", "WebhookEndpointListParams")
def list_webhook_endpoints(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    views = [_view(endpoint) for endpoint in ctx.account.all(KIND)]
    return paginate(ctx.account, KIND, params, "/v1/webhook_endpoints", objects=views)
