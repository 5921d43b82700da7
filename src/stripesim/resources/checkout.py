"""Checkout Sessions (subscription, payment and setup mode) and their hosted payment page."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from stripesim import billing, cards, objects, payments
from stripesim.catalog import build_price, metered_rate, price_amount, public_view
from stripesim.currency import format_amount
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, as_int, one_of, paginate, render, update_metadata
from stripesim.pages import (
    card_from_form,
    form_of,
    hosted,
    message_page,
    render_page,
)
from stripesim.payment_settings import read_method_types
from stripesim.registry import Ctx, page, route
from stripesim.resources.customers import create_customer
from stripesim.resources.payment_methods import confirm_setup_intent, new_setup_intent
from stripesim.state import Account, Simulator, new_id

DEFAULT_LIFETIME = 24 * 3600
_MODES = ("payment", "setup", "subscription")


# -- sessions --------------------------------------------------------------------------------


def _line_items(ctx: Ctx, raw: Any, mode: str) -> list[dict[str, Any]]:
    if raw in (None, "", []):
        if mode == "setup":
            return []
        raise StripeError(
            f"`line_items` is required in `{mode}` mode.",
            code="parameter_missing",
            param="line_items",
        )
    if mode == "setup":
        raise StripeError("You cannot pass `line_items` in `setup` mode.", param="line_items")
    if not isinstance(raw, list):
        raise StripeError("Invalid array", param="line_items")
    items = []
    for index, line in enumerate(raw):
        prefix = f"line_items[{index}]"
        if line.get("price"):
            price = ctx.account.get(line["price"], "price", param=f"{prefix}[price]")
            if not price.get("active", True):
                raise StripeError(
                    "The price specified is inactive. This field only accepts active prices.",
                    param=f"{prefix}[price]",
                )
        elif isinstance(line.get("price_data"), dict):
            price = build_price(ctx, line["price_data"], param_prefix=f"{prefix}[price_data]")
        else:
            raise parameter_missing(f"{prefix}[price]")
        recurring = price.get("recurring")
        if mode == "payment" and recurring:
            raise StripeError(
                "You specified `payment` mode but passed a recurring price. Either switch to "
                "`subscription` mode or use only one-time prices.",
                param=f"{prefix}[price]",
            )
        metered = bool(recurring and recurring.get("usage_type") == "metered")
        quantity = None if metered else as_int(line, "quantity", 1, param=f"{prefix}[quantity]")
        if quantity is not None and quantity < 1:
            raise StripeError(
                "Quantity must be at least 1.",
                code="parameter_invalid_integer",
                param=f"{prefix}[quantity]",
            )
        amount = (
            0
            if metered
            else int(price_amount(price, quantity or 1).quantize(Decimal(1), ROUND_HALF_UP))
        )
        product = ctx.account.find(price["product"]) or {}
        item = objects.new("item")
        item.update(
            id=new_id("li"),
            amount_subtotal=amount,
            amount_total=amount,
            currency=price["currency"],
            description=product.get("name") or price.get("nickname"),
            price=public_view(render(price)),
            quantity=quantity,
            metadata=dict(line.get("metadata") or {}),
        )
        items.append(item)
    if mode == "subscription" and not any(item["price"].get("recurring") for item in items):
        raise StripeError(
            "You must provide at least one recurring price in `subscription` mode when using "
            "prices.",
            param="line_items",
        )
    currencies = {item["currency"] for item in items}
    if len(currencies) > 1:
        raise StripeError(
            "All prices on a Checkout Session must have the same currency.", param="line_items"
        )
    return items


def _trial_days(session: dict[str, Any]) -> int | None:
    data = session.get("_subscription_data") or {}
    days = as_int(data, "trial_period_days", param="subscription_data[trial_period_days]")
    if days:
        return days
    for item in session.get("_line_items") or []:
        recurring = item["price"].get("recurring") or {}
        if recurring.get("trial_period_days"):
            return int(recurring["trial_period_days"])
    return None


def _has_trial(session: dict[str, Any]) -> bool:
    data = session.get("_subscription_data") or {}
    return bool(_trial_days(session) or data.get("trial_end"))


def _subtotal_now(session: dict[str, Any]) -> int:
    if session["mode"] == "setup" or (session["mode"] == "subscription" and _has_trial(session)):
        return 0
    return sum(item["amount_total"] for item in session.get("_line_items") or [])


def _due_now(session: dict[str, Any]) -> int:
    return max(0, _subtotal_now(session) - int(session.get("_discount_amount") or 0))


def _check_discounts(
    ctx: Ctx, raw: Any, currency: str | None, subtotal: int, customer_id: str | None, now: int
) -> int:
    """Validate `discounts[i][coupon|promotion_code]`; return what they take off `subtotal`."""
    if raw in (None, ""):
        return 0
    if not isinstance(raw, list) or len(raw) > 1:
        raise StripeError(
            "You may only specify one discount on a Checkout Session.", param="discounts"
        )
    off = 0
    for index, entry in enumerate(raw):
        if entry.get("promotion_code"):
            promo = billing.redeemable_promotion_code(
                ctx,
                entry["promotion_code"],
                f"discounts[{index}][promotion_code]",
                now,
                customer_id,
                amount=subtotal,
                currency=currency,
            )
            entry = {**entry, "coupon": promo["promotion"]["coupon"]}
        if not entry.get("coupon"):
            raise parameter_missing(f"discounts[{index}][coupon]")
        coupon = ctx.account.get(entry["coupon"], "coupon", param=f"discounts[{index}][coupon]")
        if not coupon.get("valid", True):
            raise StripeError(
                f"Coupon expired: {coupon['id']}", param=f"discounts[{index}][coupon]"
            )
        if coupon.get("percent_off") is not None:
            share = Decimal(str(coupon["percent_off"])) * subtotal / 100
            off += int(share.quantize(Decimal(1), ROUND_HALF_UP))
        elif coupon.get("amount_off") is not None:
            amount_off = billing.coupon_amount_off(coupon, currency or "")
            if amount_off is None:
                raise StripeError(
                    f"The coupon currency ({coupon.get('currency')}) does not match the Checkout "
                    f"Session's currency ({currency}).",
                    param=f"discounts[{index}][coupon]",
                )
            off += amount_off
    return min(off, subtotal)


def _set_discounts(
    ctx: Ctx, session: dict[str, Any], raw: Any, customer_id: str | None, now: int
) -> None:
    """Check the session's discounts and set its totals (and `discounts`) from them."""
    subtotal = _subtotal_now(session)
    discount = _check_discounts(ctx, raw, session.get("currency"), subtotal, customer_id, now)
    session["_discounts"] = raw or []
    session["_discount_amount"] = discount
    session["amount_subtotal"] = subtotal
    session["amount_total"] = subtotal - discount
    session["total_details"] = {"amount_discount": discount, "amount_shipping": 0, "amount_tax": 0}
    if isinstance(raw, list):
        session["discounts"] = [
            {
                "coupon": d.get("coupon")
                or ctx.account.get(d["promotion_code"], "promotion_code")["promotion"]["coupon"],
                "promotion_code": d.get("promotion_code") or None,
            }
            for d in raw
        ]


def apply_promotion_code(ctx: Ctx, session: dict[str, Any], code: str) -> None:
    """Take a code the buyer typed on the page (`allow_promotion_codes`), as Checkout does."""
    now = ctx.now_for_customer(session.get("customer"))
    typed = code.strip().upper()
    found = next(
        (
            promo
            for promo in ctx.account.where("promotion_code")
            if promo["active"] and promo["code"].upper() == typed
        ),
        None,
    )
    if not session.get("allow_promotion_codes") or not typed or found is None:
        raise CheckoutDeclined(StripeError("This code is invalid.", param="promotion_code"))
    try:
        raw = [{"promotion_code": found["id"]}]
        _set_discounts(ctx, session, raw, session.get("customer"), now)
    except StripeError as refused:
        raise CheckoutDeclined(refused) from None


# How the hosted page names the payment method types it lists.
METHOD_NAMES = {
    "card": "a card",
    "us_bank_account": "a US bank account (ACH Direct Debit)",
    "customer_balance": "a bank transfer",
}


def _takes_cards(session: dict[str, Any]) -> bool:
    """Return whether the session accepts cards (`payment_method_types`)."""
    return "card" in (session.get("payment_method_types") or ["card"])


def _other_methods(session: dict[str, Any]) -> list[str]:
    return [kind for kind in session.get("payment_method_types") or [] if kind != "card"]


def _needs_card(session: dict[str, Any]) -> bool:
    return not (
        session.get("payment_method_collection") == "if_required" and _due_now(session) == 0
    )


@route("POST", "/v1/checkout/sessions", "checkout.SessionCreateParams")
def create_session(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("mode"):
        raise parameter_missing("mode")
    mode = one_of(params, "mode", _MODES)
    assert mode is not None
    customer_id = params.get("customer")
    customer = None
    if customer_id:
        customer = ctx.account.get(customer_id, "customer", param="customer")
        if params.get("customer_email"):
            raise StripeError(
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )
    if params.get("ui_mode") not in (None, "", "hosted_page"):
        raise StripeError("stripesim serves only the hosted Checkout page.", param="ui_mode")
    now = ctx.now_for_customer(customer_id)
    expires_at = as_int(params, "expires_at", now + DEFAULT_LIFETIME)
    assert expires_at is not None
    if not now + 1800 <= expires_at <= now + DEFAULT_LIFETIME:
        raise StripeError(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout "
            "Session creation.",
            param="expires_at",
        )
    items = _line_items(ctx, params.get("line_items"), mode)
    currency = params.get("currency") or (items[0]["currency"] if items else None) or None
    if currency:
        currency = str(currency).lower()
    elif mode == "setup":
        # With dynamic payment methods Stripe needs the currency to pick them in setup mode.
        raise parameter_missing("currency")
    subscription_data = params.get("subscription_data") or {}
    if subscription_data and mode != "subscription":
        raise StripeError(
            "You can only specify `subscription_data` in `subscription` mode.",
            param="subscription_data",
        )
    collection = one_of(params, "payment_method_collection", ("always", "if_required"))
    if collection and mode != "subscription":
        raise StripeError(
            "`payment_method_collection` can only be set in `subscription` mode.",
            param="payment_method_collection",
        )
    customer_creation = one_of(params, "customer_creation", ("always", "if_required"))
    if customer_creation and mode != "payment":
        raise StripeError(
            "`customer_creation` can only be used in `payment` mode.", param="customer_creation"
        )
    if customer_creation and customer_id:
        raise StripeError(
            "You may only specify one of these parameters: customer, customer_creation.",
            param="customer_creation",
        )
    if as_bool(params.get("invoice_creation") or {}, "enabled", False):
        raise StripeError(
            "stripesim does not simulate `invoice_creation` for payment-mode sessions yet.",
            param="invoice_creation[enabled]",
        )
    automatic_tax = as_bool(params.get("automatic_tax") or {}, "enabled", False)
    method_types = read_method_types(
        params.get("allowed_payment_method_types"), "allowed_payment_method_types"
    )
    session_id = "cs_test_" + new_id("x", 58)[2:]
    email = params.get("customer_email") or (customer or {}).get("email")
    session = ctx.build(
        "checkout.session",
        "cs_test",
        id=session_id,
        created=now,
        allow_promotion_codes=as_bool(params, "allow_promotion_codes"),
        automatic_tax={
            "enabled": bool(automatic_tax),
            "liability": {"type": "self"} if automatic_tax else None,
            "status": "complete" if automatic_tax else None,
            "provider": "stripe" if automatic_tax else None,
        },
        billing_address_collection=params.get("billing_address_collection") or None,
        cancel_url=params.get("cancel_url") or None,
        client_reference_id=params.get("client_reference_id") or None,
        currency=currency,
        custom_text={
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        customer=customer_id,
        customer_creation=None
        if customer_id
        else (customer_creation or ("if_required" if mode == "payment" else "always")),
        customer_details={
            "address": None,
            "email": email,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": None,
            "business_name": None,
            "individual_name": None,
        }
        if email
        else None,
        customer_email=params.get("customer_email") or None,
        expires_at=expires_at,
        invoice_creation={
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        }
        if mode == "payment"
        else None,
        locale=params.get("locale") or None,
        mode=mode,
        payment_method_collection=collection or "always",
        payment_method_options={"card": {"request_three_d_secure": "automatic"}},
        payment_method_types=method_types or ["card"],
        _method_types_given=method_types is not None,
        payment_status="no_payment_required" if mode == "setup" else "unpaid",
        submit_type=params.get("submit_type") or None,
        success_url=params.get("success_url") or None,
        url=f"{ctx.base_url}/checkout/{session_id}",
        adaptive_pricing={"enabled": False},
        _account=ctx.account.id,
        _line_items=items,
        _subscription_data=subscription_data,
        _payment_intent_data=params.get("payment_intent_data") or {},
        _setup_intent_data=params.get("setup_intent_data") or {},
        _discounts=params.get("discounts") or [],
    )
    if mode != "setup":
        _set_discounts(ctx, session, params.get("discounts"), customer_id, now)
    elif params.get("discounts"):
        raise StripeError("You cannot pass `discounts` in `setup` mode.", param="discounts")
    update_metadata(session, params.get("metadata"))
    ctx.account.add(session)
    if expire_due_sessions not in ctx.sim.time_hooks:
        ctx.sim.time_hooks.append(expire_due_sessions)
    return session


def expire_session(ctx: Ctx, session: dict[str, Any], now: int) -> None:
    session["status"] = "expired"
    session["url"] = None
    ctx.emit("checkout.session.expired", session, created=now)


def _lazy_expire(ctx: Ctx, session: dict[str, Any]) -> dict[str, Any]:
    if session["status"] == "open":
        now = ctx.now_for_customer(session.get("customer"))
        if now >= session["expires_at"]:
            expire_session(ctx, session, session["expires_at"])
    return session


def expire_due_sessions(
    sim: Simulator, account: Account, clock_id: str | None, target: int
) -> None:
    """Time hook: open sessions past `expires_at` (on this clock) expire."""
    ctx = Ctx(sim, account, None, None, sim.base_url)  # type: ignore[arg-type]
    for session in account.where("checkout.session", status="open"):
        if session["expires_at"] > target:
            continue
        if sim.clock_of(account, session.get("customer")) != clock_id:
            continue
        expire_session(ctx, session, session["expires_at"])


def _with_line_items(session: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if "line_items" not in (params.get("expand") or []):
        return session
    return {**session, "line_items": _line_item_list(session, {})}


def _line_item_list(session: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    items = list(session.get("_line_items") or [])
    limit = as_int(params, "limit", 10) or 10
    ids = [item["id"] for item in items]
    start = 0
    if params.get("starting_after") in ids:
        start = ids.index(params["starting_after"]) + 1
    end = start + limit
    if params.get("ending_before") in ids:
        end = ids.index(params["ending_before"])
        start = max(0, end - limit)
    page_items = items[start:end]
    return {
        "object": "list",
        "data": page_items,
        "has_more": end < len(items) if not params.get("ending_before") else start > 0,
        "url": f"/v1/checkout/sessions/{session['id']}/line_items",
    }


def _session(ctx: Ctx, session_id: str) -> dict[str, Any]:
    session = ctx.account.get(session_id, "checkout.session", label="checkout.session")
    return _lazy_expire(ctx, session)


@route("GET", "/v1/checkout/sessions/{session_id}", "checkout.SessionRetrieveParams")
def retrieve_session(ctx: Ctx, params: dict[str, Any], session_id: str) -> dict[str, Any]:
    return _with_line_items(_session(ctx, session_id), params)


@route("POST", "/v1/checkout/sessions/{session_id}", "checkout.SessionUpdateParams")
def update_session(ctx: Ctx, params: dict[str, Any], session_id: str) -> dict[str, Any]:
    session = _session(ctx, session_id)
    if "metadata" in params:
        update_metadata(session, params["metadata"])
    return _with_line_items(session, params)


@route(
    "GET",
    "/v1/checkout/sessions/{session_id}/line_items",
    "checkout.SessionListLineItemsParams",
)
def list_line_items(ctx: Ctx, params: dict[str, Any], session_id: str) -> dict[str, Any]:
    return _line_item_list(_session(ctx, session_id), params)


@route("POST", "/v1/checkout/sessions/{session_id}/expire", "checkout.SessionExpireParams")
def expire(ctx: Ctx, params: dict[str, Any], session_id: str) -> dict[str, Any]:
    session = _session(ctx, session_id)
    if session["status"] != "open":
        raise StripeError(
            f"This Checkout Session is not in an expireable state (status: {session['status']}). "
            'Only Checkout Sessions with a status in ["open"] can be expired.'
        )
    expire_session(ctx, session, ctx.now_for_customer(session.get("customer")))
    return session


@route("GET", "/v1/checkout/sessions", "checkout.SessionListParams")
def list_sessions(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    for session in ctx.account.where("checkout.session", status="open"):
        _lazy_expire(ctx, session)
    filters = {
        key: params.get(key) or None
        for key in ("customer", "payment_intent", "subscription", "status", "payment_link")
    }
    email = (params.get("customer_details") or {}).get("email")
    return paginate(
        ctx.account,
        "checkout.session",
        params,
        "/v1/checkout/sessions",
        filters=filters,
        where=lambda s: email is None or (s.get("customer_details") or {}).get("email") == email,
    )


# -- completing a session ------------------------------------------------------------------


class CheckoutDeclined(Exception):
    """The buyer's payment did not go through; the page shows `error` and stays open."""

    def __init__(self, error: StripeError) -> None:
        super().__init__(error.message)
        self.error = error


def _customer_for(
    ctx: Ctx, session: dict[str, Any], email: str | None, pm: dict[str, Any] | None
) -> str | None:
    if session.get("customer"):
        return str(session["customer"])
    if session["mode"] == "payment" and session.get("customer_creation") != "always":
        return None
    params = {"email": email} if email else {}
    name = (pm or {}).get("billing_details", {}).get("name")
    if name:
        params["name"] = name
    customer = create_customer(ctx, params)
    return str(customer["id"])


def _prepare_card(ctx: Ctx, pm: dict[str, Any]) -> None:
    """The buyer completes any 3D Secure challenge on the page, as in Stripe's test modal."""
    spec = cards.by_key(pm.get("_test_card"))
    if spec.behaviour == cards.AUTHENTICATE:
        pm["_authenticate_next"] = True
        # Checkout sets the card up for the subscription's future off-session payments.
        pm["_setup_authenticated"] = True


def complete_session(ctx: Ctx, session: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """Pay or set up as the buyer asked; raise CheckoutDeclined (leaving the session open)."""
    now = ctx.now_for_customer(session.get("customer"))
    email = (form.get("email") or "").strip() or session.get("customer_email")
    if not session.get("customer") and not email and session["mode"] != "setup":
        raise CheckoutDeclined(StripeError("Your email is incomplete.", param="email"))
    pm = None
    if _needs_card(session):
        if not _takes_cards(session):
            raise CheckoutDeclined(
                StripeError(
                    "Cards cannot pay for this purchase. Pay with "
                    + " or ".join(METHOD_NAMES.get(kind, kind) for kind in _other_methods(session))
                    + ".",
                    param="allowed_payment_method_types",
                )
            )
        try:
            pm = card_from_form(ctx, form, created=now)
        except StripeError as error:
            raise CheckoutDeclined(error) from None
        spec = cards.by_key(pm.get("_test_card"))
        if spec.behaviour == cards.DECLINE:
            raise CheckoutDeclined(spec.decline())
        if spec.behaviour == cards.DECLINE_AFTER_ATTACH and _due_now(session) > 0:
            # Checkout confirms the first payment before it creates the subscription.
            raise CheckoutDeclined(spec.decline())
    if session["mode"] == "subscription":
        _complete_subscription(ctx, session, pm, email, now)
    elif session["mode"] == "payment":
        _complete_payment(ctx, session, pm, email, now)
    else:
        _complete_setup(ctx, session, pm, email, now)
    customer_id = session.get("customer")
    customer = ctx.account.find(customer_id) if customer_id else None
    session["customer_details"] = {
        "address": None,
        "email": (customer or {}).get("email") or email,
        "name": (pm or {}).get("billing_details", {}).get("name"),
        "phone": None,
        "tax_exempt": (customer or {}).get("tax_exempt", "none"),
        "tax_ids": [],
        "business_name": None,
        "individual_name": None,
    }
    session["status"] = "complete"
    session["url"] = None
    ctx.emit("checkout.session.completed", session, created=ctx.now_for_customer(customer_id))
    return session


def _complete_subscription(
    ctx: Ctx, session: dict[str, Any], pm: dict[str, Any] | None, email: str | None, now: int
) -> None:
    customer_id = _customer_for(ctx, session, email, pm)
    assert customer_id is not None
    if pm is not None:
        try:
            payments.attach_payment_method(ctx, pm, customer_id)
        except StripeError as error:
            raise CheckoutDeclined(error) from None
        _prepare_card(ctx, pm)
    data = session.get("_subscription_data") or {}
    items: list[dict[str, Any]] = []
    one_time: list[dict[str, Any]] = []
    for item in session["_line_items"]:
        entry: dict[str, Any] = {"price": item["price"]["id"]}
        if item["quantity"] is not None:
            entry["quantity"] = str(item["quantity"])
        # One-time prices in subscription mode go on the first invoice only.
        (items if item["price"].get("recurring") else one_time).append(entry)
    params: dict[str, Any] = {"customer": customer_id, "items": items}
    if one_time:
        params["add_invoice_items"] = one_time
    if pm is not None:
        params["default_payment_method"] = pm["id"]
    days = _trial_days(session)
    if days:
        params["trial_period_days"] = str(days)
    for key in (
        "trial_end",
        "trial_settings",
        "metadata",
        "application_fee_percent",
        "description",
        "default_tax_rates",
        "billing_cycle_anchor",
        "proration_behavior",
        "transfer_data",
        "on_behalf_of",
        "invoice_settings",
    ):
        if data.get(key) not in (None, ""):
            params[key] = data[key]
    if session["automatic_tax"]["enabled"]:
        params["automatic_tax"] = {"enabled": "true"}
    if session.get("_method_types_given"):
        # The subscription's invoices are offered the types the session was limited to.
        params["payment_settings"] = {"payment_method_types": session["payment_method_types"]}
    if session.get("_discounts"):
        params["discounts"] = session["_discounts"]
    subscription = billing.create_subscription(ctx, params)
    if pm is not None:
        pm.pop("_authenticate_next", None)  # a trial took no payment: the challenge is spent
    if subscription["status"] not in ("active", "trialing"):
        # The first payment failed (or needs action Checkout could not take): Checkout keeps the
        # buyer on the page; the incomplete subscription is canceled rather than left behind.
        failure = _payment_error_of(ctx, subscription)
        billing.cancel_subscription(ctx, subscription["id"])
        raise CheckoutDeclined(failure)
    session["customer"] = customer_id
    session["subscription"] = subscription["id"]
    session["invoice"] = subscription.get("latest_invoice")
    session["payment_status"] = "paid" if _due_now(session) > 0 else "no_payment_required"


def _payment_error_of(ctx: Ctx, subscription: dict[str, Any]) -> StripeError:
    invoice = ctx.account.find(subscription.get("latest_invoice"))
    for pi in reversed(ctx.account.where("payment_intent", customer=subscription["customer"])):
        if (
            invoice is not None
            and pi.get("_invoice") == invoice["id"]
            and pi.get("last_payment_error")
        ):
            error = pi["last_payment_error"]
            return StripeError(
                error.get("message") or "Your card was declined.",
                status=402,
                type="card_error",
                code=error.get("code"),
            )
    return StripeError(
        "Your card was declined.", status=402, type="card_error", code="card_declined"
    )


def _complete_payment(
    ctx: Ctx, session: dict[str, Any], pm: dict[str, Any] | None, email: str | None, now: int
) -> None:
    assert pm is not None
    customer_id = _customer_for(ctx, session, email, pm)
    data = session.get("_payment_intent_data") or {}
    pi = ctx.account.find(session.get("_payment_intent"))
    if pi is None:
        pi = payments.new_payment_intent(
            ctx,
            amount=_due_now(session),
            currency=session["currency"],
            customer_id=customer_id,
            payment_method_id=pm["id"],
            created=now,
            description=data.get("description"),
            metadata=data.get("metadata") or None,
            capture_method=data.get("capture_method") or "automatic",
            application_fee_amount=as_int(data, "application_fee_amount"),
            setup_future_usage=data.get("setup_future_usage"),
            receipt_email=data.get("receipt_email") or email,
        )
        session["_payment_intent"] = pi["id"]
    else:
        pi["payment_method"] = pm["id"]
        pi["customer"] = customer_id or pi.get("customer")
    _prepare_card(ctx, pm)
    outcome = payments.attempt(
        ctx, pi, now=now, off_session=False, billing=False, capture=pi["capture_method"] != "manual"
    )
    if outcome.status != "succeeded":
        assert outcome.error is not None
        raise CheckoutDeclined(outcome.error)
    if customer_id and data.get("setup_future_usage"):
        payments.attach_payment_method(ctx, pm, customer_id)
    session["customer"] = customer_id
    session["payment_intent"] = pi["id"]
    session["payment_status"] = "paid"


def _complete_setup(
    ctx: Ctx, session: dict[str, Any], pm: dict[str, Any] | None, email: str | None, now: int
) -> None:
    assert pm is not None
    customer_id = session.get("customer")
    data = session.get("_setup_intent_data") or {}
    seti = new_setup_intent(
        ctx,
        customer_id=customer_id,
        payment_method_id=pm["id"],
        created=now,
        description=data.get("description"),
        metadata=data.get("metadata") or None,
    )
    _prepare_card(ctx, pm)
    seti["_authenticated"] = True  # the buyer completes any challenge in the page
    try:
        confirm_setup_intent(ctx, seti, now)
    except StripeError as error:
        raise CheckoutDeclined(error) from None
    session["setup_intent"] = seti["id"]
    session["payment_status"] = "no_payment_required"


# -- the hosted page -------------------------------------------------------------------------


def _page_context(ctx: Ctx, session: dict[str, Any]) -> dict[str, Any]:
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
    trial_days = _trial_days(session) if session["mode"] == "subscription" else None
    if session["mode"] == "setup":
        button = "Save card"
    elif trial_days or (session["mode"] == "subscription" and _has_trial(session)):
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
        "due_now": _due_now(session),
        "subtotal": _subtotal_now(session),
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
        "needs_card": _needs_card(session) and _takes_cards(session),
        "other_methods": [METHOD_NAMES.get(kind, kind) for kind in _other_methods(session)],
        "takes_cards": _takes_cards(session),
        "button": button,
        "business": ctx.sim.business_name,
    }


@page("/checkout/{session_id}", methods=("GET", "POST"))
async def checkout_page(request: Request, sim: Simulator) -> Response:
    """The hosted Checkout page: review the order and pay with a test card."""
    session_id = request.path_params["session_id"]
    form = await form_of(request) if request.method == "POST" else {}
    with hosted(sim, request, session_id, "checkout.session") as found:
        if found is None:
            return message_page(404, "Not found", "This Checkout page does not exist.")
        ctx, session = found
        _lazy_expire(ctx, session)
        if session["status"] == "expired":
            return message_page(
                410, "Session expired", "This Checkout Session has expired.", session["cancel_url"]
            )
        if session["status"] == "complete":
            return message_page(
                200, "Already paid", "This Checkout Session is complete.", _success_url(session)
            )
        context = _page_context(ctx, session)
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
                **_page_context(ctx, session),
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
    if not context["needs_card"]:
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
