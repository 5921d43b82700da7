"""Updating a subscription: item changes with prorations, new billing periods, plain fields.

A change may also wait on its payment (`payment_behavior=pending_if_incomplete`): it is billed
first and applied only once that invoice is paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripesim import objects
from stripesim.billing.collection import (
    charge_invoice,
    finalize,
    finalize_and_collect,
    mark_paid,
    read_payment_settings,
    void_invoice,
)
from stripesim.billing.context import settings
from stripesim.billing.create import default_payment_method
from stripesim.billing.discounts import new_discounts, tax_rate_objects
from stripesim.billing.invoices import (
    add_invoice_item_line,
    compute_totals,
    new_subscription_invoice,
    pending_items,
    subscription_invoice,
)
from stripesim.billing.items import apply_item_changes, emit_updated, items_of, new_item, set_period
from stripesim.billing.lifecycle import ENDED, end_trial
from stripesim.billing.periods import add_interval, anchor_choice, future_time, interval_of
from stripesim.billing.prices import current_price, is_metered, item_price, plan_of, public_price
from stripesim.billing.proration import (
    Proration,
    add_proration_line,
    proration_item,
    proration_lines,
)
from stripesim.errors import StripeError, card_error, parameter_missing, resource_missing
from stripesim.lists import as_bool, as_int, render, update_metadata
from stripesim.registry import Ctx
from stripesim.state import new_id, snapshot

_ENDED_EDITABLE = {"metadata", "cancellation_details", "expand"}


@dataclass
class _ItemChange:
    """One entry of `items[]`, checked: the item it changes (if any), its new price, quantity."""

    index: int
    raw: dict[str, Any]
    item: dict[str, Any] | None
    price: dict[str, Any] | None
    quantity: int | None

    @property
    def deleted(self) -> bool:
        return self.raw.get("deleted") in (True, "true")


# (proration, the item it concerns: a stored item, or {"id": None} for a new one)
_ItemProration = tuple[Proration, dict[str, Any]]


def update_subscription(ctx: Ctx, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Update a subscription (`POST /v1/subscriptions/{id}`): items, prorations, cancel, pause."""
    sub = ctx.account.get(subscription_id, "subscription")
    now = ctx.now_for_customer(sub["customer"])
    if sub["status"] in ENDED:
        return _update_ended(ctx, sub, params, now)
    before = snapshot(sub)
    behavior = params.get("proration_behavior") or "create_prorations"
    if behavior not in ("create_prorations", "none", "always_invoice"):
        raise StripeError("Invalid proration_behavior", param="proration_behavior")
    payment_behavior = params.get("payment_behavior") or "allow_incomplete"
    at = as_int(params, "proration_date", now)
    assert at is not None
    items = items_of(ctx.account, sub)
    parsed, new_interval = _read_item_changes(ctx, sub, params.get("items") or [], items)
    reset_anchor = anchor_choice(params) == "now" or new_interval is not None
    prorations, changes = _plan_item_changes(ctx, sub, parsed, at)
    if (
        payment_behavior in ("pending_if_incomplete", "error_if_incomplete")
        and changes
        and behavior == "always_invoice"
        and not reset_anchor
    ):
        strict = payment_behavior == "error_if_incomplete"
        return _pending_update(ctx, sub, changes, prorations, now, at, before, strict=strict)
    # A new billing period credits the unused time of every item as it was before the change.
    anchor_credits = (
        _unused_time_of_items(ctx, sub, items, at) if reset_anchor and behavior != "none" else []
    )
    _apply_changes(ctx, sub, changes, now)
    if new_interval is not None:
        sub["_interval"] = list(new_interval)
    proration_items = []
    if behavior != "none" and not reset_anchor:
        proration_items = _store_prorations(ctx, sub, prorations, at, now)
    plain_fields(ctx, sub, params, now)
    invoice = None
    if reset_anchor and sub["status"] not in ("trialing",):
        invoice = _start_new_period(ctx, sub, anchor_credits, at, now)
    elif behavior == "always_invoice" and proration_items:
        invoice = subscription_invoice(ctx, sub, now=now, reason="subscription_update")
    if invoice is not None:
        _collect_update(ctx, sub, invoice, now, strict=payment_behavior == "error_if_incomplete")
    emit_updated(ctx, sub, before, now)
    return sub


def _update_ended(
    ctx: Ctx, sub: dict[str, Any], params: dict[str, Any], now: int
) -> dict[str, Any]:
    """Update a canceled subscription: only its cancellation details and metadata."""
    if set(params) - _ENDED_EDITABLE:
        raise StripeError(
            "A canceled subscription can only update its cancellation_details and metadata.",
            param=next(iter(set(params) - _ENDED_EDITABLE)),
        )
    before = snapshot(sub)
    update_metadata(sub, params.get("metadata"))
    _update_cancellation_details(sub, params)
    emit_updated(ctx, sub, before, now)
    return sub


# -- item changes ----------------------------------------------------------------------------------


def _read_item_changes(
    ctx: Ctx, sub: dict[str, Any], raw_items: Any, items: list[dict[str, Any]]
) -> tuple[list[_ItemChange], tuple[str, int] | None]:
    """Check every `items[]` entry first, so a bad one changes nothing; also the new interval."""
    if not isinstance(raw_items, list):
        raise StripeError("Invalid array", param="items")
    parsed = []
    new_interval = None
    for index, raw in enumerate(raw_items):
        item = None
        if raw.get("id"):
            item = ctx.account.find(raw["id"])
            if (
                item is None
                or item.get("object") != "subscription_item"
                or item["id"] not in sub["_item_ids"]
            ):
                raise resource_missing("subscription_item", raw["id"], f"items[{index}][id]")
        price = item_price(ctx, raw, f"items[{index}]")
        if item is None and price is None and not raw.get("deleted"):
            raise parameter_missing(f"items[{index}][price]")
        if price is not None:
            if price["currency"] != sub["currency"]:
                raise StripeError(
                    "Currency and interval fields must match across all plans on this "
                    "subscription.",
                    param=f"items[{index}][price]",
                )
            if interval_of(price) != tuple(sub["_interval"]):
                new_interval = interval_of(price)
        quantity = as_int(raw, "quantity", param=f"items[{index}][quantity]")
        if quantity is not None and quantity < 0:
            raise StripeError(
                "Invalid integer: quantity must be non-negative", param=f"items[{index}][quantity]"
            )
        parsed.append(_ItemChange(index, raw, item, price, quantity))
    deleted = [change for change in parsed if change.deleted]
    if parsed and len(deleted) == len(parsed) and len(deleted) >= len(items):
        raise StripeError("A subscription must have at least one active plan.", param="items")
    return parsed, new_interval


def _plan_item_changes(
    ctx: Ctx, sub: dict[str, Any], parsed: list[_ItemChange], at: int
) -> tuple[list[_ItemProration], list[dict[str, Any]]]:
    """Turn checked entries into changes to apply and the prorations they cause at `at`."""
    prorations: list[_ItemProration] = []
    changes: list[dict[str, Any]] = []
    for entry in parsed:
        item = entry.item
        if item is not None and entry.deleted:
            old_price = current_price(ctx, item)
            rows = proration_lines(ctx, sub, old_price, item.get("quantity") or 0, None, 0, at)
            prorations += [(row, item) for row in rows]
            changes.append({"id": item["id"], "deleted": True})
        elif item is not None:
            prorations += _change_item(ctx, sub, entry, item, at, changes)
        else:
            assert entry.price is not None
            qty = 1 if entry.quantity is None else entry.quantity
            rows = proration_lines(ctx, sub, None, 0, entry.price, qty, at)
            prorations += [(row, {"id": None}) for row in rows]
            changes.append(
                {
                    "price": entry.price["id"],
                    "quantity": qty,
                    "metadata": entry.raw.get("metadata"),
                    "_new": True,
                }
            )
    return prorations, changes


def _change_item(
    ctx: Ctx,
    sub: dict[str, Any],
    entry: _ItemChange,
    item: dict[str, Any],
    at: int,
    changes: list[dict[str, Any]],
) -> list[_ItemProration]:
    """Plan a new price or quantity of an item (metadata and tax rates change at once)."""
    old_price = current_price(ctx, item)
    new_price = entry.price or old_price
    old_qty = item.get("quantity") or 0
    if entry.quantity is not None:
        new_qty = entry.quantity
    else:
        # A metered price has no quantity: switching to one leaves none.
        new_qty = old_qty if entry.price is None or not is_metered(new_price) else 0
    prorations: list[_ItemProration] = []
    if new_price["id"] != old_price["id"] or new_qty != old_qty:
        rows = proration_lines(ctx, sub, old_price, old_qty, new_price, new_qty, at)
        prorations = [(row, item) for row in rows]
        changes.append(
            {
                "id": item["id"],
                "price": new_price["id"],
                "quantity": None if is_metered(new_price) else new_qty,
            }
        )
    if entry.raw.get("metadata") is not None:
        update_metadata(item, entry.raw["metadata"])
    if entry.raw.get("tax_rates") is not None:
        item["tax_rates"] = tax_rate_objects(
            ctx, entry.raw["tax_rates"], f"items[{entry.index}][tax_rates]"
        )
    return prorations


def _apply_changes(ctx: Ctx, sub: dict[str, Any], changes: list[dict[str, Any]], now: int) -> None:
    for change in changes:
        if change.get("_new"):
            price = ctx.account.get(change["price"], "price")
            new_item(ctx, sub, price, change["quantity"], now, change.get("metadata"))
        else:
            apply_item_changes(ctx, sub, [change], now)


def _unused_time_of_items(
    ctx: Ctx, sub: dict[str, Any], items: list[dict[str, Any]], at: int
) -> list[tuple[Proration, str]]:
    """Return the credit for every item's unused time from `at`, with the item's id."""
    credits = []
    for item in items:
        price = current_price(ctx, item)
        for row in proration_lines(ctx, sub, price, item.get("quantity") or 0, None, 0, at):
            credits.append((row, item["id"]))
    return credits


def _store_prorations(
    ctx: Ctx, sub: dict[str, Any], prorations: list[_ItemProration], at: int, now: int
) -> list[dict[str, Any]]:
    """Store prorations as pending invoice items on the subscription."""
    stored = []
    for proration, item in prorations:
        item_id = item.get("id")
        if item_id is None:
            # A new item: the one now holding the price.
            price_id = proration[2]["id"]
            item_id = next(
                (i["id"] for i in items_of(ctx.account, sub) if i["price"]["id"] == price_id),
                None,
            )
        tax_rates = item.get("tax_rates") if item.get("object") else None
        stored.append(proration_item(ctx, sub, at, now, proration, item_id, tax_rates))
    return stored


def _start_new_period(
    ctx: Ctx,
    sub: dict[str, Any],
    credits: list[tuple[Proration, str]],
    at: int,
    now: int,
) -> dict[str, Any]:
    """Start a new period now: credit the unused time and bill the new period at once."""
    for proration, item_id in credits:
        proration_item(ctx, sub, at, now, proration, item_id)
    old_start = sub["_period"][0]
    interval_name, interval_count = sub["_interval"]
    sub["billing_cycle_anchor"] = now
    set_period(ctx, sub, now, add_interval(now, interval_name, interval_count))
    return subscription_invoice(
        ctx,
        sub,
        now=now,
        reason="subscription_update",
        licensed=tuple(sub["_period"]),
        usage=(old_start, now),
    )


def _collect_update(
    ctx: Ctx, sub: dict[str, Any], invoice: dict[str, Any], now: int, *, strict: bool
) -> None:
    """Announce, finalize and charge an update's invoice; with `strict` a failure answers 402."""
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    outcome = finalize_and_collect(ctx, invoice, now)
    if outcome is not None and outcome.status != "succeeded" and strict:
        raise outcome.error or card_error("Payment failed", code="card_declined")


# -- a change that waits for its payment -----------------------------------------------------------


def _pending_update(
    ctx: Ctx,
    sub: dict[str, Any],
    changes: list[dict[str, Any]],
    prorations: list[_ItemProration],
    now: int,
    at: int,
    before: dict[str, Any],
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """Bill an item change first and apply it only once paid (`pending_if_incomplete`)."""
    # With `strict` (`error_if_incomplete`) a failed payment voids the invoice and answers 402.
    invoice = _pending_update_invoice(ctx, sub, changes, prorations, now, at)
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    finalize(ctx, invoice, now)
    if invoice["status"] != "open" or invoice["collection_method"] != "charge_automatically":
        return sub
    outcome = charge_invoice(
        ctx, invoice, sub, off_session=False, description="Subscription update"
    )
    # The subscription keeps its state while the change waits: record the attempt only.
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    if outcome.status == "succeeded":
        mark_paid(ctx, invoice, now, outcome.payment_intent)
        return sub
    if outcome.payment_intent is not None:
        # Its page offers the payment's challenge while it waits for the card holder.
        invoice["_payment_intents"].append(outcome.payment_intent["id"])
    ctx.emit("invoice.payment_failed", invoice, created=now)
    if outcome.status == "requires_action" and not strict:
        ctx.emit("invoice.payment_action_required", invoice, created=now)
    if strict:
        _undo_pending_invoice(ctx, sub, invoice, before, now)
        raise outcome.error or card_error("Your card was declined.", code="card_declined")
    sub["pending_update"] = {
        "billing_cycle_anchor": None,
        "discount": None,
        "discounts": None,
        "metadata": None,
        "expires_at": now + settings(ctx.sim).incomplete_expiry_seconds,
        # The items the subscription will have: a removed one is simply not among them.
        "subscription_items": [
            _pending_item_view(ctx, change, sub["id"])
            for change in changes
            if not change.get("deleted")
        ],
        "trial_end": None,
        "trial_from_plan": None,
    }
    emit_updated(ctx, sub, before, now)
    return sub


def _pending_update_invoice(
    ctx: Ctx,
    sub: dict[str, Any],
    changes: list[dict[str, Any]],
    prorations: list[_ItemProration],
    now: int,
    at: int,
) -> dict[str, Any]:
    """Build the invoice a pending change waits on: pending items and its prorations."""
    period = (at, sub["_period"][1])
    invoice = new_subscription_invoice(
        ctx, sub, now=now, reason="subscription_update", period=period
    )
    for pending in pending_items(ctx, sub["customer"], sub["id"]):
        add_invoice_item_line(ctx, invoice, pending)
    for proration, item in prorations:
        add_proration_line(invoice, sub, proration, period, item)
    compute_totals(ctx, invoice)
    invoice["_pending_update"] = [
        {k: v for k, v in change.items() if not k.startswith("_")} for change in changes
    ]
    return invoice


def _undo_pending_invoice(
    ctx: Ctx, sub: dict[str, Any], invoice: dict[str, Any], before: dict[str, Any], now: int
) -> None:
    """Void the invoice of a refused change; its items go back to pending, as if never billed."""
    invoice.pop("_pending_update", None)
    void_invoice(ctx, invoice, now)
    for item in ctx.account.where("invoiceitem", invoice=invoice["id"]):
        item["invoice"] = None
    sub["latest_invoice"] = before.get("latest_invoice")


def _pending_item_view(ctx: Ctx, change: dict[str, Any], sub_id: str) -> dict[str, Any]:
    """Show a waiting item change as Stripe does in `pending_update.subscription_items`."""
    item = ctx.account.find(change.get("id")) if change.get("id") else None
    if item is not None:
        view = render(item)
    else:
        view = objects.new("subscription_item")
        view.update(id=new_id("si"), subscription=sub_id)
    if change.get("price"):
        price = ctx.account.get(change["price"], "price")
        view["price"] = public_price(price)
        view["plan"] = plan_of(price)
    if change.get("quantity") is not None:
        view["quantity"] = change["quantity"]
    elif change.get("price") and is_metered(ctx.account.get(change["price"], "price")):
        view.pop("quantity", None)
    return view


# -- plain fields ----------------------------------------------------------------------------------


def plain_fields(ctx: Ctx, sub: dict[str, Any], params: dict[str, Any], now: int) -> None:
    """Apply the fields of an update that need no invoice."""
    update_metadata(sub, params.get("metadata"))
    if "description" in params:
        sub["description"] = params["description"] or None
    if "default_payment_method" in params:
        sub["default_payment_method"] = default_payment_method(
            ctx, params["default_payment_method"]
        )
    if "default_tax_rates" in params:
        sub["default_tax_rates"] = tax_rate_objects(
            ctx, params["default_tax_rates"], "default_tax_rates"
        )
    _update_collection(sub, params)
    sub["payment_settings"] = read_payment_settings(params, sub["payment_settings"])
    if params.get("discounts") is not None:
        sub["discounts"] = (
            new_discounts(
                ctx,
                params["discounts"],
                customer_id=sub["customer"],
                now=now,
                subscription_id=sub["id"],
            )
            if params["discounts"] != ""
            else []
        )
    if params.get("application_fee_percent") is not None:
        fee = params["application_fee_percent"]
        sub["application_fee_percent"] = float(fee) if fee != "" else None
    if isinstance(params.get("automatic_tax"), dict):
        enabled = bool(as_bool(params["automatic_tax"], "enabled", False))
        sub["automatic_tax"] = {
            "enabled": enabled,
            "liability": {"type": "self"} if enabled else None,
            "disabled_reason": None,
        }
    if isinstance(params.get("trial_settings"), dict):
        behavior = (params["trial_settings"].get("end_behavior") or {}).get(
            "missing_payment_method"
        )
        if behavior:
            sub["trial_settings"] = {"end_behavior": {"missing_payment_method": behavior}}
    _update_cancellation_details(sub, params)
    _update_cancellation(sub, params, now)
    _update_pause(sub, params)
    _update_trial(ctx, sub, params, now)


def _update_collection(sub: dict[str, Any], params: dict[str, Any]) -> None:
    if "collection_method" in params:
        sub["collection_method"] = params["collection_method"]
        if sub["collection_method"] == "charge_automatically":
            sub["days_until_due"] = None
    if "days_until_due" in params:
        sub["days_until_due"] = as_int(params, "days_until_due")


def _update_cancellation_details(sub: dict[str, Any], params: dict[str, Any]) -> None:
    details = params.get("cancellation_details")
    if isinstance(details, dict):
        for key in ("comment", "feedback"):
            if key in details:
                sub["cancellation_details"][key] = details[key] or None


def _update_cancellation(sub: dict[str, Any], params: dict[str, Any], now: int) -> None:
    """Schedule or withdraw the end: `cancel_at_period_end`, or `cancel_at`."""
    if "cancel_at_period_end" in params:
        if as_bool(params, "cancel_at_period_end"):
            sub["cancel_at_period_end"] = True
            sub["cancel_at"] = sub["_period"][1]
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub["cancel_at_period_end"] = False
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
        return
    if "cancel_at" not in params:
        return
    value = params["cancel_at"]
    if value in ("", None):
        sub["cancel_at"] = None
        sub["canceled_at"] = None
        sub["cancel_at_period_end"] = False
        return
    if value in ("max_period_end", "min_period_end"):
        sub["cancel_at"] = sub["_period"][1]
    else:
        sub["cancel_at"] = as_int(params, "cancel_at")
    sub["canceled_at"] = now
    sub["cancel_at_period_end"] = sub["cancel_at"] == sub["_period"][1]
    sub["cancellation_details"]["reason"] = "cancellation_requested"


def _update_pause(sub: dict[str, Any], params: dict[str, Any]) -> None:
    if "pause_collection" not in params:
        return
    raw = params["pause_collection"]
    if raw in ("", None):
        sub["pause_collection"] = None
        return
    behavior = raw.get("behavior")
    if behavior not in ("keep_as_draft", "mark_uncollectible", "void"):
        raise StripeError("Invalid pause_collection[behavior]", param="pause_collection[behavior]")
    sub["pause_collection"] = {
        "behavior": behavior,
        "resumes_at": as_int(raw, "resumes_at", param="pause_collection[resumes_at]"),
    }


def _update_trial(ctx: Ctx, sub: dict[str, Any], params: dict[str, Any], now: int) -> None:
    """End a trial now (`trial_end=now`) or move its end."""
    if params.get("trial_end") in (None, ""):
        return
    if params["trial_end"] == "now":
        if sub["status"] == "trialing":
            end_trial(ctx, sub, now, ended_early=True)
        return
    value = future_time(params, "trial_end", now)
    if sub["status"] == "trialing":
        sub["trial_end"] = value
        sub["billing_cycle_anchor"] = value
        set_period(ctx, sub, sub["_period"][0], value)
        sub["_trial_will_end_sent"] = False
