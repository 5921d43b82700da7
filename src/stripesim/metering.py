"""Aggregate meter events as a billing meter does (sum, count, last) for summaries and invoices."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from stripesim.state import Account

METER_EVENT = "billing.meter_event"


def event_value(event: dict[str, Any], value_key: str = "value") -> Decimal:
    """The numeric value a meter event carries under the meter's value key (0 when unusable)."""
    raw = (event.get("payload") or {}).get(value_key)
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def counted_events(
    account: Account, meter_id: str, stripe_customer_id: str, start: int, end: int
) -> Iterator[dict[str, Any]]:
    """The meter's live events for the customer with `start <= timestamp < end`, oldest first."""
    for event in account.where(METER_EVENT, _customer=stripe_customer_id):
        if (
            event.get("_meter") == meter_id
            and not event.get("_cancelled")
            and not event.get("_error")
            and start <= int(event["timestamp"]) < end
        ):
            yield event


def aggregate(events: list[dict[str, Any]], formula: str, value_key: str = "value") -> Decimal:
    """Apply a meter's `default_aggregation.formula` to events (already filtered)."""
    if formula == "count":
        return Decimal(len(events))
    if formula == "last":
        if not events:
            return Decimal(0)
        # The latest by event time; among equal timestamps the one received last wins.
        last = max(enumerate(events), key=lambda pair: (int(pair[1]["timestamp"]), pair[0]))[1]
        return event_value(last, value_key)
    return sum((event_value(event, value_key) for event in events), Decimal(0))


def usage_total(
    account: Account, meter_id: str, stripe_customer_id: str, start: int, end: int
) -> Decimal:
    """The meter's aggregate of the customer's live events with `start <= timestamp < end`."""
    meter = account.find(meter_id)
    if meter is None or meter.get("object") != "billing.meter":
        return Decimal(0)
    formula = (meter.get("default_aggregation") or {}).get("formula") or "sum"
    value_key = (meter.get("value_settings") or {}).get("event_payload_key") or "value"
    events = list(counted_events(account, meter_id, stripe_customer_id, start, end))
    return aggregate(events, formula, value_key)
