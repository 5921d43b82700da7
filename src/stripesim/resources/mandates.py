"""Mandates and micro-deposit verification of bank accounts: the API routes and Stripe's hosted
verification page (`next_action.verify_with_microdeposits.hosted_verification_url`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stripesim import debits, payments
from stripesim.errors import StripeError
from stripesim.lists import render
from stripesim.pages import form_of, hosted_intent, message_page, render_page
from stripesim.registry import Ctx, page, retrieve_route, route
from stripesim.resources.payment_methods import confirm_setup_intent
from stripesim.state import Simulator, snapshot

retrieve_route("/v1/mandates/{mandate_id}", "mandate", "MandateRetrieveParams", label="mandate")


def verify(ctx: Ctx, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Check the customer's micro-deposits; verified, the payment or setup goes on (a debit
    then processes); after the last failed attempt it fails and the mandate is inactive."""
    now = ctx.now_for_customer(intent.get("customer"))
    pm = ctx.account.get(intent["payment_method"], "payment_method")
    verified = debits.check_microdeposits(intent, params)
    debits.settle_verification(ctx, intent, pm, verified, now)
    if verified:
        if intent["object"] == "setup_intent":
            confirm_setup_intent(ctx, intent, now)
        else:
            payments.start_debit(ctx, intent, pm, now)
        return intent
    error = debits.verification_failed_error()
    payments.fail_intent(ctx, intent, error, pm, now)
    error.extra[intent["object"]] = render(intent)
    raise error


@route(
    "POST",
    "/v1/payment_intents/{pi_id}/verify_microdeposits",
    "PaymentIntentVerifyMicrodepositsParams",
)
def verify_payment_intent(ctx: Ctx, params: dict[str, Any], pi_id: str) -> dict[str, Any]:
    return verify(ctx, ctx.account.get(pi_id, "payment_intent", label="payment_intent"), params)


@route(
    "POST",
    "/v1/setup_intents/{seti_id}/verify_microdeposits",
    "SetupIntentVerifyMicrodepositsParams",
)
def verify_setup_intent(ctx: Ctx, params: dict[str, Any], seti_id: str) -> dict[str, Any]:
    return verify(ctx, ctx.account.get(seti_id, "setup_intent", label="setupintent"), params)


def _params_from(form: dict[str, str]) -> dict[str, Any]:
    if form.get("descriptor_code", "").strip():
        return {"descriptor_code": form["descriptor_code"]}
    return {"amounts": [form.get("amount_1", "").strip(), form.get("amount_2", "").strip()]}


@page("/microdeposits/{intent_id}", methods=("GET", "POST"))
async def microdeposits_page(request: Request, sim: Simulator) -> Response:
    """Stripe's hosted verification page: the customer types the two amounts (cents) or the
    descriptor code their bank statement shows."""
    intent_id = request.path_params["intent_id"]
    form = await form_of(request)
    with hosted_intent(
        sim,
        request,
        waiting=debits.waiting_for_microdeposits,
        unknown="There is no bank account to verify here.",
        idle="Nothing to verify",
    ) as found:
        if isinstance(found, Response):
            return found
        ctx, intent = found
        error = None
        if request.method == "POST":
            try:
                verify(ctx, intent, _params_from(form))
            except StripeError as failure:
                error = failure
        shown_intent = snapshot(intent)
        invoice = ctx.account.find(intent.get("_invoice"))
        back = invoice.get("hosted_invoice_url") if invoice is not None else None
    if request.method == "POST" and (
        error is None or not debits.waiting_for_microdeposits(shown_intent)
    ):
        if error is None:
            return message_page(
                200, "Bank account verified.", f"{intent_id}: {shown_intent['status']}", back
            )
        return message_page(200, "Verification failed.", error.message, back)
    return render_page(
        "microdeposits.html",
        400 if error else 200,
        intent=shown_intent,
        error=error.message if error else None,
        form=form,
    )
