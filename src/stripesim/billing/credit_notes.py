"""Credit notes: take money off a finalized invoice, or give back what was paid for it.

An open invoice's credit note is `pre_payment`: it lowers what is still due (crediting all of it
pays the invoice). A paid invoice's is `post_payment`: the total is refunded to the card
(`refund_amount`), credited to the customer's balance (`credit_amount`, the default) or settled
outside Stripe (`out_of_band_amount`). Voiding one undoes its effect, except a refund.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripesim import objects
from stripesim.balances import adjust_customer_balance
from stripesim.billing.amounts import round_minor
from stripesim.billing.collection import mark_paid
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_int, render, required_object, update_metadata
from stripesim.payments import refund
from stripesim.registry import Ctx
from stripesim.state import new_id, snapshot

KIND = "credit_note"
LINE = "credit_note_line_item"


def build_credit_note(ctx: Ctx, params: dict[str, Any], *, store: bool) -> dict[str, Any]:
    """Build a credit note from create (or preview) params; `store` keeps it (nothing else)."""
    invoice = required_object(ctx.account, params, "invoice", "invoice")
    if invoice["status"] not in ("open", "paid", "uncollectible"):
        raise StripeError(
            f"You can only create credit notes on finalized invoices; this one is "
            f"{invoice['status']}.",
            code="invoice_not_editable",
            param="invoice",
        )
    now = ctx.now_for_customer(invoice["customer"])
    note_id = new_id("cn")
    lines = _lines(invoice, note_id, params)
    total = sum(line["amount"] for line in lines)
    post = invoice["status"] == "paid"
    room = _creditable(ctx, invoice, post)
    if total <= 0 or total > room:
        raise StripeError(
            f"The credit note's total ({total}) must be positive and at most {room}, what is "
            "left to credit on the invoice.",
            param="amount" if "lines" not in params else "lines",
        )
    refund_amount, credit_amount, out_of_band = _split(params, total, post)
    note = ctx.build(
        KIND,
        "cn",
        id=note_id,
        created=now,
        amount=total,
        currency=invoice["currency"],
        customer=invoice["customer"],
        effective_at=as_int(params, "effective_at") or now,
        invoice=invoice["id"],
        lines={
            "object": "list",
            "data": lines,
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/credit_notes/{note_id}/lines",
        },
        memo=params.get("memo") or None,
        number=f"{invoice['number']}-CN-{_sequence(ctx, invoice):02d}",
        out_of_band_amount=out_of_band or None,
        pdf=f"{ctx.base_url}/credit_notes/{note_id}/pdf",
        post_payment_amount=total if post else 0,
        pre_payment_amount=0 if post else total,
        reason=params.get("reason") or None,
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        type="post_payment" if post else "pre_payment",
        _refund_amount=refund_amount,
        _credit_amount=credit_amount,
    )
    update_metadata(note, params.get("metadata"))
    if store:
        ctx.account.add(note)
    return note


def issue(ctx: Ctx, note: dict[str, Any]) -> dict[str, Any]:
    """Apply a stored credit note to its invoice, refund or credit, and announce it."""
    invoice = ctx.account.get(note["invoice"], "invoice")
    now = note["created"]
    before = snapshot(invoice)
    if note["type"] == "pre_payment":
        invoice["pre_payment_credit_notes_amount"] += note["total"]
        invoice["amount_due"] = max(invoice["amount_due"] - note["total"], 0)
        invoice["amount_remaining"] = max(invoice["amount_remaining"] - note["total"], 0)
    else:
        invoice["post_payment_credit_notes_amount"] += note["total"]
        _give_back(ctx, invoice, note, now)
    ctx.emit("credit_note.created", note, created=now)
    previous = {key: before[key] for key in invoice if before.get(key) != invoice[key]}
    ctx.emit_update("invoice.updated", invoice, render(previous), created=now)
    if note["type"] == "pre_payment" and invoice["amount_remaining"] == 0:
        # Crediting everything still due settles the invoice.
        mark_paid(ctx, invoice, now, None, out_of_band=True)
    return note


def void(ctx: Ctx, note: dict[str, Any]) -> dict[str, Any]:
    """Void an issued credit note: its invoice owes (or its customer holds) what it took."""
    if note["status"] != "issued":
        raise StripeError("This credit note is already void.", param="id")
    if note["_refund_amount"]:
        raise StripeError(
            "A credit note that refunded a payment cannot be voided: the refund stands.",
            param="id",
        )
    invoice = ctx.account.get(note["invoice"], "invoice")
    now = ctx.now_for_customer(note["customer"])
    if note["type"] == "pre_payment":
        if invoice["status"] != "open":
            raise StripeError(
                "A credit note on an invoice that is no longer open cannot be voided.",
                param="id",
            )
        invoice["pre_payment_credit_notes_amount"] -= note["total"]
        invoice["amount_due"] += note["total"]
        invoice["amount_remaining"] += note["total"]
    else:
        invoice["post_payment_credit_notes_amount"] -= note["total"]
        if note["_credit_amount"]:
            _move_balance(ctx, note, invoice, note["_credit_amount"], now)
    previous = {"status": note["status"], "voided_at": None}
    note["status"] = "void"
    note["voided_at"] = now
    ctx.emit("credit_note.voided", note, previous=previous, created=now)
    return note


def _lines(invoice: dict[str, Any], note_id: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the credit note's lines: as asked, or one custom line for a bare `amount`."""
    raw = params.get("lines")
    if not raw:
        amount = as_int(params, "amount")
        if amount is None:
            raise parameter_missing("lines")
        raw = [{"type": "custom_line_item", "unit_amount": amount, "description": "Credit"}]
    if not isinstance(raw, list):
        raise StripeError("Invalid array", param="lines")
    invoice_lines = {line["id"]: line for line in invoice["lines"]["data"]}
    return [
        _line(note_id, entry, f"lines[{index}]", invoice_lines) for index, entry in enumerate(raw)
    ]


def _line(
    note_id: str, entry: dict[str, Any], param: str, invoice_lines: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    line = objects.new(LINE)
    line["id"] = new_id("cnli")
    kind = entry.get("type")
    quantity = as_int(entry, "quantity", param=f"{param}[quantity]")
    if kind == "invoice_line_item":
        source = invoice_lines.get(str(entry.get("invoice_line_item")))
        if source is None:
            raise StripeError(
                f"No such invoice line item: '{entry.get('invoice_line_item')}'",
                param=f"{param}[invoice_line_item]",
            )
        amount = as_int(entry, "amount", param=f"{param}[amount]")
        if amount is None:
            # A part of the line's quantity credits that share of its amount.
            whole = source.get("quantity") or 1
            share = Decimal(quantity if quantity is not None else whole) / Decimal(whole)
            amount = round_minor(Decimal(source["amount"]) * share)
        line.update(
            amount=amount,
            description=entry.get("description") or source.get("description"),
            invoice_line_item=source["id"],
            quantity=quantity if quantity is not None else source.get("quantity"),
        )
    elif kind == "custom_line_item":
        unit = as_int(entry, "unit_amount", param=f"{param}[unit_amount]")
        if unit is None:
            raise parameter_missing(f"{param}[unit_amount]")
        count = quantity if quantity is not None else 1
        line.update(
            amount=unit * count,
            description=entry.get("description") or None,
            quantity=count,
            type="custom_line_item",
            unit_amount=unit,
            unit_amount_decimal=str(unit),
        )
        line.pop("invoice_line_item")
    else:
        raise parameter_missing(f"{param}[type]")
    update_metadata(line, entry.get("metadata"))
    return line


def _creditable(ctx: Ctx, invoice: dict[str, Any], post: bool) -> int:
    """Return how much of the invoice a new credit note may still take."""
    if post:
        return int(invoice["amount_paid"]) - int(invoice["post_payment_credit_notes_amount"])
    return int(invoice["amount_remaining"])


def _split(params: dict[str, Any], total: int, post: bool) -> tuple[int, int, int]:
    """Return (refunded, credited to the balance, settled out of band) of a credit note."""
    refund_amount = as_int(params, "refund_amount", 0) or 0
    credit_amount = as_int(params, "credit_amount", 0) or 0
    out_of_band = as_int(params, "out_of_band_amount", 0) or 0
    if not post:
        if refund_amount or credit_amount:
            raise StripeError(
                "`refund_amount` and `credit_amount` apply only to paid invoices.",
                param="refund_amount" if refund_amount else "credit_amount",
            )
        return 0, 0, out_of_band
    if not (refund_amount or credit_amount or out_of_band):
        credit_amount = total  # a paid invoice's credit goes to the customer's balance
    if refund_amount + credit_amount + out_of_band != total:
        raise StripeError(
            "The sum of `refund_amount`, `credit_amount` and `out_of_band_amount` must equal "
            f"the credit note's total ({total}).",
            param="refund_amount",
        )
    return refund_amount, credit_amount, out_of_band


def _sequence(ctx: Ctx, invoice: dict[str, Any]) -> int:
    return len(ctx.account.where(KIND, invoice=invoice["id"])) + 1


def _give_back(ctx: Ctx, invoice: dict[str, Any], note: dict[str, Any], now: int) -> None:
    """Refund and credit what a post-payment credit note gives back."""
    if note["_refund_amount"]:
        charge = _invoice_charge(ctx, invoice)
        if charge is None:
            raise StripeError(
                "This invoice was not paid through Stripe, so there is nothing to refund; use "
                "`credit_amount` or `out_of_band_amount`.",
                param="refund_amount",
            )
        made = refund(ctx, charge["id"], note["_refund_amount"], "requested_by_customer")
        note["refunds"] = [
            {
                "amount_refunded": made["amount"],
                "payment_record_refund": None,
                "refund": made["id"],
                "type": "refund",
            }
        ]
    if note["_credit_amount"]:
        txn = _move_balance(ctx, note, invoice, -note["_credit_amount"], now)
        note["customer_balance_transaction"] = txn["id"]


def _move_balance(
    ctx: Ctx, note: dict[str, Any], invoice: dict[str, Any], amount: int, now: int
) -> dict[str, Any]:
    """Move the customer's balance by `amount` for the note (negative: a credit), linked to both."""
    return adjust_customer_balance(
        ctx,
        ctx.account.get(invoice["customer"], "customer"),
        amount,
        note["currency"],
        kind="credit_note",
        now=now,
        invoice=invoice["id"],
        credit_note=note["id"],
    )


def _invoice_charge(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any] | None:
    for pi_id in reversed(invoice.get("_payment_intents") or []):
        pi = ctx.account.find(pi_id)
        charge = ctx.account.find((pi or {}).get("latest_charge"))
        if charge is not None and charge.get("paid"):
            return charge
    return None
