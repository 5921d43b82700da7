"""A batch of usage events as the app sends it: checked, with a reason for each one refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tollgate.domain.catalog import Catalog, FeatureType
from tollgate.domain.errors import InvalidRequest
from tollgate.domain.metering import MAX_BATCH
from tollgate.domain.text import NUL, text_problem

MAX_ID_LENGTH = 255
# Usage is billed in periods that a month's arithmetic must be able to reach either side of.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rejection:
    """Why one event of a batch was not counted."""

    index: int
    id: str | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "error": {"code": self.code, "message": self.message},
        }


@dataclass
class UsageReport:
    """What a batch did: counted, already counted before, and rejected with reasons."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)  # whose usage changed
    thresholds: int = 0
    # Each decided event's counter value before it and after it (by event index): what its
    # answer says when a batch counts several events in one counter (consume's group commit).
    moves: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [rejection.to_json() for rejection in self.rejected],
        }


class Event(NamedTuple):
    """One well-formed usage event of a batch; `index` is its place in the batch.

    A named tuple, not a frozen dataclass: a batch makes a thousand, and a frozen dataclass
    costs seven times as much to make (its fields set through `object.__setattr__`).
    """

    index: int  # type: ignore[assignment]  # the field, not tuple.index (never called)
    id: str
    customer: str
    meter: str
    value: int
    occurred_at: datetime
    # Units this event adds to (or, negative, takes from) what reservations hold on its counter.
    hold: int = 0


def parse_events(
    raw: Any,
    catalog: Catalog,
    now: datetime,
    holds: dict[str, int] | None = None,
    taken_back: frozenset[str] = frozenset(),
) -> tuple[list[Event], list[Rejection]]:
    """Return the well-formed events of a batch and a rejection for each malformed one.

    `holds` gives the change in held units of events (by id) a reservation sends; the events
    in `taken_back` (a void's corrections) count their value down. The API's batches have
    neither.
    """
    if not isinstance(raw, list):
        raise InvalidRequest("events must be a list of usage events", param="events")
    if not raw:
        raise InvalidRequest("events is empty; send 1 to 1,000 usage events", param="events")
    if len(raw) > MAX_BATCH:
        raise InvalidRequest(
            f"{len(raw):,} events in one call; send at most {MAX_BATCH:,}", param="events"
        )
    metered = _metered(catalog)
    events: list[Event] = []
    rejected: list[Rejection] = []
    event_id: Any
    value: Any
    for index, item in enumerate(raw):
        # Nearly every event is plain: checked in one expression, and made as a tuple in C.
        # Anything else takes the full check, which says what is wrong.
        if type(item) is dict and item.keys() <= _EVENT_FIELDS:
            event_id, customer = item.get("id"), item.get("customer")
            meter, value = item.get("meter"), item.get("value")
            plain = _plain(event_id, customer, meter, value, metered)
        else:
            plain = False
        if not plain:
            problem = _event_problem(item, metered)
            if problem is not None:
                given = item.get("id") if isinstance(item, dict) else None
                rejected.append(
                    Rejection(index, given if isinstance(given, str) else None, *problem)
                )
                continue
            event_id, customer, meter = item["id"], item["customer"], item["meter"]
            value = int(item["value"])
        raw_time = item.get("timestamp")
        occurred_at = now if raw_time is None else _timestamp(raw_time, now)
        if occurred_at is None:
            rejected.append(
                Rejection(
                    index,
                    event_id,
                    "invalid_timestamp",
                    "timestamp must be an ISO 8601 time or Unix seconds, from 1970 to 8999",
                )
            )
            continue
        if taken_back and event_id in taken_back:
            value = -value
        hold = holds.get(event_id, 0) if holds else 0
        events.append(_new(Event, (index, event_id, customer, meter, value, occurred_at, hold)))
    return events, rejected


def parse_uses(
    uses: Sequence[tuple[str, str, str, int]], catalog: Catalog, now: datetime
) -> tuple[list[Event], list[Rejection]]:
    """`parse_events` for uses given as (id, customer, meter, value), each happening `now`
    (consume's calls): no event made as a dict and read back. Those that are not plain are
    checked as `parse_events` checks them."""
    metered = _metered(catalog)
    events: list[Event] = []
    rejected: list[Rejection] = []
    for index, (event_id, customer, meter, value) in enumerate(uses):
        if _plain(event_id, customer, meter, value, metered):
            events.append(_new(Event, (index, event_id, customer, meter, value, now, 0)))
            continue
        item = {"id": event_id, "customer": customer, "meter": meter, "value": value}
        found, refused = parse_events([item], catalog, now)
        events += [event._replace(index=index) for event in found]
        rejected += [dataclasses.replace(rejection, index=index) for rejection in refused]
    return events, rejected


def _metered(catalog: Catalog) -> set[str]:
    return {
        feature_id
        for feature_id, feature in catalog.features.items()
        if feature.type is FeatureType.METERED
    }


def _plain(event_id: Any, customer: Any, meter: Any, value: Any, metered: set[str]) -> bool:
    """Return whether an event's fields are plain: text and a count no check would refuse."""
    return (
        type(event_id) is str
        and 0 < len(event_id) <= MAX_ID_LENGTH
        and event_id.isascii()
        and NUL not in event_id
        and type(customer) is str
        and customer.isascii()
        and customer != ""
        and NUL not in customer
        and type(meter) is str
        and meter in metered
        and type(value) is int
        and 0 <= value < 2**53
    )


_new = tuple.__new__  # an Event without a Python frame for its constructor
_EVENT_FIELDS = frozenset({"id", "customer", "meter", "value", "timestamp"})


def _event_problem(item: Any, metered: set[str]) -> tuple[str, str] | None:
    if not isinstance(item, dict):
        return "invalid_event", "each event must be an object {id, customer, meter, value}"
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LENGTH:
        return "invalid_id", f"id must be a string of 1 to {MAX_ID_LENGTH} characters"
    if (problem := text_problem(event_id)) is not None:
        return "invalid_id", f"id {problem}"
    customer = item.get("customer")
    if not isinstance(customer, str) or not customer or text_problem(customer) is not None:
        return "invalid_customer", "customer must be the customer's id"
    meter = item.get("meter")
    if not isinstance(meter, str) or meter not in metered:
        return "unknown_meter", (
            f"unknown meter {meter!r}; metered features are: {', '.join(sorted(metered))}"
        )
    value = item.get("value")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return "invalid_value", "value must be a whole number (Stripe meters count whole units)"
    if value < 0:
        return "invalid_value", "value must not be negative"
    if value >= 2**53:
        return "invalid_value", "value is too large"
    if item.keys() <= _EVENT_FIELDS:
        return None
    unknown = item.keys() - _EVENT_FIELDS
    return "invalid_event", f"unknown field(s): {', '.join(sorted(unknown))}"


def _timestamp(raw: Any, now: datetime) -> datetime | None:
    """The event's time in UTC, or None when it is not a time Tollgate can bill in."""
    if raw is None:
        return now
    if isinstance(raw, bool):
        return None
    moment: datetime | None = None
    if isinstance(raw, int | float):
        try:
            moment = datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
            # Near year 1 or 9999, the shift to UTC leaves the calendar (OverflowError).
            moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    if moment is None or not EARLIEST <= moment < LATEST:
        return None
    return moment
