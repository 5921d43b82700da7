"""Billing meters, meter events (with `identifier` dedupe), adjustments and event summaries.

Stripe validates a v1 meter event's shape when it arrives but processes it asynchronously: an
event whose meter is missing or inactive, whose customer is unknown, or whose value is not a
whole number is accepted (200) and later reported in a `v1.billing.meter.error_report_triggered`
thin event. The simulator accepts such an event too, records the Stripe error code in the private
`_error` key and never counts it. Timestamps outside the accepted window and duplicate
identifiers are rejected at once with a 400, as Stripe does.
"""

from __future__ import annotations

import hashlib
import weakref
from decimal import Decimal
from typing import Any

from stripesim import objects
from stripesim.errors import StripeError, parameter_invalid, parameter_missing
from stripesim.lists import as_int, paginate, reference
from stripesim.metering import METER_EVENT, aggregate, counted_events
from stripesim.registry import Ctx, retrieve_route, route
from stripesim.state import Account, new_id

METER = "billing.meter"
DEDUPE_SECONDS = 24 * 3600  # identifiers are unique within a rolling 24 hours
MAX_PAST_SECONDS = 35 * 86400  # "within the past 35 calendar days"
MAX_FUTURE_SECONDS = 5 * 60  # "up to 5 minutes in the future"
CANCEL_WINDOW_SECONDS = 24 * 3600  # an event can be cancelled within 24 hours of receipt

# identifier -> meter event id, per account space; rebuilt from the objects when missing
# (after `Simulator.load`), so it needs no place in the saved state.
_IDENTIFIERS: weakref.WeakKeyDictionary[Account, dict[str, str]] = weakref.WeakKeyDictionary()


def _identifiers(account: Account) -> dict[str, str]:
    index = _IDENTIFIERS.get(account)
    if index is None:
        index = {event["identifier"]: event["id"] for event in account.all(METER_EVENT)}
        _IDENTIFIERS[account] = index
    return index


def _active_meter_for(account: Account, event_name: str) -> dict[str, Any] | None:
    for meter in account.all(METER):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


def _any_meter_for(account: Account, event_name: str) -> dict[str, Any] | None:
    found = None
    for meter in account.all(METER):
        if meter["event_name"] == event_name:
            found = meter
    return found


def _number(value: Decimal) -> int | float:
    """A usage aggregate as Stripe's JSON shows it (a float field; whole values print whole)."""
    return int(value) if value == value.to_integral_value() else float(value)


# -- meters -------------------------------------------------------------------------------------


@route("POST", "/v1/billing/meters", "billing.MeterCreateParams")
def create_meter(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    event_name = params.get("event_name")
    if not event_name:
        raise parameter_missing("event_name")
    if len(event_name) > 100:
        raise parameter_invalid("event_name", "Invalid event_name: must be at most 100 characters")
    if _active_meter_for(ctx.account, event_name) is not None:
        raise StripeError(
            f"An active meter with event_name `{event_name}` already exists.", param="event_name"
        )
    formula = (params.get("default_aggregation") or {}).get("formula")
    if formula not in ("sum", "count", "last"):
        raise parameter_invalid(
            "default_aggregation[formula]",
            "Invalid default_aggregation[formula]: must be one of count, last, sum",
        )
    mapping = params.get("customer_mapping") or {}
    if mapping and mapping.get("type") != "by_id":
        raise parameter_invalid(
            "customer_mapping[type]", "Invalid customer_mapping[type]: must be by_id"
        )
    window = params.get("event_time_window") or None
    if window not in (None, "day", "hour"):
        raise parameter_invalid(
            "event_time_window", "Invalid event_time_window: must be one of day, hour"
        )
    now = ctx.now()
    meter = ctx.build(
        METER,
        "mtr_test",
        created=now,
        updated=now,
        customer_mapping={
            "event_payload_key": mapping.get("event_payload_key") or "stripe_customer_id",
            "type": "by_id",
        },
        default_aggregation={"formula": formula},
        display_name=params["display_name"],
        event_name=event_name,
        event_time_window=window,
        status="active",
        status_transitions={"deactivated_at": None},
        value_settings={
            "event_payload_key": (params.get("value_settings") or {}).get("event_payload_key")
            or "value"
        },
    )
    ctx.account.add(meter)
    ctx.emit("billing.meter.created", meter, created=now)
    return meter


retrieve_route(
    "/v1/billing/meters/{meter_id}", METER, "billing.MeterRetrieveParams", label="billing meter"
)


@route("POST", "/v1/billing/meters/{meter_id}", "billing.MeterUpdateParams")
def update_meter(ctx: Ctx, params: dict[str, Any], meter_id: str) -> dict[str, Any]:
    meter = ctx.account.get(meter_id, METER, label="billing meter")
    name = params.get("display_name")
    if name and name != meter["display_name"]:
        previous = {"display_name": meter["display_name"], "updated": meter["updated"]}
        meter["display_name"] = name
        meter["updated"] = ctx.now()
        ctx.emit("billing.meter.updated", meter, previous=previous)
    return meter


def _set_status(ctx: Ctx, meter: dict[str, Any], status: str, event_type: str) -> None:
    """Move a meter to `active` or `inactive` and announce it."""
    now = ctx.now()
    previous = {
        "status": meter["status"],
        "status_transitions": dict(meter["status_transitions"]),
        "updated": meter["updated"],
    }
    deactivated_at = now if status == "inactive" else None
    meter.update(status=status, updated=now, status_transitions={"deactivated_at": deactivated_at})
    ctx.emit(event_type, meter, previous=previous)


@route("POST", "/v1/billing/meters/{meter_id}/deactivate", "billing.MeterDeactivateParams")
def deactivate_meter(ctx: Ctx, params: dict[str, Any], meter_id: str) -> dict[str, Any]:
    meter = ctx.account.get(meter_id, METER, label="billing meter")
    if meter["status"] == "active":
        _set_status(ctx, meter, "inactive", "billing.meter.deactivated")
    return meter


@route("POST", "/v1/billing/meters/{meter_id}/reactivate", "billing.MeterReactivateParams")
def reactivate_meter(ctx: Ctx, params: dict[str, Any], meter_id: str) -> dict[str, Any]:
    meter = ctx.account.get(meter_id, METER, label="billing meter")
    if meter["status"] == "inactive":
        clash = _active_meter_for(ctx.account, meter["event_name"])
        if clash is not None:
            raise StripeError(
                f"An active meter ({clash['id']}) already uses event_name `{meter['event_name']}`.",
            )
        _set_status(ctx, meter, "active", "billing.meter.reactivated")
    return meter


@route("GET", "/v1/billing/meters", "billing.MeterListParams")
def list_meters(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    status = params.get("status")
    if status not in (None, "active", "inactive"):
        raise parameter_invalid("status", "Invalid status: must be one of active, inactive")
    return paginate(
        ctx.account,
        METER,
        params,
        "/v1/billing/meters",
        filters={"status": status},
    )


# -- meter events -------------------------------------------------------------------------------


def _public_event(event: dict[str, Any]) -> dict[str, Any]:
    # A meter event has no `id` at Stripe; the simulator keeps one only to store it.
    return {key: value for key, value in event.items() if key != "id"}


def _processing_error(
    ctx: Ctx, meter: dict[str, Any] | None, payload: dict[str, str]
) -> tuple[str | None, str | None]:
    """(customer id, Stripe's async error code or None) for an incoming event."""
    if meter is None:
        return None, "no_meter"
    customer_id = payload.get(meter["customer_mapping"]["event_payload_key"]) or None
    if meter["status"] != "active":
        return customer_id, "archived_meter"
    if customer_id is None:
        return None, "meter_event_no_customer_defined"
    customer = ctx.account.find(customer_id)
    if customer is None or customer.get("object") != "customer" or customer.get("_deleted"):
        return customer_id, "meter_event_customer_not_found"
    if meter["default_aggregation"]["formula"] != "count":
        raw = payload.get(meter["value_settings"]["event_payload_key"])
        try:
            value = Decimal(str(raw))
        except ArithmeticError:
            return customer_id, "meter_event_invalid_value"
        # Stripe accepts whole numbers only (negative ones correct earlier over-reporting).
        if raw is None or not value.is_finite() or value != value.to_integral_value():
            return customer_id, "meter_event_invalid_value"
    return customer_id, None


@route("POST", "/v1/billing/meter_events", "billing.MeterEventCreateParams")
def create_meter_event(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    event_name = params.get("event_name")
    if not event_name:
        raise parameter_missing("event_name")
    payload = params.get("payload")
    if not isinstance(payload, dict) or not payload:
        raise parameter_missing("payload")
    payload = {str(key): str(value) for key, value in payload.items()}
    meter = _active_meter_for(ctx.account, event_name) or _any_meter_for(ctx.account, event_name)
    customer_id, error = _processing_error(ctx, meter, payload)
    now = ctx.now_for_customer(customer_id) if customer_id else ctx.now()
    timestamp = as_int(params, "timestamp", now)
    assert timestamp is not None
    if timestamp < now - MAX_PAST_SECONDS:
        raise StripeError(
            "Timestamp must be within the past 35 calendar days.",
            code="timestamp_too_far_in_past",
            param="timestamp",
        )
    if timestamp > now + MAX_FUTURE_SECONDS:
        raise StripeError(
            "Timestamp must not be more than 5 minutes in the future.",
            code="timestamp_in_future",
            param="timestamp",
        )
    identifier = params.get("identifier") or None
    if identifier is not None and len(identifier) > 100:
        raise parameter_invalid("identifier", "Invalid identifier: must be at most 100 characters")
    index = _identifiers(ctx.account)
    if identifier is not None and identifier in index:
        earlier = ctx.account.find(index[identifier])
        if earlier is not None and now - int(earlier["created"]) < DEDUPE_SECONDS:
            raise StripeError(
                f"An event already exists with identifier {identifier}.", param="identifier"
            )
    event = ctx.build(
        METER_EVENT,
        "mevt",
        created=now,
        event_name=event_name,
        identifier=identifier or new_id("mev", 20),
        payload=payload,
        timestamp=timestamp,
        _meter=meter["id"] if meter else None,
        _customer=customer_id,
        _cancelled=False,
        _error=error,
    )
    ctx.account.add(event)
    index[event["identifier"]] = event["id"]
    return _public_event(event)


@route("POST", "/v1/billing/meter_event_adjustments", "billing.MeterEventAdjustmentCreateParams")
def create_meter_event_adjustment(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("type") != "cancel":
        raise parameter_invalid("type", "Invalid type: must be cancel")
    identifier = (params.get("cancel") or {}).get("identifier")
    if not identifier:
        raise parameter_missing("cancel[identifier]")
    event_id = _identifiers(ctx.account).get(identifier)
    event = ctx.account.find(event_id) if event_id else None
    if event is None or event["event_name"] != params["event_name"]:
        raise StripeError(
            f"No meter event with identifier `{identifier}` and event_name "
            f"`{params['event_name']}` was found.",
            code="resource_missing",
            param="cancel[identifier]",
        )
    now = ctx.now_for_customer(event["_customer"]) if event.get("_customer") else ctx.now()
    if not event["_cancelled"] and now - int(event["created"]) > CANCEL_WINDOW_SECONDS:
        raise StripeError(
            "Meter events can only be cancelled within 24 hours of being received.",
            param="cancel[identifier]",
        )
    event["_cancelled"] = True
    adjustment = ctx.build(
        "billing.meter_event_adjustment",
        "mea",
        cancel={"identifier": identifier},
        event_name=event["event_name"],
        status="complete",
    )
    adjustment.pop("id")  # Stripe's adjustment object has no id
    return adjustment


# -- event summaries ----------------------------------------------------------------------------


def _summary_id(meter_id: str, customer_id: str, start: int, end: int) -> str:
    # Deterministic, so `starting_after` cursors survive between requests.
    digest = hashlib.sha256(f"{meter_id}:{customer_id}:{start}:{end}".encode()).hexdigest()
    return f"mtrusg_test_{digest[:48]}"


@route(
    "GET", "/v1/billing/meters/{meter_id}/event_summaries", "billing.MeterEventSummaryListParams"
)
def list_event_summaries(ctx: Ctx, params: dict[str, Any], meter_id: str) -> dict[str, Any]:
    meter = ctx.account.get(meter_id, METER, label="billing meter")
    customer_id = params["customer"]
    reference(ctx.account, customer_id, "customer", "customer", "customer")
    start = as_int(params, "start_time")
    end = as_int(params, "end_time")
    assert start is not None and end is not None
    window = params.get("value_grouping_window") or None
    step = {None: 60, "hour": 3600, "day": 86400}.get(window)
    if step is None:
        raise parameter_invalid(
            "value_grouping_window", "Invalid value_grouping_window: must be one of day, hour"
        )
    unit = {60: "minute", 3600: "hour", 86400: "day"}[step]
    for name, value in (("start_time", start), ("end_time", end)):
        if value % step:
            raise StripeError(f"{name} must be aligned with {unit} boundaries.", param=name)
    if end <= start:
        raise StripeError("end_time must be after start_time.", param="end_time")
    formula = meter["default_aggregation"]["formula"]
    value_key = meter["value_settings"]["event_payload_key"]
    events = list(counted_events(ctx.account, meter_id, customer_id, start, end))
    if window is None:
        bounds = [(start, end)]
    else:
        # One summary per window that saw events; the list shows them newest first.
        lows = sorted({start + (int(e["timestamp"]) - start) // step * step for e in events})
        bounds = [(low, low + step) for low in lows]
    summaries = []  # oldest first: `paginate` lists newest first
    for low, high in bounds:
        in_window = [e for e in events if low <= int(e["timestamp"]) < high]
        summary = objects.new("billing.meter_event_summary")
        summary.update(
            id=_summary_id(meter_id, customer_id, low, high),
            aggregated_value=_number(aggregate(in_window, formula, value_key)),
            end_time=high,
            meter=meter_id,
            start_time=low,
        )
        summaries.append(summary)
    return paginate(
        ctx.account,
        "billing.meter_event_summary",
        params,
        f"/v1/billing/meters/{meter_id}/event_summaries",
        objects=summaries,
    )
