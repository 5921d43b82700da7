"""Invoices and invoice items: drafts, finalize, pay, void, uncollectible, send, previews, lines."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from stripesim import billing, objects, payments
from stripesim.catalog import inline_price
from stripesim.currency import format_amount
from stripesim.errors import StripeError, card_error, parameter_missing
from stripesim.lists import (
    as_bool,
    as_int,
    paginate,
    required_int,
    required_object,
    update_metadata,
)
from stripesim.pages import card_from_form, find_object, form_of, hosted, message_page, render_page
from stripesim.pdf import text_pdf
from stripesim.registry import (
    Ctx,
    changed_since,
    list_route,
    page,
    retrieve_route,
    route,
    search_route,
)
from stripesim.state import Simulator, new_id, snapshot


def _invoice(ctx: Ctx, invoice_id: str) -> dict[str, Any]:
    return ctx.account.get(invoice_id, "invoice")


def _now(ctx: Ctx, invoice: dict[str, Any]) -> int:
    return ctx.now_for_customer(invoice["customer"])


def _draft_only(invoice: dict[str, Any]) -> None:
    if invoice["status"] != "draft":
        raise StripeError(
            f"You can only modify draft invoices. This invoice is {invoice['status']}.",
            code="invoice_not_editable",
        )


# -- invoices --------------------------------------------------------------------------------------


@route("POST", "/v1/invoices", "InvoiceCreateParams")
def create_invoice(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer = required_object(ctx.account, params, "customer", "customer")
    customer_id = customer["id"]
    now = ctx.now_for_customer(customer_id)
    sub = None
    if params.get("subscription"):
        sub = ctx.account.get(params["subscription"], "subscription", param="subscription")
    collection = params.get("collection_method") or "charge_automatically"
    if collection not in ("charge_automatically", "send_invoice"):
        raise StripeError("Invalid collection_method", param="collection_method")
    days = as_int(params, "days_until_due")
    due_date = as_int(params, "due_date")
    if collection == "send_invoice" and days is None and due_date is None:
        raise StripeError(
            "You must specify either `days_until_due` or `due_date` for invoices with "
            "`collection_method=send_invoice`.",
            param="days_until_due",
        )
    behavior = params.get("pending_invoice_items_behavior") or "exclude"
    pending = billing.pending_items(ctx, customer_id, sub["id"] if sub else None)
    currency = (
        params.get("currency")
        or (pending[0]["currency"] if pending else None)
        or customer.get("currency")
        or (sub["currency"] if sub else "usd")
    ).lower()
    invoice = billing.new_invoice(
        ctx,
        customer,
        now=now,
        currency=currency,
        billing_reason="manual",
        collection_method=collection,
        subscription=sub,
        auto_advance=bool(as_bool(params, "auto_advance", False)),
        default_tax_rates=billing.tax_rate_objects(
            ctx, params.get("default_tax_rates"), "default_tax_rates"
        ),
        description=params.get("description") or None,
        default_payment_method=params.get("default_payment_method") or None,
        automatic_tax=bool(as_bool(params.get("automatic_tax") or {}, "enabled", False)),
    )
    invoice["discounts"] = billing.new_discounts(
        ctx, params.get("discounts"), customer_id=customer_id, now=now, invoice_id=invoice["id"]
    )
    invoice["due_date"] = due_date
    invoice["_days_until_due"] = days
    invoice["payment_settings"] = billing.read_payment_settings(params, invoice["payment_settings"])
    update_metadata(invoice, params.get("metadata"))
    if behavior == "include":
        for item in pending:
            if item["currency"] == currency:
                billing.add_invoice_item_line(ctx, invoice, item)
    if invoice["auto_advance"]:
        invoice["_finalize_at"] = now + billing.settings(ctx.sim).finalize_delay_seconds
        invoice["automatically_finalizes_at"] = invoice["_finalize_at"]
    billing.compute_totals(ctx, invoice)
    ctx.emit("invoice.created", invoice, created=now)
    return invoice


@route("POST", "/v1/invoices/create_preview", "InvoiceCreatePreviewParams")
def create_preview(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    details = params.get("subscription_details") or {}
    if params.get("subscription"):
        sub = ctx.account.get(params["subscription"], "subscription", param="subscription")
        now = ctx.now_for_customer(sub["customer"])
        preview = billing.preview_invoice(ctx, sub, details, now)
        return preview
    customer_id = params.get("customer")
    if not customer_id:
        raise StripeError(
            "You must specify either `customer` or `subscription` to preview an invoice.",
            param="customer",
        )
    customer = ctx.account.get(customer_id, "customer", param="customer")
    now = ctx.now_for_customer(customer_id)
    pending = billing.pending_items(ctx, customer_id, None)
    currency = (
        params.get("currency") or (pending[0]["currency"] if pending else None) or "usd"
    ).lower()
    invoice = billing.new_invoice(
        ctx, customer, now=now, currency=currency, billing_reason="manual", store=False
    )
    invoice["id"] = new_id("upcoming_in")
    for item in pending:
        billing.add_invoice_item_line(ctx, invoice, item)
    billing.compute_totals(ctx, invoice)
    return invoice


search_route("/v1/invoices/search", "invoice", "InvoiceSearchParams")


retrieve_route("/v1/invoices/{invoice_id}", "invoice", "InvoiceRetrieveParams")


@route("POST", "/v1/invoices/{invoice_id}", "InvoiceUpdateParams")
def update_invoice(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    now = _now(ctx, invoice)
    before = snapshot(invoice)
    editable_open = {"metadata", "auto_advance", "expand", "description", "footer"}
    if invoice["status"] != "draft" and set(params) - editable_open:
        _draft_only(invoice)
    update_metadata(invoice, params.get("metadata"))
    if "auto_advance" in params:
        invoice["auto_advance"] = bool(as_bool(params, "auto_advance"))
        if invoice["status"] == "draft":
            invoice["_finalize_at"] = (
                now + billing.settings(ctx.sim).finalize_delay_seconds
                if invoice["auto_advance"]
                else None
            )
            invoice["automatically_finalizes_at"] = invoice["_finalize_at"]
    for key in ("description", "footer", "default_payment_method", "statement_descriptor"):
        if key in params:
            invoice[key] = params[key] or None
    if "collection_method" in params:
        invoice["collection_method"] = params["collection_method"]
    if "days_until_due" in params:
        invoice["_days_until_due"] = as_int(params, "days_until_due")
    if "due_date" in params:
        invoice["due_date"] = as_int(params, "due_date")
    if "default_tax_rates" in params:
        invoice["default_tax_rates"] = billing.tax_rate_objects(
            ctx, params["default_tax_rates"], "default_tax_rates"
        )
    if "discounts" in params:
        invoice["discounts"] = (
            billing.new_discounts(
                ctx,
                params["discounts"],
                customer_id=invoice["customer"],
                now=now,
                invoice_id=invoice_id,
            )
            if params["discounts"] != ""
            else []
        )
    if invoice["status"] == "draft":
        billing.compute_totals(ctx, invoice)
    ctx.emit_update("invoice.updated", invoice, changed_since(before, invoice), created=now)
    return invoice


@route("DELETE", "/v1/invoices/{invoice_id}", "InvoiceDeleteParams")
def delete_invoice(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    if invoice["status"] != "draft":
        raise StripeError(
            "You can only delete draft invoices. Use void for finalized invoices.",
            code="invoice_not_editable",
        )
    for item in ctx.account.all("invoiceitem"):
        if item.get("invoice") == invoice_id:
            ctx.account.delete(item)
    ctx.account.delete(invoice)
    ctx.emit("invoice.deleted", invoice, created=_now(ctx, invoice))
    return objects.deleted("invoice", invoice_id)


@route("POST", "/v1/invoices/{invoice_id}/finalize", "InvoiceFinalizeInvoiceParams")
def finalize_invoice(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    now = _now(ctx, invoice)
    if "auto_advance" in params:
        invoice["auto_advance"] = bool(as_bool(params, "auto_advance"))
    billing.finalize(ctx, invoice, now)
    if (
        invoice["status"] == "open"
        and invoice["auto_advance"]
        and invoice["collection_method"] == "charge_automatically"
    ):
        # Automatic collection charges an invoice as it is finalized.
        billing.attempt_payment(ctx, invoice, now)
    return invoice


@route("POST", "/v1/invoices/{invoice_id}/pay", "InvoicePayParams")
def pay_invoice(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    now = _now(ctx, invoice)
    if invoice["status"] == "draft":
        billing.finalize(ctx, invoice, now)
        if invoice["status"] == "paid":
            return invoice
    if invoice["status"] == "paid":
        raise StripeError("Invoice is already paid")
    if invoice["status"] not in ("open", "uncollectible"):
        raise StripeError(f"This invoice can't be paid because it is {invoice['status']}.")
    if as_bool(params, "paid_out_of_band", False):
        billing.mark_paid(ctx, invoice, now, None, out_of_band=True)
        return invoice
    outcome = billing.attempt_payment(
        ctx,
        invoice,
        now,
        payment_method=params.get("payment_method") or None,
        off_session=bool(as_bool(params, "off_session", True)),
        automatic=False,
    )
    if outcome.status not in ("succeeded", "processing"):  # a bank debit is on its way
        raise outcome.error or card_error("Your card was declined.", code="card_declined")
    return invoice


@route("POST", "/v1/invoices/{invoice_id}/void", "InvoiceVoidInvoiceParams")
def void_invoice(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    billing.void_invoice(ctx, invoice, _now(ctx, invoice))
    return invoice


@route("POST", "/v1/invoices/{invoice_id}/mark_uncollectible", "InvoiceMarkUncollectibleParams")
def mark_uncollectible(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    billing.mark_uncollectible(ctx, invoice, _now(ctx, invoice))
    return invoice


@route("POST", "/v1/invoices/{invoice_id}/send", "InvoiceSendInvoiceParams")
def send_invoice(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    now = _now(ctx, invoice)
    if invoice["collection_method"] != "send_invoice":
        raise StripeError(
            "You can only manually send an invoice if its collection method is 'send_invoice'.",
        )
    if invoice["status"] == "draft":
        billing.finalize(ctx, invoice, now)
        return invoice
    if invoice["status"] != "open":
        raise StripeError(f"You can't send an invoice that is {invoice['status']}.")
    ctx.emit("invoice.sent", invoice, created=now)
    return invoice


@route("GET", "/v1/invoices/{invoice_id}/lines", "InvoiceListLinesParams")
def list_lines(ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = _invoice(ctx, invoice_id)
    # Lines keep invoice order; paginate lists newest first, so hand it the reverse.
    lines = list(reversed(invoice["lines"]["data"]))
    return paginate(
        ctx.account, "line_item", params, f"/v1/invoices/{invoice_id}/lines", objects=lines
    )


list_route(
    "/v1/invoices",
    "invoice",
    "InvoiceListParams",
    filters=("customer", "status", "collection_method"),
    private=("subscription",),
)


# -- invoice items ---------------------------------------------------------------------------------


def _period(params: dict[str, Any], now: int) -> tuple[int, int]:
    raw = params.get("period")
    if not isinstance(raw, dict):
        return now, now
    start = as_int(raw, "start", param="period[start]")
    end = as_int(raw, "end", param="period[end]")
    if start is None or end is None:
        raise parameter_missing("period[start]" if start is None else "period[end]")
    if end < start:
        raise StripeError("The period end must be after the period start.", param="period[end]")
    return start, end


def _item_amount(
    ctx: Ctx, params: dict[str, Any]
) -> tuple[int, str, dict[str, Any] | None, int, str | None]:
    """(amount, currency, price, quantity, unit_amount_decimal) from invoice-item params."""
    quantity = as_int(params, "quantity", 1)
    assert quantity is not None
    pricing = params.get("pricing") or {}
    price_id = pricing.get("price") or params.get("price")
    if price_id:
        price = ctx.account.get(price_id, "price", param="pricing[price]")
        exact = billing.exact_amount(price, quantity)
        return (
            billing.round_minor(exact),
            price["currency"],
            price,
            quantity,
            price.get("unit_amount_decimal"),
        )
    data = params.get("price_data")
    if isinstance(data, dict):
        unit = data.get("unit_amount_decimal") or data.get("unit_amount")
        if unit in (None, "") or not data.get("currency"):
            raise parameter_missing(
                "price_data[unit_amount]" if unit in (None, "") else "price_data[currency]"
            )
        exact = Decimal(str(unit)) * quantity
        return billing.round_minor(exact), str(data["currency"]).lower(), None, quantity, str(unit)
    if params.get("unit_amount_decimal") not in (None, ""):
        try:
            unit = Decimal(str(params["unit_amount_decimal"]))
        except InvalidOperation:
            raise StripeError("Invalid decimal", param="unit_amount_decimal") from None
        if not params.get("currency"):
            raise parameter_missing("currency")
        return (
            billing.round_minor(unit * quantity),
            str(params["currency"]).lower(),
            None,
            quantity,
            params["unit_amount_decimal"],
        )
    amount = required_int(params, "amount")
    if not params.get("currency"):
        raise parameter_missing("currency")
    return amount, str(params["currency"]).lower(), None, quantity, None


@route("POST", "/v1/invoiceitems", "InvoiceItemCreateParams")
def create_invoice_item(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer_id = required_object(ctx.account, params, "customer", "customer")["id"]
    now = ctx.now_for_customer(customer_id)
    amount, currency, price, quantity, unit_decimal = _item_amount(ctx, params)
    invoice = None
    if params.get("invoice"):
        invoice = ctx.account.get(params["invoice"], "invoice", param="invoice")
        _draft_only(invoice)
    sub = None
    if params.get("subscription"):
        sub = ctx.account.get(params["subscription"], "subscription", param="subscription")
    description = params.get("description") or (billing.product_name(ctx, price) if price else None)
    item = billing.new_invoice_item(
        ctx,
        customer_id=customer_id,
        amount=amount,
        currency=currency,
        description=description or "",
        now=now,
        period=_period(params, now),
        price=price,
        quantity=quantity,
        subscription_id=sub["id"] if sub else None,
        tax_rates=billing.tax_rate_objects(ctx, params.get("tax_rates"), "tax_rates"),
        discountable=bool(as_bool(params, "discountable", True)),
        unit_amount_decimal=unit_decimal,
        metadata=params.get("metadata"),
        emit=False,
    )
    if not description:
        item["description"] = None
    if invoice is not None:
        billing.add_invoice_item_line(ctx, invoice, item)
        billing.compute_totals(ctx, invoice)
    ctx.emit("invoiceitem.created", item, created=now)
    return item


retrieve_route(
    "/v1/invoiceitems/{item_id}", "invoiceitem", "InvoiceItemRetrieveParams", label="invoiceitem"
)


def _editable_item(ctx: Ctx, item: dict[str, Any]) -> dict[str, Any] | None:
    """The draft invoice holding `item` (None when pending); finalized ones are locked."""
    invoice = ctx.account.find(item.get("invoice"))
    if invoice is not None and invoice["status"] != "draft":
        raise StripeError(
            "The invoice item is on a finalized invoice and can no longer be changed.",
            code="invoice_not_editable",
        )
    return invoice


def _drop_item_line(invoice: dict[str, Any], item_id: str) -> None:
    """Take an invoice item's line off its draft invoice."""
    lines = invoice["lines"]["data"]
    invoice["lines"]["data"] = [
        line for line in lines if billing.line_invoice_item(line) != item_id
    ]


@route("POST", "/v1/invoiceitems/{item_id}", "InvoiceItemUpdateParams")
def update_invoice_item(ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = ctx.account.get(item_id, "invoiceitem", label="invoiceitem")
    invoice = _editable_item(ctx, item)
    now = ctx.now_for_customer(item["customer"])
    if any(
        key in params
        for key in ("amount", "quantity", "pricing", "price_data", "unit_amount_decimal")
    ):
        merged = {
            "currency": item["currency"],
            "amount": item["amount"],
            "quantity": item["quantity"],
        }
        if "amount" not in params and not any(
            k in params for k in ("pricing", "price_data", "unit_amount_decimal")
        ):
            details = (item.get("pricing") or {}).get("price_details")
            if details:
                merged["pricing"] = {"price": details["price"]}
            elif item["pricing"].get("unit_amount_decimal"):
                merged.pop("amount")
                merged["unit_amount_decimal"] = item["pricing"]["unit_amount_decimal"]
        merged.update(
            {
                key: params[key]
                for key in ("amount", "quantity", "pricing", "price_data", "unit_amount_decimal")
                if key in params
            }
        )
        amount, _, price, quantity, unit_decimal = _item_amount(ctx, merged)
        item.update(
            amount=amount, net_amount=amount, quantity=quantity, quantity_decimal=str(quantity)
        )
        if price is None:
            price = inline_price(ctx, item["currency"], unit_decimal or str(amount), "")
        item["pricing"] = billing.pricing_of(price, unit_decimal)
    if "description" in params:
        item["description"] = params["description"] or None
    if "discountable" in params:
        item["discountable"] = bool(as_bool(params, "discountable"))
    if "period" in params:
        start, end = _period(params, now)
        item["period"] = {"end": end, "start": start}
    if "tax_rates" in params:
        item["tax_rates"] = billing.tax_rate_objects(ctx, params["tax_rates"], "tax_rates")
    update_metadata(item, params.get("metadata"))
    if invoice is not None:
        _drop_item_line(invoice, item_id)
        billing.add_invoice_item_line(ctx, invoice, item)
        billing.compute_totals(ctx, invoice)
    # Stripe sends no `invoiceitem.updated`: the change shows on the item and its invoice.
    return item


@route("DELETE", "/v1/invoiceitems/{item_id}", "InvoiceItemDeleteParams")
def delete_invoice_item(ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = ctx.account.get(item_id, "invoiceitem", label="invoiceitem")
    invoice = _editable_item(ctx, item)
    if invoice is not None:
        _drop_item_line(invoice, item_id)
        billing.compute_totals(ctx, invoice)
    ctx.account.delete(item)
    ctx.emit("invoiceitem.deleted", item, created=ctx.now_for_customer(item["customer"]))
    return objects.deleted("invoiceitem", item_id)


@route("GET", "/v1/invoiceitems", "InvoiceItemListParams")
def list_invoice_items(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer = params.get("customer")
    invoice = params.get("invoice")
    pending = as_bool(params, "pending")
    return paginate(
        ctx.account,
        "invoiceitem",
        params,
        "/v1/invoiceitems",
        filters={"customer": customer, "invoice": invoice},
        where=lambda i: pending is None or (i.get("invoice") is None) == pending,
    )


# -- hosted invoice page ---------------------------------------------------------------------------


@page("/i/{invoice_id}", methods=("GET", "POST"))
async def hosted_invoice(request: Request, sim: Simulator) -> Response:
    """Stripe's hosted invoice page: the lines, the PDF, and a pay form while it is open."""
    invoice_id = request.path_params["invoice_id"]
    form = await form_of(request)
    with hosted(sim, request, invoice_id, "invoice") as found:
        if found is None:
            return message_page(404, "Invoice not found", "This invoice link does not exist.")
        ctx, invoice = found
        notice, error, status = None, None, 200
        if request.method == "POST":
            notice, error = _pay_from_page(ctx, invoice, form)
            status = 402 if error else 200
        shown = snapshot(invoice)
        waiting = _waiting_action(ctx, invoice)
    transfer = waiting.get("display_bank_transfer_instructions")
    return render_page(
        "invoice.html",
        status,
        invoice=shown,
        form=form,
        notice=notice,
        error=error,
        challenge=waiting.get("challenge"),
        transfer=transfer,
        instructions=transfer,
        verification=(waiting.get("verify_with_microdeposits") or {}).get(
            "hosted_verification_url"
        ),
    )


def _waiting_action(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    """What an open invoice's payment waits for: a 3-D Secure challenge (its page), a bank
    transfer (its instructions) or micro-deposits (their page); empty when nothing."""
    if invoice["status"] != "open" or not invoice["_payment_intents"]:
        return {}
    pi = ctx.account.find(invoice["_payment_intents"][-1])
    if pi is None or pi["status"] != "requires_action":
        return {}
    action = snapshot(pi.get("next_action") or {})
    if action.get("type") == "use_stripe_sdk":
        return {"challenge": f"/3ds/{pi['id']}"}
    return dict(action)


def _named_objects(invoice: dict[str, Any]) -> list[str]:
    """Return the ids of the discounts, coupons and tax rates the invoice's totals name."""
    found = [entry["discount"] for entry in invoice.get("total_discount_amounts") or []]
    found += [
        str((entry.get("tax_rate_details") or {}).get("tax_rate"))
        for entry in invoice.get("total_taxes") or []
    ]
    return [key for key in found if isinstance(key, str)]


def _pdf_lines(
    invoice: dict[str, Any], names: dict[str, dict[str, Any]], tax_ids: list[str]
) -> list[str]:
    """Return the text of the invoice's PDF, line by line."""
    currency = invoice["currency"]
    invoice_id = invoice["id"]
    address = invoice.get("customer_address") or {}
    where = ", ".join(
        str(address[key])
        for key in ("line1", "line2", "city", "state", "postal_code", "country")
        if address.get(key)
    )
    lines = [
        f"Invoice {invoice.get('number') or invoice_id}",
        f"Status: {invoice['status']}",
        f"Date: {datetime.fromtimestamp(invoice['created'], UTC).strftime('%Y-%m-%d')}",
        f"Bill to: {invoice.get('customer_name') or invoice.get('customer_email') or ''}",
    ]
    if invoice.get("customer_name") and invoice.get("customer_email"):
        lines.append(f"    {invoice['customer_email']}")
    if where:
        lines.append(f"    {where}")
    lines += [f"    Tax ID: {tax_id}" for tax_id in tax_ids]
    lines.append("")
    for line in invoice["lines"]["data"]:
        amount = format_amount(line["amount"], line["currency"])
        lines.append(f"{(line.get('description') or '')[:70]}    {amount}")
    lines += ["", f"Subtotal: {format_amount(invoice['subtotal'], currency)}"]
    for entry in invoice.get("total_discount_amounts") or []:
        discount = names.get(entry["discount"]) or {}
        coupon = (discount.get("source") or {}).get("coupon")
        terms = coupon if isinstance(coupon, dict) else names.get(str(coupon)) or {}
        label = terms.get("name") or "Discount"
        lines.append(f"{label}: -{format_amount(entry['amount'], currency)}")
    for entry in invoice.get("total_taxes") or []:
        rate = names.get(str((entry.get("tax_rate_details") or {}).get("tax_rate"))) or {}
        label = rate.get("display_name") or "Tax"
        if rate.get("percentage") is not None:
            label += f" {format(rate['percentage'], 'g')} %"
        if rate.get("jurisdiction"):
            label += f" ({rate['jurisdiction']})"
        if entry.get("tax_behavior") == "inclusive":
            label += ", included"
        lines.append(f"{label}: {format_amount(entry['amount'], currency)}")
    note = {"reverse": "Reverse charge", "exempt": "Tax exempt"}.get(
        str(invoice.get("customer_tax_exempt") or "")
    )
    if note:
        lines.append(note)
    lines += [
        f"Total: {format_amount(invoice['total'], currency)}",
        f"Amount paid: {format_amount(invoice['amount_paid'], currency)}",
        f"Amount due: {format_amount(invoice['amount_remaining'], currency)}",
    ]
    return lines


def _pay_from_page(
    ctx: Ctx, invoice: dict[str, Any], form: dict[str, str]
) -> tuple[str | None, str | None]:
    """Pay an open invoice with the card typed on its page; return (notice, error)."""
    if invoice["status"] != "open":
        return None, f"This invoice can't be paid because it is {invoice['status']}."
    now = _now(ctx, invoice)
    try:
        pm = card_from_form(ctx, form, created=now)
        payments.attach_payment_method(ctx, pm, invoice["customer"])
    except StripeError as failure:
        return None, failure.message
    outcome = billing.attempt_payment(
        ctx, invoice, now, payment_method=pm["id"], off_session=False, automatic=False
    )
    if outcome.status == "requires_action":
        return "Your bank asks you to confirm this payment.", None
    if outcome.status != "succeeded":
        declined = outcome.error
        return None, declined.message if declined is not None else "Your card was declined."
    return "Paid. Thank you.", None


@page("/i/{invoice_id}/pdf", methods=("GET",))
async def invoice_pdf(request: Request, sim: Simulator) -> Response:
    """The invoice as a PDF: number, dates, buyer, lines, discounts, taxes by rate, totals."""
    invoice_id = request.path_params["invoice_id"]
    with sim.lock:
        found = find_object(sim, invoice_id, "invoice")
        if found is None:
            return HTMLResponse("<h1>Invoice not found</h1>", status_code=404)
        account, stored = found
        invoice = snapshot(stored)
        names = {
            key: snapshot(obj)
            for key in _named_objects(invoice)
            if (obj := account.find(key)) is not None
        }
        for discount in list(names.values()):
            coupon = (discount.get("source") or {}).get("coupon")
            if isinstance(coupon, str) and (found_coupon := account.find(coupon)) is not None:
                names[coupon] = snapshot(found_coupon)
        tax_ids = [
            f"{tax_id['type'].replace('_', ' ').upper()} {tax_id['value']}"
            for tax_id in account.where("tax_id", customer=invoice.get("customer"))
            if not tax_id.get("_deleted")
        ]
    lines = _pdf_lines(invoice, names, tax_ids)
    name = f"{invoice.get('number') or invoice_id}.pdf"
    return Response(
        text_pdf(lines, title=f"Invoice {invoice.get('number') or invoice_id}"),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )
