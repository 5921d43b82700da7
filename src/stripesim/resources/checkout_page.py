"""The hosted Checkout page: the order and its form, the 3-D Secure test challenge, the redirect."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from stripesim import cards
from stripesim.catalog import metered_rate
from stripesim.currency import format_amount
from stripesim.errors import StripeError
from stripesim.pages import form_of, hosted, message_page, render_page
from stripesim.registry import Ctx, page
from stripesim.resources.checkout import (
    due_now,
    has_trial,
    lazy_expire,
    session_trial_days,
    subtotal_now,
)
from stripesim.resources.checkout_completion import (
    COUNTRIES,
    METHOD_NAMES,
    TAX_ID_TYPES,
    CheckoutDeclined,
    apply_promotion_code,
    chosen_method,
    collects_address,
    complete_session,
    needs_card,
    other_methods,
    takes_banks,
    takes_cards,
)
from stripesim.state import Simulator


def _page_context(
    ctx: Ctx, session: dict[str, Any], form: dict[str, str] | None = None
) -> dict[str, Any]:
    currency = session.get("currency") or "usd"
    interval_text = None
    recurring_total = 0
    for item in session.get("_line_items") or []:
        recurring = item["price"].get("recurring")
        if recurring:
            recurring_total += item["amount_total"]
            count = recurring.get("interval_count") or 1
            interval_text = (
                f"per {recurring['interval']}"
                if count == 1
                else f"every {count} {recurring['interval']}s"
            )
    customer = ctx.account.find(session.get("customer")) if session.get("customer") else None
    trial_days = session_trial_days(session) if session["mode"] == "subscription" else None
    if session["mode"] == "setup":
        button = "Save card"
    elif trial_days or (session["mode"] == "subscription" and has_trial(session)):
        button = "Start trial"
    elif session["mode"] == "subscription":
        button = "Subscribe"
    else:
        button = "Pay"
    return {
        "session": session,
        "items": session.get("_line_items") or [],
        # A usage-based price shows its rate ("$0.50 per 1,000 runs") and its nickname.
        "rates": {
            item["id"]: metered_rate(item["price"], ctx.account.find(item["price"]["product"]))
            for item in session.get("_line_items") or []
            if (item["price"].get("recurring") or {}).get("usage_type") == "metered"
        },
        "currency": currency,
        "due_now": due_now(session),
        "subtotal": subtotal_now(session),
        "discount": int(session.get("_discount_amount") or 0),
        "applied_code": next(
            (
                ctx.account.get(d["promotion_code"], "promotion_code")["code"]
                for d in session.get("_discounts") or []
                if d.get("promotion_code")
            ),
            None,
        ),
        "recurring_total": recurring_total,
        "interval_text": interval_text,
        "trial_days": trial_days,
        "customer_email": (customer or {}).get("email"),
        "ask_email": customer is None and session["mode"] != "setup",
        "needs_card": needs_card(session) and takes_cards(session),
        "other_methods": [METHOD_NAMES.get(kind, kind) for kind in other_methods(session)],
        "takes_cards": takes_cards(session),
        "collects_address": session["mode"] != "setup" and collects_address(session),
        "collects_tax_ids": session["mode"] != "setup"
        and bool((session.get("tax_id_collection") or {}).get("enabled")),
        "countries": COUNTRIES,
        "tax_id_types": TAX_ID_TYPES,
        "automatic_tax": bool(session["automatic_tax"]["enabled"]),
        "saved_address": (customer or {}).get("address") or {},
        "takes_banks": needs_card(session) and takes_banks(session),
        "method": chosen_method(session, form or {}),
        "button": button,
        "business": ctx.sim.business_name,
    }


@page("/checkout/{session_id}", methods=("GET", "POST"))
async def checkout_page(request: Request, sim: Simulator) -> Response:
    """The hosted Checkout page: review the order and pay with a test card."""
    session_id = request.path_params["session_id"]
    form = await form_of(request)
    with hosted(sim, request, session_id, "checkout.session") as found:
        if found is None:
            return message_page(404, "Not found", "This Checkout page does not exist.")
        ctx, session = found
        lazy_expire(ctx, session)
        if session["status"] == "expired":
            return message_page(
                410, "Session expired", "This Checkout Session has expired.", session["cancel_url"]
            )
        if session["status"] == "complete":
            return message_page(
                200, "Already paid", "This Checkout Session is complete.", _success_url(session)
            )
        context = _page_context(ctx, session, form)
        if request.method == "GET":
            return render_page("checkout.html", form=form, error=None, **context)
        challenge = _three_d_secure(session, form, context)
        if challenge is not None:
            return challenge
        try:
            if form.get("apply_code"):
                apply_promotion_code(ctx, session, form.get("promotion_code") or "")
                return render_page(
                    "checkout.html", form=form, error=None, **_page_context(ctx, session)
                )
            complete_session(ctx, session, form)
        except CheckoutDeclined as declined:
            return render_page(
                "checkout.html",
                402 if declined.error.status == 402 else 400,
                form=form,
                error=declined.error.message,
                **_page_context(ctx, session, form),
            )
        target = _success_url(session)
    if target:
        return RedirectResponse(target, status_code=303)
    return message_page(200, "Thanks", "Your payment is complete.")


AUTHENTICATION_FAILED = (
    "We are unable to authenticate your payment method. Please choose a different payment "
    "method and try again."
)


def _three_d_secure(
    session: dict[str, Any], form: dict[str, str], context: dict[str, Any]
) -> Response | None:
    """Stop a card that needs 3-D Secure at Stripe's test challenge, as Checkout's modal does.

    The challenge posts the buyer's form back with `action=complete` (go on and pay) or
    `action=fail` (the page again, with Stripe's error, the session still open).
    """
    if not context["needs_card"] or context["method"] != "card":
        return None
    try:
        card = cards.by_number(form.get("card_number", ""))
    except StripeError:
        return None  # complete_session answers a bad number as Checkout does
    if card.behaviour != cards.AUTHENTICATE:
        return None
    answer = form.get("action")
    if answer == "complete":
        return None
    if answer == "fail":
        return render_page("checkout.html", 402, form=form, error=AUTHENTICATION_FAILED, **context)
    due = context["due_now"]
    return render_page(
        "three_d_secure.html",
        amount=format_amount(due, context["currency"]) if due else None,
        action=f"/checkout/{session['id']}",
        carried={key: value for key, value in form.items() if key != "action"},
    )


def _success_url(session: dict[str, Any]) -> str | None:
    url = session.get("success_url")
    return url.replace("{CHECKOUT_SESSION_ID}", session["id"]) if url else None
