"""The time-driven engine: what falls due as a test clock (or the simulator's clock) advances.

`time_hook` is registered in `sim.time_hooks`; test clocks and `sim.advance()` call it with a
target time and it runs everything due, strictly in time order, with the clock set to each
moment so events and payments carry the time they happened at: renewals, trial ends, retries
and the end of dunning, overdue invoices, expiring incomplete subscriptions and pending updates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from stripesim.billing import schedules
from stripesim.billing.collection import (
    attempt_payment,
    finalize,
    mark_uncollectible,
    schedule_finalize,
    settle_processing,
    void_invoice,
)
from stripesim.billing.context import engine_ctx, settings
from stripesim.billing.invoices import pending_items, subscription_invoice
from stripesim.billing.items import emit_updated, items_of, set_period
from stripesim.billing.lifecycle import ENDED, cancel_subscription, end_trial
from stripesim.billing.periods import DAY, interval_seconds, next_boundary
from stripesim.billing.preview import preview_invoice
from stripesim.billing.prices import current_price, is_metered
from stripesim.registry import Ctx
from stripesim.state import Account, Simulator, snapshot

# (when, priority among things due at once, object id, the step to run)
Due = tuple[int, int, str, Callable[[Ctx, int], None]]


def install(sim: Simulator) -> None:
    """Register the billing engine's time hook on `sim` (once)."""
    if time_hook not in sim.time_hooks:
        sim.time_hooks.append(time_hook)


def time_hook(sim: Simulator, account: Account, clock_id: str | None, target: int) -> None:
    """Process everything due up to `target` for objects on `clock_id`, oldest first."""
    ctx = engine_ctx(sim, account)
    for _ in range(100_000):
        due = min(_due(ctx, clock_id), default=None, key=lambda d: (d[0], d[1], d[2]))
        if due is None or due[0] > target:
            return
        when = due[0]
        with _time_at(sim, account, clock_id, when):
            due[3](ctx, max(when, ctx.now(clock_id) if clock_id else when))
    raise RuntimeError("billing engine did not settle")


def shortest_interval_seconds(ctx: Ctx, clock_id: str) -> int | None:
    """Return the shortest billing interval among the clock's live subscriptions, in seconds."""
    lengths = [
        interval_seconds(*sub["_interval"])
        for sub in ctx.account.where("subscription", test_clock=clock_id)
        if sub["status"] not in ENDED
    ]
    return min(lengths) if lengths else None


@contextmanager
def _time_at(sim: Simulator, account: Account, clock_id: str | None, when: int) -> Iterator[None]:
    """Run with the clock (test clock, or the simulator's own) showing `when`."""
    if clock_id:
        clock = account.find(clock_id)
        if clock is not None and when > int(clock["frozen_time"]):
            clock["frozen_time"] = when
        yield
        return
    saved = sim.offset
    sim.offset = saved - max(0, sim.wall_time() - when)
    try:
        yield
    finally:
        sim.offset = saved


def _act(action: Callable[..., Any], obj: dict[str, Any]) -> Callable[[Ctx, int], None]:
    """Make `action(ctx, obj, now)` a scheduled step."""

    def run(ctx: Ctx, now: int) -> None:
        action(ctx, obj, now)

    return run


def _due(ctx: Ctx, clock_id: str | None) -> Iterator[Due]:
    """Yield everything scheduled for objects on `clock_id`."""
    for sub in ctx.account.where("subscription", test_clock=clock_id):
        if sub["status"] not in ENDED:
            yield from _due_for_subscription(ctx, sub)
    for schedule in ctx.account.where("subscription_schedule", test_clock=clock_id):
        when = schedules.due_at(schedule)
        if when is not None:
            # Before a renewal at the same moment, so the renewal bills the new phase's prices.
            yield when, 2, schedule["id"], _act(schedules.advance, schedule)
    for invoice in ctx.account.where("invoice", test_clock=clock_id):
        if invoice["status"] in ("draft", "open"):
            yield from _due_for_invoice(invoice)
    for pi in ctx.account.where("payment_intent", status="processing"):
        if pi.get("_settle_at") is not None and ctx.sim.clock_of(ctx.account, pi["customer"]) == (
            clock_id
        ):
            yield pi["_settle_at"], 3, pi["id"], _act(settle_processing, pi)


def _due_for_subscription(ctx: Ctx, sub: dict[str, Any]) -> Iterator[Due]:
    config = settings(ctx.sim)
    sid = sub["id"]
    if sub["status"] == "incomplete":
        if not _debit_processing(ctx, sub):
            yield sub["created"] + config.incomplete_expiry_seconds, 5, sid, _act(_expire, sub)
        return
    if sub["status"] == "trialing":
        if not sub["_trial_will_end_sent"]:
            when = max(
                sub["trial_end"] - config.trial_will_end_days * DAY,
                sub["trial_start"] or sub["created"],
            )
            yield when, 1, sid, _act(_trial_will_end, sub)
        if sub.get("cancel_at") is not None and sub["cancel_at"] <= sub["trial_end"]:
            yield sub["cancel_at"], 2, sid, _act(_scheduled_cancel, sub)
        else:
            yield sub["trial_end"], 3, sid, _act(end_trial, sub)
        return
    waiting = sub.get("pending_update")
    if waiting and waiting.get("expires_at"):
        yield waiting["expires_at"], 0, sid, _act(_expire_pending_update, sub)
    pause = sub.get("pause_collection")
    if pause and pause.get("resumes_at"):
        yield pause["resumes_at"], 0, sid, _act(_clear_pause, sub)
    end = sub["_period"][1]
    if sub.get("cancel_at") is not None and sub["cancel_at"] <= end:
        yield sub["cancel_at"], 2, sid, _act(_scheduled_cancel, sub)
        return
    if sub["status"] in ("active", "past_due") and sub.get("_upcoming_for") != end:
        when = end - config.upcoming_days * DAY
        if when > sub["_period"][0]:
            yield when, 1, sid, _act(_upcoming, sub)
    yield end, 3, sid, _act(_renew, sub)


def _due_for_invoice(invoice: dict[str, Any]) -> Iterator[Due]:
    iid = invoice["id"]
    if (
        invoice["status"] == "draft"
        and invoice.get("_finalize_at") is not None
        and invoice["auto_advance"]
    ):
        yield invoice["_finalize_at"], 4, iid, _act(_auto_finalize, invoice)
    elif invoice["status"] == "open":
        if (
            invoice["collection_method"] == "charge_automatically"
            and invoice.get("next_payment_attempt") is not None
            and invoice["auto_advance"]
        ):
            yield invoice["next_payment_attempt"], 4, iid, _act(attempt_payment, invoice)
        elif (
            invoice["collection_method"] == "send_invoice"
            and invoice.get("due_date") is not None
            and not invoice.get("_overdue")
        ):
            yield invoice["due_date"], 4, iid, _act(_overdue, invoice)


# -- the steps -------------------------------------------------------------------------------------


def _renew(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Start the next period at period end and invoice it (licensed ahead, usage behind)."""
    before = snapshot(sub)
    interval_name, interval_count = sub["_interval"]
    old = tuple(sub["_period"])
    end = next_boundary(sub["billing_cycle_anchor"], interval_name, interval_count, now)
    set_period(ctx, sub, old[1], end)
    if sub["status"] == "paused":
        emit_updated(ctx, sub, before, now)
        return
    invoice = subscription_invoice(
        ctx, sub, now=now, reason="subscription_cycle", licensed=(old[1], end), usage=old
    )
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    pause = sub.get("pause_collection")
    if pause:
        _hold_paused_invoice(ctx, invoice, pause["behavior"], now)
    else:
        schedule_finalize(ctx, invoice, sub, now)
    emit_updated(ctx, sub, before, now)


def _hold_paused_invoice(ctx: Ctx, invoice: dict[str, Any], behavior: str, now: int) -> None:
    """Keep a renewal invoice of paused collection as a draft, or void or write it off."""
    invoice["auto_advance"] = False
    if behavior not in ("mark_uncollectible", "void"):
        return
    finalize(ctx, invoice, now)
    if invoice["status"] == "open":
        (mark_uncollectible if behavior == "mark_uncollectible" else void_invoice)(
            ctx, invoice, now
        )


def _auto_finalize(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    invoice["_finalize_at"] = None
    invoice["automatically_finalizes_at"] = None
    finalize(ctx, invoice, now)
    if invoice["status"] == "open" and invoice["collection_method"] == "charge_automatically":
        attempt_payment(ctx, invoice, now)


def _debit_processing(ctx: Ctx, sub: dict[str, Any]) -> bool:
    """Whether the subscription's latest invoice waits on a bank debit (it does not expire)."""
    invoice = ctx.account.find(sub.get("latest_invoice"))
    return invoice is not None and any(
        (ctx.account.find(pi_id) or {}).get("status") == "processing"
        for pi_id in invoice.get("_payment_intents", [])
    )


def _expire(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Expire an `incomplete` subscription whose first invoice went unpaid."""
    before = snapshot(sub)
    invoice = ctx.account.find(sub.get("latest_invoice"))
    if invoice is not None and invoice["status"] == "open":
        void_invoice(ctx, invoice, now)
    sub["status"] = "incomplete_expired"
    sub["ended_at"] = now
    emit_updated(ctx, sub, before, now)
    ctx.emit("customer.subscription.deleted", sub, created=now)


def _expire_pending_update(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Drop a pending update whose invoice went unpaid too long (and void that invoice)."""
    before = snapshot(sub)
    invoice = ctx.account.find(sub.get("latest_invoice"))
    if invoice is not None and invoice.get("_pending_update") and invoice["status"] == "open":
        invoice.pop("_pending_update", None)
        void_invoice(ctx, invoice, now)
    sub["pending_update"] = None
    ctx.emit("customer.subscription.pending_update_expired", sub, created=now)
    emit_updated(ctx, sub, before, now)


def _upcoming(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    sub["_upcoming_for"] = sub["_period"][1]
    preview = preview_invoice(ctx, sub, {}, now)
    ctx.emit("invoice.upcoming", preview, created=now)


def _overdue(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    invoice["_overdue"] = True
    ctx.emit("invoice.overdue", invoice, created=now)
    sub = ctx.account.find(invoice.get("_subscription"))
    if sub is not None and sub["status"] == "active":
        before = snapshot(sub)
        sub["status"] = "past_due"
        emit_updated(ctx, sub, before, now)


def _clear_pause(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    before = snapshot(sub)
    sub["pause_collection"] = None
    emit_updated(ctx, sub, before, now)


def _scheduled_cancel(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Reach `cancel_at`: bill the last period's usage (and pending items), then cancel."""
    if sub["status"] != "trialing":
        metered = any(is_metered(current_price(ctx, item)) for item in items_of(ctx.account, sub))
        if metered or pending_items(ctx, sub["customer"], sub["id"]):
            invoice = subscription_invoice(
                ctx, sub, now=now, reason="subscription_cycle", usage=(sub["_period"][0], now)
            )
            sub["latest_invoice"] = invoice["id"]
            ctx.emit("invoice.created", invoice, created=now)
            schedule_finalize(ctx, invoice, sub, now)
    cancel_subscription(ctx, sub["id"], now=now)


def _trial_will_end(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    sub["_trial_will_end_sent"] = True
    ctx.emit("customer.subscription.trial_will_end", sub, created=now)
