"""PaymentIntents, Charges, Refunds and Disputes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stripesim import billing, cards, debits, payments
from stripesim.currency import ZERO_DECIMAL
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, as_int, one_of, paginate, render, required_int, update_metadata
from stripesim.pages import form_of, hosted_intent, message_page, render_page
from stripesim.payments import attach_payment_method, payment_method_param
from stripesim.registry import Ctx, list_route, page, retrieve_route, route, search_route
from stripesim.resources.payment_methods import confirm_setup_intent
from stripesim.state import Simulator

_MINIMUM = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50}
_OPEN_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action")


def _amount(params: dict[str, Any], currency: str) -> int:
    amount = required_int(params, "amount")
    minimum = _MINIMUM.get(currency, 1)
    if amount < minimum:
        shown = (
            f"{minimum} {currency}"
            if currency in ZERO_DECIMAL
            else f"{minimum // 100}.{minimum % 100:02d} {currency}"
        )
        raise StripeError(
            f"Amount must be at least {shown}", code="amount_too_small", param="amount"
        )
    return amount


def _confirm(ctx: Ctx, pi: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Confirm a PaymentIntent through the API: a decline answers 402 with the PaymentIntent."""
    now = ctx.now_for_customer(pi.get("customer"))
    off_session = as_bool(params, "off_session", False) or False
    outcome = payments.attempt(
        ctx,
        pi,
        now=now,
        off_session=off_session,
        billing=False,
        capture=pi["capture_method"] != "manual",
    )
    if outcome.status == "failed":
        assert outcome.error is not None
        raise outcome.error
    if outcome.status == "requires_action" and as_bool(params, "error_on_requires_action", False):
        pi["status"] = "requires_payment_method"
        pi["next_action"] = None
        raise cards.authentication_error()
    if (
        outcome.status == "succeeded"
        and pi.get("setup_future_usage")
        and pi.get("customer")
        and pi.get("payment_method")
    ):
        pm = ctx.account.get(pi["payment_method"], "payment_method")
        if not pm.get("customer"):
            attach_payment_method(ctx, pm, pi["customer"])
    return pi


@route("POST", "/v1/payment_intents", "PaymentIntentCreateParams")
def create_payment_intent(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("currency"):
        raise parameter_missing("currency")
    currency = str(params["currency"]).lower()
    amount = _amount(params, currency)
    customer_id = params.get("customer")
    if customer_id:
        ctx.account.get(customer_id, "customer", param="customer")
    pm_id = payment_method_param(ctx, params)
    confirm = as_bool(params, "confirm", False)
    if as_bool(params, "off_session", False) and not confirm:
        raise StripeError(
            "You can only specify `off_session` when `confirm` is true.", param="off_session"
        )
    auto = params.get("automatic_payment_methods")
    pi = payments.new_payment_intent(
        ctx,
        amount=amount,
        currency=currency,
        customer_id=customer_id,
        payment_method_id=pm_id,
        created=ctx.now_for_customer(customer_id),
        description=params.get("description"),
        metadata=params.get("metadata") or None,
        capture_method=one_of(
            params, "capture_method", ("automatic", "automatic_async", "manual"), "automatic_async"
        )
        or "automatic_async",
        application_fee_amount=as_int(params, "application_fee_amount"),
        automatic_payment_methods=not (isinstance(auto, dict) and auto.get("enabled") == "false"),
        setup_future_usage=one_of(params, "setup_future_usage", ("off_session", "on_session")),
        receipt_email=params.get("receipt_email"),
        statement_descriptor=params.get("statement_descriptor"),
    )
    verification = debits.verification_of(params.get("payment_method_options"))
    if verification:
        pi["_verification"] = verification
    if confirm:
        _confirm(ctx, pi, params)
    return pi


search_route("/v1/payment_intents/search", "payment_intent", "PaymentIntentSearchParams")


retrieve_route(
    "/v1/payment_intents/{pi_id}",
    "payment_intent",
    "PaymentIntentRetrieveParams",
    label="payment_intent",
)


@route("POST", "/v1/payment_intents/{pi_id}", "PaymentIntentUpdateParams")
def update_payment_intent(ctx: Ctx, params: dict[str, Any], pi_id: str) -> dict[str, Any]:
    pi = ctx.account.get(pi_id, "payment_intent", label="payment_intent")
    update_metadata(pi, params.get("metadata"))
    for key in ("description", "receipt_email", "statement_descriptor"):
        if key in params:
            pi[key] = params[key] or None
    money_keys = ("amount", "currency", "customer", "payment_method", "capture_method")
    if any(key in params for key in money_keys):
        if pi["status"] not in _OPEN_STATUSES:
            raise StripeError(
                f"This PaymentIntent's amount could not be updated because it has a status of "
                f"{pi['status']}.",
                code="payment_intent_unexpected_state",
            )
        if params.get("currency"):
            pi["currency"] = str(params["currency"]).lower()
        if "amount" in params:
            pi["amount"] = _amount(params, pi["currency"])
        if params.get("customer"):
            ctx.account.get(params["customer"], "customer", param="customer")
            pi["customer"] = params["customer"]
        if params.get("capture_method"):
            pi["capture_method"] = one_of(
                params, "capture_method", ("automatic", "automatic_async", "manual")
            )
        if params.get("payment_method"):
            pi["payment_method"] = payment_method_param(ctx, params)
            pi["status"] = "requires_confirmation"
    if "application_fee_amount" in params:
        pi["application_fee_amount"] = as_int(params, "application_fee_amount")
    return pi


@route("POST", "/v1/payment_intents/{pi_id}/confirm", "PaymentIntentConfirmParams")
def confirm_payment_intent(ctx: Ctx, params: dict[str, Any], pi_id: str) -> dict[str, Any]:
    pi = ctx.account.get(pi_id, "payment_intent", label="payment_intent")
    if pi["status"] not in _OPEN_STATUSES:
        raise StripeError(
            f"This PaymentIntent's status is {pi['status']}, but it must be one of "
            "requires_payment_method, requires_confirmation, requires_action to be confirmed.",
            code="payment_intent_unexpected_state",
        )
    if params.get("payment_method"):
        pi["payment_method"] = payment_method_param(ctx, params)
    if params.get("capture_method"):
        pi["capture_method"] = one_of(
            params, "capture_method", ("automatic", "automatic_async", "manual")
        )
    if not pi.get("payment_method"):
        raise StripeError(
            "You cannot confirm this PaymentIntent because it's missing a payment method. To "
            "confirm the PaymentIntent with a payment method, provide the `payment_method` param.",
            code="payment_intent_unexpected_state",
        )
    return _confirm(ctx, pi, params)


@route("POST", "/v1/payment_intents/{pi_id}/capture", "PaymentIntentCaptureParams")
def capture_payment_intent(ctx: Ctx, params: dict[str, Any], pi_id: str) -> dict[str, Any]:
    pi = ctx.account.get(pi_id, "payment_intent", label="payment_intent")
    update_metadata(pi, params.get("metadata"))
    if "application_fee_amount" in params:
        pi["application_fee_amount"] = as_int(params, "application_fee_amount")
    return payments.capture_payment_intent(
        ctx,
        pi,
        as_int(params, "amount_to_capture"),
        ctx.now_for_customer(pi.get("customer")),
    )


@route("POST", "/v1/payment_intents/{pi_id}/cancel", "PaymentIntentCancelParams")
def cancel_payment_intent(ctx: Ctx, params: dict[str, Any], pi_id: str) -> dict[str, Any]:
    pi = ctx.account.get(pi_id, "payment_intent", label="payment_intent")
    if pi["status"] not in (*_OPEN_STATUSES, "requires_capture", "processing"):
        raise StripeError(
            f"You cannot cancel this PaymentIntent because it has a status of {pi['status']}. "
            "Only a PaymentIntent with one of the following statuses may be canceled: "
            "requires_payment_method, requires_capture, requires_confirmation, requires_action, "
            "processing.",
            code="payment_intent_unexpected_state",
        )
    now = ctx.now_for_customer(pi.get("customer"))
    if pi["status"] == "requires_capture" and pi.get("latest_charge"):
        # Canceling releases the authorization: Stripe shows the uncaptured charge as refunded.
        charge = ctx.account.get(pi["latest_charge"], "charge")
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] = charge["amount"]
        charge["refunded"] = True
        ctx.emit("charge.refunded", charge, previous=previous, created=now)
    pi["status"] = "canceled"
    pi["canceled_at"] = now
    pi["amount_capturable"] = 0
    pi["next_action"] = None
    pi["cancellation_reason"] = one_of(
        params,
        "cancellation_reason",
        ("duplicate", "fraudulent", "requested_by_customer", "abandoned"),
    )
    ctx.emit("payment_intent.canceled", pi, created=now)
    return pi


list_route(
    "/v1/payment_intents", "payment_intent", "PaymentIntentListParams", filters=("customer",)
)


# -- Charges -------------------------------------------------------------------------------


search_route("/v1/charges/search", "charge", "ChargeSearchParams")


retrieve_route("/v1/charges/{charge_id}", "charge", "ChargeRetrieveParams")


@route("POST", "/v1/charges/{charge_id}", "ChargeUpdateParams")
def update_charge(ctx: Ctx, params: dict[str, Any], charge_id: str) -> dict[str, Any]:
    charge = ctx.account.get(charge_id, "charge")
    previous: dict[str, Any] = {}
    if "metadata" in params:
        previous["metadata"] = dict(charge["metadata"])
        update_metadata(charge, params["metadata"])
    for key in ("description", "receipt_email", "transfer_group"):
        if key in params and (params[key] or None) != charge.get(key):
            previous[key] = charge.get(key)
            charge[key] = params[key] or None
    if isinstance(params.get("fraud_details"), dict):
        previous["fraud_details"] = dict(charge["fraud_details"])
        charge["fraud_details"].update(params["fraud_details"])
    if params.get("customer") and not charge.get("customer"):
        ctx.account.get(params["customer"], "customer", param="customer")
        previous["customer"] = None
        charge["customer"] = params["customer"]
    ctx.emit_update("charge.updated", charge, previous)
    return charge


@route("POST", "/v1/charges/{charge_id}/capture", "ChargeCaptureParams")
def capture_charge(ctx: Ctx, params: dict[str, Any], charge_id: str) -> dict[str, Any]:
    charge = ctx.account.get(charge_id, "charge")
    pi = ctx.account.get(charge["payment_intent"], "payment_intent")
    payments.capture_payment_intent(
        ctx, pi, as_int(params, "amount"), ctx.now_for_customer(charge.get("customer"))
    )
    return charge


list_route(
    "/v1/charges",
    "charge",
    "ChargeListParams",
    filters=("customer", "payment_intent", "transfer_group"),
)


@route("GET", "/v1/charges/{charge_id}/refunds", "ChargeListRefundsParams")
def list_charge_refunds(ctx: Ctx, params: dict[str, Any], charge_id: str) -> dict[str, Any]:
    ctx.account.get(charge_id, "charge")
    return paginate(
        ctx.account,
        "refund",
        params,
        f"/v1/charges/{charge_id}/refunds",
        filters={"charge": charge_id},
    )


# -- Refunds -------------------------------------------------------------------------------


@route("POST", "/v1/refunds", "RefundCreateParams")
def create_refund(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    charge_id = params.get("charge")
    if not charge_id and params.get("payment_intent"):
        pi = ctx.account.get(
            params["payment_intent"],
            "payment_intent",
            param="payment_intent",
            label="payment_intent",
        )
        if pi["status"] != "succeeded" or not pi.get("latest_charge"):
            raise StripeError(
                f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                code="charge_not_refundable",
                param="payment_intent",
            )
        charge_id = pi["latest_charge"]
    if not charge_id:
        raise StripeError(
            "One of the following params should be provided for this request: payment_intent or "
            "charge.",
            code="parameter_missing",
        )
    return payments.refund(
        ctx,
        charge_id,
        as_int(params, "amount"),
        params.get("reason") or None,
        metadata=params.get("metadata") or None,
    )


retrieve_route("/v1/refunds/{refund_id}", "refund", "RefundRetrieveParams")


@route("POST", "/v1/refunds/{refund_id}", "RefundUpdateParams")
def update_refund(ctx: Ctx, params: dict[str, Any], refund_id: str) -> dict[str, Any]:
    refund = ctx.account.get(refund_id, "refund")
    if "metadata" in params:
        previous = {"metadata": dict(refund["metadata"])}
        update_metadata(refund, params["metadata"])
        now = ctx.now_for_customer(refund.get("customer"))
        charge = ctx.account.get(refund["charge"], "charge")
        payments.sync_charge_refunds(ctx, charge)
        ctx.emit("refund.updated", refund, previous=previous, created=now)
        ctx.emit("charge.refund.updated", refund, previous=previous, created=now)
    return refund


@route("POST", "/v1/refunds/{refund_id}/cancel", "RefundCancelParams")
def cancel_refund(ctx: Ctx, params: dict[str, Any], refund_id: str) -> dict[str, Any]:
    refund = ctx.account.get(refund_id, "refund")
    raise StripeError(
        f"Can't cancel refund {refund['id']} because it has a status of {refund['status']}. "
        "Only refunds with a status of requires_action can be canceled.",
    )


list_route("/v1/refunds", "refund", "RefundListParams", filters=("charge", "payment_intent"))


# -- Disputes ------------------------------------------------------------------------------


retrieve_route("/v1/disputes/{dispute_id}", "dispute", "DisputeRetrieveParams")


@route("POST", "/v1/disputes/{dispute_id}", "DisputeUpdateParams")
def update_dispute(ctx: Ctx, params: dict[str, Any], dispute_id: str) -> dict[str, Any]:
    """Stage or submit evidence; test values `winning_evidence` / `losing_evidence` decide."""
    dispute = ctx.account.get(dispute_id, "dispute")
    if dispute["status"] in ("won", "lost", "warning_closed"):
        raise StripeError(f"This dispute is already closed ({dispute['status']}).")
    charge = ctx.account.get(dispute["charge"], "charge")
    now = ctx.now_for_customer(charge.get("customer"))
    previous: dict[str, Any] = {}
    if "metadata" in params:
        previous["metadata"] = dict(dispute["metadata"])
        update_metadata(dispute, params["metadata"])
    evidence = params.get("evidence")
    if isinstance(evidence, dict):
        previous["evidence"] = render(dispute)["evidence"]
        for key, value in evidence.items():
            if key in payments.EVIDENCE_FIELDS:
                dispute["evidence"][key] = value or None
        dispute["evidence_details"]["has_evidence"] = any(
            dispute["evidence"].get(key) for key in payments.EVIDENCE_FIELDS
        )
    submit = as_bool(params, "submit", True)
    if submit and (isinstance(evidence, dict) or "submit" in params):
        previous["status"] = dispute["status"]
        dispute["evidence_details"]["submission_count"] += 1
        inquiry = dispute["status"].startswith("warning_")
        dispute["status"] = "warning_under_review" if inquiry else "under_review"
    if previous:
        ctx.emit("charge.dispute.updated", dispute, previous=previous, created=now)
    if dispute["status"] in ("under_review", "warning_under_review"):
        text = dispute["evidence"].get("uncategorized_text") or ""
        if "winning_evidence" in text:
            payments.close_dispute(ctx, dispute, "won", now)
        elif "losing_evidence" in text:
            payments.close_dispute(ctx, dispute, "lost", now)
    return dispute


@route("POST", "/v1/disputes/{dispute_id}/close", "DisputeCloseParams")
def close_dispute(ctx: Ctx, params: dict[str, Any], dispute_id: str) -> dict[str, Any]:
    """Accept the dispute: it is lost and the funds stay with the cardholder."""
    dispute = ctx.account.get(dispute_id, "dispute")
    if dispute["status"] in ("won", "lost", "warning_closed"):
        return dispute
    charge = ctx.account.get(dispute["charge"], "charge")
    return payments.close_dispute(
        ctx, dispute, "lost", ctx.now_for_customer(charge.get("customer"))
    )


list_route("/v1/disputes", "dispute", "DisputeListParams", filters=("charge", "payment_intent"))


# -- 3D Secure -------------------------------------------------------------------------------

_AUTH_FAILED = (
    "The provided PaymentMethod has failed authentication. You can provide payment_method_data "
    "or a new PaymentMethod to attempt to fulfill this PaymentIntent again."
)


def _authenticate_payment(ctx: Ctx, pi: dict[str, Any], succeed: bool) -> str:
    now = ctx.now_for_customer(pi.get("customer"))
    pm = ctx.account.get(pi["payment_method"], "payment_method")
    if not succeed:
        error = StripeError(
            _AUTH_FAILED,
            status=402,
            type="invalid_request_error",
            code="payment_intent_authentication_failure",
        )
        payments.fail_intent(ctx, pi, error, pm, now)
        return "Authentication failed."
    pi["_authenticated"] = True
    if pi.get("_invoice") or pi.get("setup_future_usage"):
        # Billing (and setup_future_usage) saves the authenticated card for off-session use.
        pm["_setup_authenticated"] = True
    outcome = payments.attempt(
        ctx, pi, now=now, off_session=False, billing=False, capture=pi["capture_method"] != "manual"
    )
    invoice = ctx.account.find(pi.get("_invoice"))
    if outcome.status == "succeeded" and invoice is not None and invoice.get("status") == "open":
        billing.mark_paid(ctx, invoice, now, None)
    return (
        "Authentication complete."
        if outcome.status == "succeeded"
        else (outcome.error.message if outcome.error else "The payment did not go through.")
    )


def _authenticate_setup(ctx: Ctx, seti: dict[str, Any], succeed: bool) -> str:
    now = ctx.now_for_customer(seti.get("customer"))
    pm = ctx.account.get(seti["payment_method"], "payment_method")
    if not succeed:
        error = StripeError(
            "The latest attempt to set up the payment method has failed because authentication "
            "failed.",
            status=402,
            code="setup_intent_authentication_failure",
        )
        payments.fail_intent(ctx, seti, error, pm, now)
        return "Authentication failed."
    seti["_authenticated"] = True
    pm["_setup_authenticated"] = True
    confirm_setup_intent(ctx, seti, now)
    return "Authentication complete."


@page("/3ds/{intent_id}", methods=("GET", "POST"))
async def three_d_secure_page(request: Request, sim: Simulator) -> Response:
    """Stripe's test 3D Secure challenge: complete or fail authentication of an intent."""
    intent_id = request.path_params["intent_id"]
    form = await form_of(request)
    with hosted_intent(
        sim,
        request,
        waiting=lambda intent: intent["status"] == "requires_action",
        unknown="There is nothing to authenticate here.",
        idle="Nothing to authenticate",
    ) as found:
        if isinstance(found, Response):
            return found
        ctx, intent = found
        kind = intent["object"]
        if request.method == "GET":
            amount = (
                payments.format_amount(intent["amount"], intent["currency"])
                if kind == "payment_intent"
                else None
            )
            return render_page("three_d_secure.html", intent=intent, amount=amount)
        succeed = form.get("action") == "complete"
        if kind == "payment_intent":
            message = _authenticate_payment(ctx, intent, succeed)
        else:
            message = _authenticate_setup(ctx, intent, succeed)
        # An invoice's payment leads back to its hosted page (paid, or still open to pay).
        invoice = ctx.account.find(intent.get("_invoice")) if kind == "payment_intent" else None
        back = invoice.get("hosted_invoice_url") if invoice is not None else None
        return message_page(200, message, f"{intent_id}: {intent['status']}", back)
