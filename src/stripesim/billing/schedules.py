"""Subscription schedules: a subscription's future in phases, each with its prices and dates.

A schedule starts its subscription when its first phase starts and, as each phase ends, moves the
subscription to the next phase's items: a phase ending at a renewal changes the price the
renewal bills (the way to migrate a plan's price at renewal), one ending mid-period prorates as
the phase says. After the last phase the schedule completes: the subscription carries on
(`end_behavior=release`) or is canceled (`cancel`). Releasing detaches the subscription early;
canceling cancels both.
"""

from __future__ import annotations

from typing import Any

from stripesim import objects
from stripesim.billing.create import create_subscription
from stripesim.billing.lifecycle import ENDED, cancel_subscription
from stripesim.billing.periods import add_interval, interval_of
from stripesim.billing.prices import is_metered, item_price
from stripesim.billing.update import update_subscription
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_int, required_object, update_metadata
from stripesim.registry import Ctx
from stripesim.state import snapshot

KIND = "subscription_schedule"
_PHASE_KEYS = ("collection_method", "default_payment_method", "description", "trial_end")


def create_schedule(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Create a schedule from phases (starting now or later), or from a running subscription."""
    if params.get("from_subscription"):
        return _from_subscription(ctx, params)
    customer = required_object(ctx.account, params, "customer", "customer")
    now = ctx.now_for_customer(customer["id"])
    raw = params.get("start_date")
    start = now if raw in (None, "", "now") else as_int(params, "start_date")
    assert start is not None
    phases = _phases(ctx, params.get("phases"), start)
    schedule = _new_schedule(ctx, params, customer, now, phases)
    ctx.account.add(schedule)
    ctx.emit("subscription_schedule.created", schedule, created=now)
    if start <= now:
        _start(ctx, schedule, now)
    return schedule


def update_schedule(ctx: Ctx, schedule: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Change a schedule's phases (the current phase's items apply at once), end or metadata."""
    if schedule["status"] not in ("not_started", "active"):
        raise StripeError(
            f"You cannot update a subscription schedule that is {schedule['status']}.",
            param="phases",
        )
    before = snapshot(schedule)
    now = ctx.now_for_customer(schedule["customer"])
    if params.get("end_behavior"):
        schedule["end_behavior"] = params["end_behavior"]
    update_metadata(schedule, params.get("metadata"))
    if params.get("phases"):
        first = schedule["phases"][0]["start_date"] if schedule["phases"] else now
        schedule["phases"] = _phases(ctx, params["phases"], first)
        current = _phase_at(schedule, now)
        if schedule["status"] == "active" and current is not None:
            schedule["current_phase"] = _span(current)
            behavior = params.get("proration_behavior") or current["proration_behavior"]
            _apply_phase(ctx, schedule, current, behavior)
    ctx.emit_update(
        "subscription_schedule.updated", schedule, _changes(before, schedule), created=now
    )
    return schedule


def release_schedule(ctx: Ctx, schedule: dict[str, Any]) -> dict[str, Any]:
    """Detach the subscription from its schedule; it carries on as it is."""
    _must_be_running(schedule, "release")
    now = ctx.now_for_customer(schedule["customer"])
    sub = ctx.account.find(schedule.get("subscription"))
    if sub is not None:
        sub["schedule"] = None
    previous = {"status": schedule["status"], "released_at": None}
    schedule.update(
        status="released",
        released_at=now,
        released_subscription=schedule.get("subscription"),
        subscription=None,
        current_phase=None,
    )
    ctx.emit("subscription_schedule.released", schedule, previous=previous, created=now)
    return schedule


def cancel_schedule(
    ctx: Ctx, schedule: dict[str, Any], *, invoice_now: bool = False, prorate: bool = False
) -> dict[str, Any]:
    """Cancel the schedule and its subscription now."""
    _must_be_running(schedule, "cancel")
    now = ctx.now_for_customer(schedule["customer"])
    sub = ctx.account.find(schedule.get("subscription"))
    if sub is not None and sub["status"] not in ENDED:
        cancel_subscription(ctx, sub["id"], invoice_now=invoice_now, prorate=prorate, now=now)
    previous = {"status": schedule["status"], "canceled_at": None}
    schedule.update(status="canceled", canceled_at=now, current_phase=None)
    ctx.emit("subscription_schedule.canceled", schedule, previous=previous, created=now)
    return schedule


def due_at(schedule: dict[str, Any]) -> int | None:
    """Return when the schedule next acts: its start, or the end of its current phase."""
    if schedule["status"] == "not_started" and schedule["phases"]:
        return int(schedule["phases"][0]["start_date"])
    if schedule["status"] == "active" and schedule.get("current_phase"):
        return int(schedule["current_phase"]["end_date"])
    return None


def advance(ctx: Ctx, schedule: dict[str, Any], now: int) -> None:
    """Start the schedule, or move it from the phase that just ended to the next (or finish)."""
    if schedule["status"] == "not_started":
        _start(ctx, schedule, now)
        return
    sub = ctx.account.find(schedule.get("subscription"))
    following = _phase_at(schedule, now)
    if following is None or sub is None or sub["status"] in ENDED:
        _complete(ctx, schedule, sub, now)
        return
    before = snapshot(schedule)
    schedule["current_phase"] = _span(following)
    _apply_phase(ctx, schedule, following, following["proration_behavior"])
    ctx.emit_update(
        "subscription_schedule.updated", schedule, _changes(before, schedule), created=now
    )


# -- phases ---------------------------------------------------------------------------------------


def _phases(ctx: Ctx, raw: Any, start: int) -> list[dict[str, Any]]:
    """Return the schedule's phases, each starting where the one before ends."""
    if not raw or not isinstance(raw, list):
        raise parameter_missing("phases")
    phases = []
    for index, entry in enumerate(raw):
        phase = _phase(ctx, entry, f"phases[{index}]", start, last=index == len(raw) - 1)
        phases.append(phase)
        start = phase["end_date"]
    return phases


def _phase(
    ctx: Ctx, entry: dict[str, Any], param: str, start: int, *, last: bool
) -> dict[str, Any]:
    if not entry.get("items"):
        raise parameter_missing(f"{param}[items]")
    phase = objects.billing.schedule_phase()
    items = []
    prices = []
    for index, raw_item in enumerate(entry["items"]):
        price = item_price(ctx, raw_item, f"{param}[items][{index}]")
        if price is None:
            raise parameter_missing(f"{param}[items][{index}][price]")
        item = objects.billing.schedule_phase_item()
        item.update(price=price["id"], plan=price["id"])
        quantity = as_int(raw_item, "quantity", param=f"{param}[items][{index}][quantity]")
        if quantity is not None:
            item["quantity"] = quantity
        elif is_metered(price):
            item.pop("quantity")
        update_metadata(item, raw_item.get("metadata"))
        items.append(item)
        prices.append(price)
    phase.update(
        currency=prices[0]["currency"],
        items=items,
        start_date=start,
        end_date=_phase_end(entry, param, start, prices[0], last=last),
        proration_behavior=entry.get("proration_behavior") or "create_prorations",
        billing_cycle_anchor=entry.get("billing_cycle_anchor") or None,
    )
    for key in _PHASE_KEYS:
        if entry.get(key) not in (None, ""):
            phase[key] = as_int(entry, key) if key == "trial_end" else entry[key]
    update_metadata(phase, entry.get("metadata"))
    return phase


def _phase_end(
    entry: dict[str, Any], param: str, start: int, price: dict[str, Any], *, last: bool
) -> int:
    if entry.get("end_date") not in (None, ""):
        end = as_int(entry, "end_date", param=f"{param}[end_date]")
        assert end is not None
    elif isinstance(entry.get("duration"), dict):
        duration = entry["duration"]
        count = as_int(duration, "interval_count", 1, param=f"{param}[duration][interval_count]")
        end = add_interval(start, str(duration.get("interval") or "month"), int(count or 1))
    elif last:
        # A last phase without an end lasts one billing period of its price.
        end = add_interval(start, *interval_of(price))
    else:
        raise parameter_missing(f"{param}[end_date]")
    if end <= start:
        raise StripeError("A phase must end after it starts.", param=f"{param}[end_date]")
    return end


def _phase_at(schedule: dict[str, Any], when: int) -> dict[str, Any] | None:
    for phase in schedule["phases"]:
        if phase["start_date"] <= when < phase["end_date"]:
            return dict(phase)
    return None


def _span(phase: dict[str, Any]) -> dict[str, int]:
    return {"end_date": phase["end_date"], "start_date": phase["start_date"]}


def _changes(before: dict[str, Any], schedule: dict[str, Any]) -> dict[str, Any]:
    return {key: before[key] for key in schedule if before.get(key) != schedule[key]}


# -- the subscription it drives ------------------------------------------------------------------


def _new_schedule(
    ctx: Ctx,
    params: dict[str, Any],
    customer: dict[str, Any],
    now: int,
    phases: list[dict[str, Any]],
) -> dict[str, Any]:
    schedule = ctx.build(
        KIND,
        "sub_sched",
        created=now,
        customer=customer["id"],
        end_behavior=params.get("end_behavior") or "release",
        phases=phases,
        test_clock=customer.get("test_clock"),
        billing_mode={"flexible": None, "type": "classic", "updated_at": now},
    )
    update_metadata(schedule, params.get("metadata"))
    return schedule


def _start(ctx: Ctx, schedule: dict[str, Any], now: int) -> None:
    """Create the subscription of the first phase and make the schedule active."""
    phase = schedule["phases"][0]
    params: dict[str, Any] = {
        "customer": schedule["customer"],
        "items": [_item_params(item) for item in phase["items"]],
    }
    for key in _PHASE_KEYS:
        if phase.get(key) is not None:
            params[key] = phase[key]
    if phase["metadata"]:
        params["metadata"] = phase["metadata"]
    sub = create_subscription(ctx, params)
    before = snapshot(schedule)
    sub["schedule"] = schedule["id"]
    schedule.update(status="active", subscription=sub["id"], current_phase=_span(phase))
    ctx.emit_update(
        "subscription_schedule.updated", schedule, _changes(before, schedule), created=now
    )


def _item_params(item: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"price": item["price"]}
    if item.get("quantity") is not None:
        params["quantity"] = item["quantity"]
    return params


def _apply_phase(ctx: Ctx, schedule: dict[str, Any], phase: dict[str, Any], behavior: str) -> None:
    """Give the subscription the phase's items: same prices keep their item, others swap."""
    sub = ctx.account.find(schedule.get("subscription"))
    if sub is None or sub["status"] in ENDED:
        return
    wanted = {item["price"]: item for item in phase["items"]}
    changes: list[dict[str, Any]] = []
    for existing in sub["items"]["data"]:
        kept = wanted.pop(existing["price"]["id"], None)
        if kept is None:
            changes.append({"id": existing["id"], "deleted": "true"})
        elif kept.get("quantity") is not None and kept["quantity"] != existing.get("quantity"):
            changes.append({"id": existing["id"], "quantity": kept["quantity"]})
    changes += [_item_params(item) for item in wanted.values()]
    params: dict[str, Any] = {"proration_behavior": behavior}
    if changes:
        params["items"] = changes
    if phase.get("billing_cycle_anchor") == "phase_start":
        params["billing_cycle_anchor"] = {"type": "now"}
    update_subscription(ctx, sub["id"], params)


def _complete(ctx: Ctx, schedule: dict[str, Any], sub: dict[str, Any] | None, now: int) -> None:
    """Finish after the last phase: the subscription carries on, or ends (`cancel`)."""
    if sub is not None and sub["status"] not in ENDED:
        if schedule["end_behavior"] == "cancel":
            cancel_subscription(ctx, sub["id"], now=now)
        else:
            sub["schedule"] = None
    previous = {"status": schedule["status"], "completed_at": None}
    schedule.update(status="completed", completed_at=now, current_phase=None)
    ctx.emit("subscription_schedule.completed", schedule, previous=previous, created=now)


def _from_subscription(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Create an active schedule whose one phase is the subscription's current period."""
    for key in ("customer", "phases", "start_date"):
        if key in params:
            raise StripeError(f"You may not pass `{key}` with `from_subscription`.", param=key)
    sub = ctx.account.get(params["from_subscription"], "subscription", param="from_subscription")
    if sub.get("schedule"):
        raise StripeError(
            "This subscription is already attached to a schedule.", param="from_subscription"
        )
    customer = ctx.account.get(sub["customer"], "customer")
    now = ctx.now_for_customer(customer["id"])
    start, end = sub["_period"]
    phase = objects.billing.schedule_phase()
    phase.update(
        currency=sub["currency"],
        collection_method=sub["collection_method"],
        items=[_phase_item(item) for item in sub["items"]["data"]],
        start_date=start,
        end_date=end,
        proration_behavior="create_prorations",
    )
    schedule = _new_schedule(ctx, params, customer, now, [phase])
    schedule.update(status="active", subscription=sub["id"], current_phase=_span(phase))
    ctx.account.add(schedule)
    sub["schedule"] = schedule["id"]
    ctx.emit("subscription_schedule.created", schedule, created=now)
    return schedule


def _phase_item(item: dict[str, Any]) -> dict[str, Any]:
    shown = objects.billing.schedule_phase_item()
    shown.update(price=item["price"]["id"], plan=item["price"]["id"])
    if "quantity" in item:
        shown["quantity"] = item["quantity"]
    return shown


def _must_be_running(schedule: dict[str, Any], action: str) -> None:
    if schedule["status"] not in ("not_started", "active"):
        raise StripeError(
            f"You cannot {action} a subscription schedule that is {schedule['status']}."
        )
