"""PaymentMethods (test cards, attach, detach) and SetupIntents."""

from __future__ import annotations

from typing import Any

from stripesim import cards, debits
from stripesim.debits import new_bank_payment_method
from stripesim.errors import StripeError, card_error, parameter_missing, resource_missing
from stripesim.lists import as_bool, one_of, paginate, render, update_metadata
from stripesim.payments import (
    attach_payment_method,
    client_secret,
    detach_payment_method,
    fail_intent,
    new_card_payment_method,
    payment_method_for,
    payment_method_param,
    require_authentication,
)
from stripesim.registry import Ctx, customer_retrieve_route, list_route, retrieve_route, route
from stripesim.state import new_id


def card_payment_method_from_params(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Create a card PaymentMethod from `type=card&card[...]` (a number or a `tok_*` token)."""
    if params.get("type") != "card":
        if not params.get("type"):
            raise parameter_missing("type")
        raise StripeError(
            f"stripesim supports only card PaymentMethods, not '{params['type']}'.",
            code="payment_method_unactivated",
            param="type",
        )
    card_params = params.get("card")
    if not isinstance(card_params, dict):
        raise parameter_missing("card")
    token = card_params.get("token")
    if token:
        spec = cards.BY_TOKEN.get(token)
        if spec is None:
            raise resource_missing("token", token, "card[token]")
        return new_card_payment_method(
            ctx,
            spec,
            billing_details=params.get("billing_details"),
            metadata=params.get("metadata") or None,
        )
    for key in ("number", "exp_month", "exp_year"):
        if not card_params.get(key):
            raise parameter_missing(f"card[{key}]")
    spec = cards.by_number(card_params["number"])
    try:
        exp_month, exp_year = int(card_params["exp_month"]), int(card_params["exp_year"])
    except ValueError:
        raise card_error(
            "Your card's expiration date is invalid.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        ) from None
    return new_card_payment_method(
        ctx,
        spec,
        exp_month=exp_month,
        exp_year=exp_year,
        cvc=card_params.get("cvc"),
        billing_details=params.get("billing_details"),
        metadata=params.get("metadata") or None,
    )


@route("POST", "/v1/payment_methods", "PaymentMethodCreateParams")
def create_payment_method(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("payment_method"):
        # Cloning a platform PaymentMethod onto a connected account (Connect).
        source = ctx.sim.platform.get(
            params["payment_method"],
            "payment_method",
            param="payment_method",
            label="PaymentMethod",
        )
        spec = cards.by_key(source.get("_test_card"))
        return new_card_payment_method(
            ctx,
            spec,
            exp_month=source["card"]["exp_month"],
            exp_year=source["card"]["exp_year"],
            billing_details=source["billing_details"],
        )
    if params.get("type") == "us_bank_account":
        return new_bank_payment_method(ctx, params)
    return card_payment_method_from_params(ctx, params)


@route("GET", "/v1/payment_methods/{pm_id}", "PaymentMethodRetrieveParams")
def retrieve_payment_method(ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    return payment_method_for(ctx, pm_id, param="id")


@route("POST", "/v1/payment_methods/{pm_id}", "PaymentMethodUpdateParams")
def update_payment_method(ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    pm = payment_method_for(ctx, pm_id, param="id")
    previous: dict[str, Any] = {}
    if "metadata" in params:
        previous["metadata"] = dict(pm["metadata"])
        update_metadata(pm, params["metadata"])
    if isinstance(params.get("billing_details"), dict):
        previous["billing_details"] = render(pm)["billing_details"]
        for key, value in params["billing_details"].items():
            if key == "address" and isinstance(value, dict):
                pm["billing_details"]["address"].update({k: v or None for k, v in value.items()})
            elif key in pm["billing_details"]:
                pm["billing_details"][key] = value or None
    if isinstance(params.get("card"), dict):
        previous["card"] = render(pm)["card"]
        for key in ("exp_month", "exp_year"):
            if params["card"].get(key):
                pm["card"][key] = int(params["card"][key])
    if params.get("allow_redisplay"):
        previous["allow_redisplay"] = pm["allow_redisplay"]
        pm["allow_redisplay"] = one_of(
            params, "allow_redisplay", ("always", "limited", "unspecified")
        )
    ctx.emit_update("payment_method.updated", pm, previous)
    return pm


@route("POST", "/v1/payment_methods/{pm_id}/attach", "PaymentMethodAttachParams")
def attach(ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    if not params.get("customer"):
        raise parameter_missing("customer")
    pm = payment_method_for(ctx, pm_id, param="payment_method")
    return attach_payment_method(ctx, pm, params["customer"])


@route("POST", "/v1/payment_methods/{pm_id}/detach", "PaymentMethodDetachParams")
def detach(ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    pm = payment_method_for(ctx, pm_id, param="payment_method")
    return detach_payment_method(ctx, pm)


def _list_for_customer(
    ctx: Ctx, customer_id: str | None, params: dict[str, Any], url: str
) -> dict[str, Any]:
    kind = params.get("type")
    return paginate(
        ctx.account,
        "payment_method",
        params,
        url,
        filters={"customer": customer_id, "type": kind},
    )


@route("GET", "/v1/payment_methods", "PaymentMethodListParams")
def list_payment_methods(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer_id = params.get("customer")
    if customer_id:
        ctx.account.get(customer_id, "customer", param="customer")
    return _list_for_customer(ctx, customer_id, params, "/v1/payment_methods")


@route("GET", "/v1/customers/{customer_id}/payment_methods", "CustomerListPaymentMethodsParams")
def list_customer_payment_methods(
    ctx: Ctx, params: dict[str, Any], customer_id: str
) -> dict[str, Any]:
    ctx.account.get(customer_id, "customer")
    return _list_for_customer(
        ctx, customer_id, params, f"/v1/customers/{customer_id}/payment_methods"
    )


customer_retrieve_route(
    "/v1/customers/{customer_id}/payment_methods/{pm_id}",
    "payment_method",
    "CustomerRetrievePaymentMethodParams",
    label="PaymentMethod",
)


# -- SetupIntents --------------------------------------------------------------------------


def new_setup_intent(
    ctx: Ctx,
    *,
    customer_id: str | None,
    payment_method_id: str | None,
    created: int,
    usage: str = "off_session",
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a SetupIntent and emit `setup_intent.created`."""
    seti = ctx.build(
        "setup_intent",
        "seti",
        created=created,
        customer=customer_id,
        description=description,
        payment_method=payment_method_id,
        payment_method_options={
            "card": {
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        status="requires_confirmation" if payment_method_id else "requires_payment_method",
        usage=usage,
    )
    seti["client_secret"] = client_secret(seti["id"])
    if metadata:
        update_metadata(seti, metadata)
    ctx.account.add(seti)
    ctx.emit("setup_intent.created", seti, created=created)
    return seti


def confirm_setup_intent(ctx: Ctx, seti: dict[str, Any], now: int) -> dict[str, Any]:
    """Run the card check for `seti`'s PaymentMethod; a declined card raises the card error."""
    if seti["status"] not in (
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ):
        raise StripeError(
            "You cannot confirm this SetupIntent because it has already succeeded"
            if seti["status"] == "succeeded"
            else "You cannot confirm this SetupIntent because it has a status of "
            f"{seti['status']}.",
            code="setup_intent_unexpected_state",
        )
    if not seti.get("payment_method"):
        raise StripeError(
            "You cannot confirm this SetupIntent because it's missing a payment method. Update the "
            "SetupIntent with a payment method and then confirm it again.",
            code="setup_intent_unexpected_state",
        )
    pm = ctx.account.get(seti["payment_method"], "payment_method", param="payment_method")
    seti["latest_attempt"] = new_id("setatt")
    if pm.get("type") == "us_bank_account":
        return _confirm_bank_setup(ctx, seti, pm, now)
    spec = cards.by_key(pm.get("_test_card"))
    if spec.behaviour == cards.DECLINE:
        error = spec.decline()
        fail_intent(ctx, seti, error, pm, now)
        error.extra["setup_intent"] = render(seti)
        raise error
    if spec.behaviour == cards.AUTHENTICATE and not seti.get("_authenticated"):
        require_authentication(ctx, seti)
        ctx.emit("setup_intent.requires_action", seti, created=now)
        return seti
    return _setup_succeeded(ctx, seti, pm, now)


def _setup_succeeded(
    ctx: Ctx, seti: dict[str, Any], pm: dict[str, Any], now: int
) -> dict[str, Any]:
    """The setup is done: the PaymentMethod attached to its customer, `setup_intent.succeeded`."""
    if seti.get("customer") and pm.get("customer") != seti["customer"]:
        attach_payment_method(ctx, pm, seti["customer"])
    seti["status"] = "succeeded"
    seti["next_action"] = None
    seti["last_setup_error"] = None
    ctx.emit("setup_intent.succeeded", seti, created=now)
    return seti


def _confirm_bank_setup(
    ctx: Ctx, seti: dict[str, Any], pm: dict[str, Any], now: int
) -> dict[str, Any]:
    """Set up a bank account: its mandate, after micro-deposits when the setup asks for them."""
    if debits.needs_verification(pm, seti):
        debits.request_microdeposits(ctx, seti, pm, now)
        return seti
    seti["mandate"] = debits.mandate_for(ctx, pm, now)["id"]
    return _setup_succeeded(ctx, seti, pm, now)


@route("POST", "/v1/setup_intents", "SetupIntentCreateParams")
def create_setup_intent(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer_id = params.get("customer")
    if customer_id:
        ctx.account.get(customer_id, "customer", param="customer")
    now = ctx.now_for_customer(customer_id)
    seti = new_setup_intent(
        ctx,
        customer_id=customer_id,
        payment_method_id=payment_method_param(ctx, params),
        created=now,
        usage=one_of(params, "usage", ("off_session", "on_session"), "off_session")
        or "off_session",
        description=params.get("description"),
        metadata=params.get("metadata"),
    )
    verification = debits.verification_of(params.get("payment_method_options"))
    if verification:
        seti["_verification"] = verification
    if as_bool(params, "confirm", False):
        confirm_setup_intent(ctx, seti, now)
    return seti


retrieve_route(
    "/v1/setup_intents/{seti_id}", "setup_intent", "SetupIntentRetrieveParams", label="setupintent"
)


@route("POST", "/v1/setup_intents/{seti_id}", "SetupIntentUpdateParams")
def update_setup_intent(ctx: Ctx, params: dict[str, Any], seti_id: str) -> dict[str, Any]:
    seti = ctx.account.get(seti_id, "setup_intent", label="setupintent")
    update_metadata(seti, params.get("metadata"))
    if "description" in params:
        seti["description"] = params["description"] or None
    if params.get("customer"):
        ctx.account.get(params["customer"], "customer", param="customer")
        seti["customer"] = params["customer"]
    if params.get("payment_method"):
        if seti["status"] == "succeeded":
            raise StripeError(
                "You cannot update this SetupIntent because it has already succeeded.",
                code="setup_intent_unexpected_state",
            )
        seti["payment_method"] = payment_method_param(ctx, params)
        seti["status"] = "requires_confirmation"
    return seti


@route("POST", "/v1/setup_intents/{seti_id}/confirm", "SetupIntentConfirmParams")
def confirm_setup_intent_route(ctx: Ctx, params: dict[str, Any], seti_id: str) -> dict[str, Any]:
    seti = ctx.account.get(seti_id, "setup_intent", label="setupintent")
    if params.get("payment_method"):
        seti["payment_method"] = payment_method_param(ctx, params)
    return confirm_setup_intent(ctx, seti, ctx.now_for_customer(seti.get("customer")))


@route("POST", "/v1/setup_intents/{seti_id}/cancel", "SetupIntentCancelParams")
def cancel_setup_intent(ctx: Ctx, params: dict[str, Any], seti_id: str) -> dict[str, Any]:
    seti = ctx.account.get(seti_id, "setup_intent", label="setupintent")
    if seti["status"] in ("succeeded", "canceled"):
        raise StripeError(
            f"You cannot cancel this SetupIntent because it has a status of {seti['status']}.",
            code="setup_intent_unexpected_state",
        )
    seti["status"] = "canceled"
    seti["cancellation_reason"] = one_of(
        params, "cancellation_reason", ("abandoned", "duplicate", "requested_by_customer")
    )
    seti["next_action"] = None
    ctx.emit("setup_intent.canceled", seti, created=ctx.now_for_customer(seti.get("customer")))
    return seti


list_route(
    "/v1/setup_intents",
    "setup_intent",
    "SetupIntentListParams",
    filters=("customer", "payment_method"),
)
