"""A subscription's ends and pauses: cancel (now or at a date), pause, resume, the trial's end."""

from __future__ import annotations

from typing import Any

from stripesim.billing.collection import (
    finalize_and_collect,
    open_invoices_of,
    schedule_finalize,
)
from stripesim.billing.invoices import pending_items, subscription_invoice
from stripesim.billing.items import emit_updated, items_of, set_period
from stripesim.billing.periods import add_interval, anchor_choice, next_boundary
from stripesim.billing.prices import current_price
from stripesim.billing.proration import proration_item, proration_lines
from stripesim.errors import StripeError
from stripesim.payments import resolve_payment_method
from stripesim.registry import Ctx
from stripesim.state import snapshot

ENDED = ("canceled", "incomplete_expired")


def cancel_subscription(
    ctx: Ctx,
    subscription_id: str,
    *,
    invoice_now: bool = False,
    prorate: bool = False,
    reason: str = "cancellation_requested",
    now: int | None = None,
    comment: str | None = None,
    feedback: str | None = None,
) -> dict[str, Any]:
    """Cancel now: optional proration credit and final invoice; `customer.subscription.deleted`."""
    sub = ctx.account.get(subscription_id, "subscription")
    if sub["status"] in ENDED:
        raise StripeError("This subscription has already been canceled.")
    now = now if now is not None else ctx.now_for_customer(sub["customer"])
    if not (sub.get("cancel_at") is not None and sub["cancel_at"] <= now):
        _drop_pending_prorations(ctx, sub, now)
    if prorate and sub["status"] != "trialing":
        _credit_unused_time(ctx, sub, now)
    if invoice_now:
        _final_invoice(ctx, sub, now)
    final = sub.get("latest_invoice") if invoice_now else None
    for invoice in open_invoices_of(ctx, sub):
        if invoice["id"] != final:
            # Canceling stops automatic collection of the subscription's finalized invoices.
            invoice["auto_advance"] = False
            invoice["next_payment_attempt"] = None
    sub["status"] = "canceled"
    sub["canceled_at"] = (
        sub["canceled_at"]
        if sub.get("cancel_at") and sub["cancel_at"] <= now and sub["canceled_at"]
        else now
    )
    sub["ended_at"] = now
    sub["cancellation_details"]["reason"] = reason
    if comment is not None:
        sub["cancellation_details"]["comment"] = comment
    if feedback is not None:
        sub["cancellation_details"]["feedback"] = feedback
    ctx.emit("customer.subscription.deleted", sub, created=now)
    return sub


def _drop_pending_prorations(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Drop the subscription's pending prorations, as canceling now does."""
    # Stripe keeps them only when the subscription ends at its period end, billing them then.
    for pending in pending_items(ctx, sub["customer"], sub["id"]):
        if pending.get("_subscription") == sub["id"] and pending.get("proration"):
            ctx.account.delete(pending)
            ctx.emit("invoiceitem.deleted", pending, created=now)


def _credit_unused_time(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Credit every item's unused time from `now` as pending proration items."""
    for item in items_of(ctx.account, sub):
        price = current_price(ctx, item)
        for row in proration_lines(ctx, sub, price, item.get("quantity") or 0, None, 0, now):
            proration_item(ctx, sub, now, now, row, item["id"])


def _final_invoice(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Invoice the usage so far and pending items now (nothing is stored when there is none)."""
    invoice = subscription_invoice(
        ctx, sub, now=now, reason="subscription_update", usage=(sub["_period"][0], now)
    )
    if not invoice["lines"]["data"]:
        ctx.account.remove(invoice["id"])
        return
    ctx.emit("invoice.created", invoice, created=now)
    sub["latest_invoice"] = invoice["id"]
    finalize_and_collect(ctx, invoice, now)


def pause_subscription(ctx: Ctx, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Pause now (`POST /v1/subscriptions/{id}/pause`): no invoices until it is resumed."""
    sub = ctx.account.get(subscription_id, "subscription")
    if sub["status"] not in ("active", "trialing", "past_due", "unpaid"):
        raise StripeError(f"A subscription that is {sub['status']} can't be paused.")
    now = ctx.now_for_customer(sub["customer"])
    before = snapshot(sub)
    sub["status"] = "paused"
    ctx.emit("customer.subscription.paused", sub, created=now)
    emit_updated(ctx, sub, before, now)
    return sub


def resume_subscription(ctx: Ctx, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Resume a `paused` subscription: a new period starts now and is invoiced at once."""
    sub = ctx.account.get(subscription_id, "subscription")
    if sub["status"] != "paused":
        raise StripeError("Only a paused subscription can be resumed.")
    now = ctx.now_for_customer(sub["customer"])
    before = snapshot(sub)
    interval_name, interval_count = sub["_interval"]
    partial = None
    if anchor_choice(params) == "unchanged":
        end = next_boundary(sub["billing_cycle_anchor"], interval_name, interval_count, now)
        partial = end - add_interval(end, interval_name, -interval_count)
        set_period(ctx, sub, now, end)
    else:
        sub["billing_cycle_anchor"] = now
        set_period(ctx, sub, now, add_interval(now, interval_name, interval_count))
    sub["status"] = "active"
    sub["pause_collection"] = None
    invoice = subscription_invoice(
        ctx,
        sub,
        now=now,
        reason="subscription_update",
        licensed=tuple(sub["_period"]),
        partial_of=partial if params.get("proration_behavior") != "none" else None,
    )
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("customer.subscription.resumed", sub, created=now)
    ctx.emit("invoice.created", invoice, created=now)
    finalize_and_collect(ctx, invoice, now)
    emit_updated(ctx, sub, before, now)
    return sub


def end_trial(ctx: Ctx, sub: dict[str, Any], now: int, *, ended_early: bool = False) -> None:
    """End the trial: start the first paid period (invoice), or cancel/pause without a payer."""
    before = snapshot(sub)
    behavior = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
    payer = resolve_payment_method(ctx, sub["customer"], subscription=sub)
    if (
        payer is None
        and sub["collection_method"] == "charge_automatically"
        and behavior != "create_invoice"
    ):
        _end_trial_without_payer(ctx, sub, before, now, behavior, ended_early=ended_early)
        return
    interval_name, interval_count = sub["_interval"]
    sub["trial_end"] = now
    sub["billing_cycle_anchor"] = now
    sub["status"] = "active"
    set_period(ctx, sub, now, add_interval(now, interval_name, interval_count))
    invoice = subscription_invoice(
        ctx,
        sub,
        now=now,
        reason="subscription_update" if ended_early else "subscription_cycle",
        licensed=tuple(sub["_period"]),
    )
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    if ended_early:
        finalize_and_collect(ctx, invoice, now)
    else:
        schedule_finalize(ctx, invoice, sub, now)
    emit_updated(ctx, sub, before, now)


def _end_trial_without_payer(
    ctx: Ctx,
    sub: dict[str, Any],
    before: dict[str, Any],
    now: int,
    behavior: str,
    *,
    ended_early: bool,
) -> None:
    """Cancel or pause a trial that ends with no payment method (`trial_settings`)."""
    sub["trial_end"] = now if ended_early else sub["trial_end"]
    if behavior == "cancel":
        cancel_subscription(ctx, sub["id"], reason="cancellation_requested", now=now)
        return
    sub["status"] = "paused"
    sub["pause_collection"] = None
    ctx.emit("customer.subscription.paused", sub, created=now)
    emit_updated(ctx, sub, before, now)
