"""Collecting invoices: finalize, charge, retry on a schedule, pay, void, mark uncollectible."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripesim import cash_balances, debits
from stripesim.balances import adjust_customer_balance
from stripesim.billing.amounts import round_minor
from stripesim.billing.context import settings
from stripesim.billing.discounts import active_discounts
from stripesim.billing.invoices import compute_totals, line_invoice_item
from stripesim.billing.items import apply_item_changes, emit_updated
from stripesim.billing.periods import DAY
from stripesim.errors import StripeError
from stripesim.payment_settings import method_types_of, read_method_types
from stripesim.payments import (
    PaymentOutcome,
    collect_payment,
    resolve_payment_method,
    settle_debit,
    transfer_succeeded,
)
from stripesim.registry import Ctx
from stripesim.state import snapshot

_ATTEMPT_DESCRIPTIONS = {
    "subscription_create": "Subscription creation",
    "subscription_cycle": "Subscription cycle",
    "subscription_update": "Subscription update",
}


_VERIFICATION_METHODS = ("automatic", "instant", "microdeposits")


def read_payment_settings(params: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Apply a request's `payment_settings` (types and options) onto `current`'s."""
    given = params.get("payment_settings")
    if not isinstance(given, dict):
        return current
    settings_ = dict(current)
    if "payment_method_types" in given:
        settings_["payment_method_types"] = read_method_types(
            given["payment_method_types"], "payment_settings[payment_method_types]"
        )
    options = given.get("payment_method_options")
    if isinstance(options, dict):
        kept = dict(settings_.get("payment_method_options") or {})
        bank = options.get("us_bank_account")
        if isinstance(bank, dict):
            method = bank.get("verification_method") or "automatic"
            if method not in _VERIFICATION_METHODS:
                raise StripeError(
                    "Invalid payment_settings[payment_method_options][us_bank_account]"
                    f"[verification_method]: must be one of {', '.join(_VERIFICATION_METHODS)}",
                    param="payment_settings[payment_method_options][us_bank_account]"
                    "[verification_method]",
                )
            kept["us_bank_account"] = {
                "financial_connections": {"permissions": ["payment_method"], "prefetch": []},
                "verification_method": method,
            }
        balance = options.get(cash_balances.METHOD)
        if isinstance(balance, dict):
            cash_balances.check_bank_transfer_params(
                balance, "payment_settings[payment_method_options][customer_balance][bank_transfer]"
            )
            kept[cash_balances.METHOD] = {
                "bank_transfer": {"eu_bank_transfer": None, "type": cash_balances.TRANSFER_TYPE},
                "funding_type": "bank_transfer",
            }
        settings_["payment_method_options"] = kept or None
    return settings_


def pays_by_transfer(invoice: dict[str, Any]) -> bool:
    """Whether the invoice is paid by bank transfer (its only payment method type)."""
    types = (invoice.get("payment_settings") or {}).get("payment_method_types") or []
    return list(types) == [cash_balances.METHOD]


def _number(ctx: Ctx, invoice: dict[str, Any]) -> str:
    """Take the customer's next invoice number (`PREFIX-0001`)."""
    customer = ctx.account.find(invoice["customer"]) or {}
    sequence = int(customer.get("next_invoice_sequence") or 1)
    customer["next_invoice_sequence"] = sequence + 1
    prefix = customer.get("invoice_prefix") or "SIM"
    return f"{prefix}-{sequence:04d}"


def finalize(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    """Move a draft to open (number, URLs, balance applied); a zero amount due is paid at once."""
    if invoice["status"] != "draft":
        raise StripeError(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_not_editable",
        )
    compute_totals(ctx, invoice)
    _apply_customer_balance(ctx, invoice, now)
    invoice["status"] = "open"
    invoice["number"] = _number(ctx, invoice)
    invoice["effective_at"] = now
    invoice["status_transitions"]["finalized_at"] = now
    invoice["hosted_invoice_url"] = f"{ctx.base_url}/i/{invoice['id']}"
    invoice["invoice_pdf"] = f"{ctx.base_url}/i/{invoice['id']}/pdf"
    invoice["_finalize_at"] = None
    invoice["automatically_finalizes_at"] = None
    if invoice["collection_method"] == "send_invoice":
        days = invoice.pop("_days_until_due", None)
        if invoice.get("due_date") is None:
            invoice["due_date"] = now + DAY * int(days if days is not None else 30)
    _spend_once_coupons(ctx, invoice, now)
    for line in invoice["lines"]["data"]:
        item = ctx.account.find(line_invoice_item(line))
        if item is not None:
            item["invoice"] = invoice["id"]
    ctx.emit("invoice.finalized", invoice, created=now)
    if invoice["collection_method"] == "send_invoice" and invoice["amount_due"] > 0:
        ctx.emit("invoice.sent", invoice, created=now)
    if invoice["amount_due"] == 0:
        mark_paid(ctx, invoice, now, None)
    elif invoice["collection_method"] == "send_invoice" and pays_by_transfer(invoice):
        # Stripe opens the bank transfer's PaymentIntent at once: its instructions, and any
        # cash balance the customer already has applied.
        outcome = charge_invoice(ctx, invoice, ctx.account.find(invoice.get("_subscription")))
        invoice["_payment_intents"].append(outcome.payment_intent["id"])
        transfer_progressed(ctx, invoice, outcome.payment_intent, now)


def _apply_customer_balance(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    """Take the customer's credit (negative balance) or debt off or onto the amount due."""
    customer = ctx.account.find(invoice["customer"]) or {}
    balance = int(customer.get("balance") or 0)
    invoice["starting_balance"] = balance
    applied = invoice["total"] + balance
    invoice["amount_due"] = max(applied, 0)
    invoice["ending_balance"] = min(applied, 0)
    invoice["amount_remaining"] = invoice["amount_due"] - invoice["amount_paid"]
    if balance != invoice["ending_balance"] and customer:
        adjust_customer_balance(
            ctx,
            customer,
            invoice["ending_balance"] - balance,
            invoice["currency"],
            kind="applied_to_invoice",
            now=now,
            invoice=invoice["id"],
        )


def _spend_once_coupons(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    """Once-only coupons are spent by the first invoice they discount."""
    for discount, coupon in active_discounts(ctx, invoice.get("discounts") or [], now):
        if coupon["duration"] == "once":
            discount["_consumed"] = True
            discount["end"] = now
            sub = ctx.account.find(discount.get("subscription"))
            if sub is not None and discount["id"] in sub.get("discounts", []):
                sub["discounts"].remove(discount["id"])


def mark_paid(
    ctx: Ctx,
    invoice: dict[str, Any],
    now: int,
    payment_intent: dict[str, Any] | None,
    *,
    out_of_band: bool = False,
) -> None:
    """Move an open invoice to paid; the subscription (if it waited on it) becomes active."""
    _stop_collecting(invoice, "paid", "paid_at", now)
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    if invoice["amount_due"] > 0 and not out_of_band:
        invoice["attempted"] = True
    if payment_intent is not None:
        invoice["_payment_intents"].append(payment_intent["id"])
    ctx.emit("invoice.paid", invoice, created=now)
    if not out_of_band:
        ctx.emit("invoice.payment_succeeded", invoice, created=now)
    sub = ctx.account.find(invoice.get("_subscription"))
    if sub is not None:
        _settle_subscription(ctx, sub, now)
    pending = invoice.pop("_pending_update", None)
    if sub is not None and pending:
        _apply_pending_update(ctx, sub, pending, now)


def _settle_subscription(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Paying the last open invoice settles the subscription; an older one alone does not."""
    if sub["status"] in ("incomplete", "past_due", "unpaid") and (
        sub["status"] == "incomplete" or not open_invoices_of(ctx, sub)
    ):
        before = snapshot(sub)
        sub["status"] = "active"
        emit_updated(ctx, sub, before, now)


def _apply_pending_update(
    ctx: Ctx, sub: dict[str, Any], changes: list[dict[str, Any]], now: int
) -> None:
    """Apply the item changes that waited for this invoice to be paid."""
    before = snapshot(sub)
    waited = sub.get("pending_update") is not None
    apply_item_changes(ctx, sub, changes, now)
    sub["pending_update"] = None
    if waited:
        ctx.emit("customer.subscription.pending_update_applied", sub, created=now)
    emit_updated(ctx, sub, before, now)


def application_fee(sub: dict[str, Any] | None, amount: int) -> int | None:
    """Return the platform's cut of a connected account's invoice (`application_fee_percent`)."""
    if sub is None or sub.get("application_fee_percent") is None:
        return None
    return round_minor(Decimal(amount) * Decimal(str(sub["application_fee_percent"])) / 100)


def open_invoices_of(ctx: Ctx, sub: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the subscription's open invoices."""
    return ctx.account.where("invoice", _subscription=sub["id"], status="open")


def charge_invoice(
    ctx: Ctx,
    invoice: dict[str, Any],
    sub: dict[str, Any] | None,
    *,
    payment_method: str | None = None,
    off_session: bool = True,
    description: str | None = None,
) -> PaymentOutcome:
    """Ask the payer for the invoice's amount remaining through a new PaymentIntent."""
    if pays_by_transfer(invoice) and not payment_method:
        pm: str | None = cash_balances.payment_method_for(
            ctx, invoice["customer"], ctx.now_for_customer(invoice["customer"])
        )["id"]
    else:
        pm = resolve_payment_method(
            ctx,
            invoice["customer"],
            explicit=payment_method or invoice.get("default_payment_method"),
            subscription=sub,
        )
    return collect_payment(
        ctx,
        customer_id=invoice["customer"],
        amount=invoice["amount_remaining"],
        currency=invoice["currency"],
        payment_method_id=pm,
        description=description
        or _ATTEMPT_DESCRIPTIONS.get(invoice["billing_reason"], f"Invoice {invoice['number']}"),
        invoice_id=invoice["id"],
        off_session=off_session,
        application_fee_amount=application_fee(sub, invoice["amount_due"]),
        verification=debits.verification_of(
            (invoice.get("payment_settings") or {}).get("payment_method_options")
        ),
        payment_method_types=method_types_of(invoice, sub),
    )


def attempt_payment(
    ctx: Ctx,
    invoice: dict[str, Any],
    now: int,
    *,
    payment_method: str | None = None,
    off_session: bool = True,
    outcome: Any = None,
    automatic: bool = True,
) -> Any:
    """Charge an open invoice once; record the attempt and its events. Returns the outcome."""
    sub = ctx.account.find(invoice.get("_subscription"))
    if outcome is None:
        outcome = charge_invoice(
            ctx, invoice, sub, payment_method=payment_method, off_session=off_session
        )
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    if (
        outcome.payment_intent is not None
        and outcome.payment_intent["id"] not in invoice["_payment_intents"]
    ):
        invoice["_payment_intents"].append(outcome.payment_intent["id"])
    if outcome.status == "succeeded":
        mark_paid(ctx, invoice, now, None)
        return outcome
    if outcome.status == "processing" or (
        outcome.status == "requires_action" and pays_by_transfer(invoice)
    ):
        # A bank debit, or a transfer awaited: the invoice stays open, nothing retried, until
        # the money arrives.
        invoice["next_payment_attempt"] = None
        if outcome.payment_intent is not None and outcome.status == "requires_action":
            transfer_progressed(ctx, invoice, outcome.payment_intent, now)
        return outcome
    _after_unpaid_attempt(ctx, invoice, sub, outcome, now, automatic=automatic)
    return outcome


def transfer_progressed(ctx: Ctx, invoice: dict[str, Any], pi: dict[str, Any], now: int) -> None:
    """Money reached a bank-transfer invoice's PaymentIntent: paid, or paid in part so far."""
    if invoice["status"] != "open":
        return
    if pi["status"] == "succeeded":
        mark_paid(ctx, invoice, now, None)
        return
    paid = int(pi.get("amount_received") or 0)
    if paid == invoice["amount_paid"]:
        return
    previous = {
        "amount_paid": invoice["amount_paid"],
        "amount_remaining": invoice["amount_remaining"],
    }
    invoice["amount_paid"] = paid
    invoice["amount_remaining"] = invoice["amount_due"] - paid
    ctx.emit("invoice.updated", invoice, previous=previous, created=now)


def fund_cash_balance(
    ctx: Ctx,
    customer: dict[str, Any],
    *,
    amount: int,
    currency: str,
    reference: str | None,
    now: int,
) -> dict[str, Any]:
    """A bank transfer arrived: fund the cash balance, pay waiting PaymentIntents and invoices."""
    funded, applied = cash_balances.fund(
        ctx, customer, amount=amount, currency=currency, reference=reference, now=now
    )
    for pi, _ in applied:
        if pi["status"] == "succeeded":
            transfer_succeeded(ctx, pi, now)
        invoice = ctx.account.find(pi.get("_invoice"))
        if invoice is not None:
            transfer_progressed(ctx, invoice, pi, now)
    return funded


def settle_processing(ctx: Ctx, pi: dict[str, Any], now: int) -> None:
    """Settle a processing bank debit; its invoice is paid, or fails as a declined attempt would."""
    outcome = settle_debit(ctx, pi, now)
    invoice = ctx.account.find(pi.get("_invoice"))
    if invoice is None or invoice["status"] != "open":
        return
    if outcome.status == "succeeded":
        mark_paid(ctx, invoice, now, None)
        return
    sub = ctx.account.find(invoice.get("_subscription"))
    _after_unpaid_attempt(ctx, invoice, sub, outcome, now, automatic=True)


def _after_unpaid_attempt(
    ctx: Ctx,
    invoice: dict[str, Any],
    sub: dict[str, Any] | None,
    outcome: Any,
    now: int,
    *,
    automatic: bool,
) -> None:
    """Schedule the retry and send the events of an attempt that failed or needs action."""
    first = invoice["billing_reason"] == "subscription_create"
    _schedule_retry(ctx, invoice, now, first=first, automatic=automatic)
    if outcome.status == "requires_action":
        if not first:
            ctx.emit("invoice.payment_failed", invoice, created=now)
        ctx.emit("invoice.payment_action_required", invoice, created=now)
    else:
        ctx.emit("invoice.payment_failed", invoice, created=now)
    if sub is not None and not first:
        _after_failed_payment(ctx, invoice, sub, now, automatic=automatic)


def _schedule_retry(
    ctx: Ctx, invoice: dict[str, Any], now: int, *, first: bool, automatic: bool
) -> None:
    """Set `next_payment_attempt` from the retry schedule (a first invoice is never retried)."""
    retries = settings(ctx.sim).retry_days
    # Only the automatic attempts walk the retry schedule; a manual retry leaves it as it was.
    if automatic:
        invoice["_auto_attempts"] = int(invoice.get("_auto_attempts") or 0) + 1
        scheduled = invoice["_auto_attempts"]
        if (
            not first
            and invoice["collection_method"] == "charge_automatically"
            and scheduled <= len(retries)
        ):
            invoice["next_payment_attempt"] = now + DAY * int(retries[scheduled - 1])
        else:
            invoice["next_payment_attempt"] = None
    elif first:
        invoice["next_payment_attempt"] = None


def _after_failed_payment(
    ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], now: int, *, automatic: bool
) -> None:
    """A failed renewal makes the subscription past due; the last retry ends dunning."""
    if sub["status"] in ("active", "trialing"):
        before = snapshot(sub)
        sub["status"] = "past_due"
        emit_updated(ctx, sub, before, now)
    if (
        automatic
        and invoice["next_payment_attempt"] is None
        and invoice["collection_method"] == "charge_automatically"
    ):
        _after_final_attempt(ctx, invoice, sub, now)


def _after_final_attempt(ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], now: int) -> None:
    """End dunning: the subscription and invoice end as the settings say."""
    # A true circle: the last retry may cancel the subscription, and canceling collects its
    # final invoice through this module.
    from stripesim.billing.lifecycle import cancel_subscription

    config = settings(ctx.sim)
    if sub["status"] in ("canceled", "incomplete_expired"):
        return
    if config.invoice_status_after_final_attempt == "uncollectible":
        mark_uncollectible(ctx, invoice, now)
    final = config.subscription_status_after_final_attempt
    if final == "canceled":
        cancel_subscription(ctx, sub["id"], reason="payment_failed", now=now)
    elif final == "unpaid" and sub["status"] != "unpaid":
        before = snapshot(sub)
        sub["status"] = "unpaid"
        emit_updated(ctx, sub, before, now)


def void_invoice(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    """Void an open or uncollectible invoice."""
    if invoice["status"] not in ("open", "uncollectible"):
        raise StripeError(
            "You can only pass in open or uncollectible invoices.", code="invoice_not_open"
        )
    _stop_collecting(invoice, "void", "voided_at", now)
    invoice["amount_remaining"] = 0
    ctx.emit("invoice.voided", invoice, created=now)


def mark_uncollectible(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    """Mark an open invoice uncollectible (no more attempts)."""
    if invoice["status"] != "open":
        raise StripeError(
            "You can only mark open invoices as uncollectible.", code="invoice_not_open"
        )
    _stop_collecting(invoice, "uncollectible", "marked_uncollectible_at", now)
    ctx.emit("invoice.marked_uncollectible", invoice, created=now)


def _stop_collecting(invoice: dict[str, Any], status: str, transition: str, now: int) -> None:
    """Move the invoice to a status collection stops at (paid, void, uncollectible): no more
    automatic steps or attempts, and the transition's time."""
    invoice["status"] = status
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"][transition] = now


def retry_open_invoices(ctx: Ctx, customer_id: str) -> None:
    """Try the customer's open, automatically-charged invoices now (after a card update)."""
    now = ctx.now_for_customer(customer_id)
    for invoice in ctx.account.where("invoice", customer=customer_id, status="open"):
        if invoice["collection_method"] == "charge_automatically":
            attempt_payment(ctx, invoice, now, automatic=False)


def finalize_and_collect(
    ctx: Ctx,
    invoice: dict[str, Any],
    now: int,
    *,
    outcome: Any = None,
    pay: bool = True,
) -> Any:
    """Finalize a subscription invoice now and charge it (or just send it)."""
    invoice["auto_advance"] = True
    finalize(ctx, invoice, now)
    if not pay or invoice["status"] != "open":
        return None
    if invoice["collection_method"] != "charge_automatically":
        return None
    return attempt_payment(
        ctx,
        invoice,
        now,
        outcome=outcome,
        off_session=invoice["billing_reason"] != "subscription_create",
    )


def schedule_finalize(ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], now: int) -> None:
    """Leave a subscription's invoice a draft for the finalize delay (Stripe: one hour)."""
    if sub["status"] == "unpaid":
        # Stripe keeps creating invoices for unpaid subscriptions but leaves them as drafts.
        invoice["auto_advance"] = False
        return
    invoice["_finalize_at"] = now + settings(ctx.sim).finalize_delay_seconds
    invoice["automatically_finalizes_at"] = invoice["_finalize_at"]
