"""Checkout Sessions, the API resource: create, retrieve, update, list their line items, expire.

A session's amounts (what is due now, after a trial and discounts) are worked out here, for the
hosted page (.checkout_page) and for completing the session (.checkout_completion).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from stripesim import billing, objects
from stripesim.catalog import build_price, price_amount, public_view
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, as_int, one_of, paginate, render, update_metadata
from stripesim.payment_settings import read_method_types
from stripesim.registry import Ctx, route
from stripesim.state import Account, Simulator, new_id

DEFAULT_LIFETIME = 24 * 3600
_MODES = ("payment", "setup", "subscription")


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


def session_trial_days(session: dict[str, Any]) -> int | None:
    data = session.get("_subscription_data") or {}
    days = as_int(data, "trial_period_days", param="subscription_data[trial_period_days]")
    if days:
        return days
    for item in session.get("_line_items") or []:
        recurring = item["price"].get("recurring") or {}
        if recurring.get("trial_period_days"):
            return int(recurring["trial_period_days"])
    return None


def has_trial(session: dict[str, Any]) -> bool:
    data = session.get("_subscription_data") or {}
    return bool(session_trial_days(session) or data.get("trial_end"))


def subtotal_now(session: dict[str, Any]) -> int:
    if session["mode"] == "setup" or (session["mode"] == "subscription" and has_trial(session)):
        return 0
    return sum(item["amount_total"] for item in session.get("_line_items") or [])


def due_now(session: dict[str, Any]) -> int:
    return max(0, subtotal_now(session) - int(session.get("_discount_amount") or 0))


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


def set_discounts(
    ctx: Ctx, session: dict[str, Any], raw: Any, customer_id: str | None, now: int
) -> None:
    """Check the session's discounts and set its totals (and `discounts`) from them."""
    subtotal = subtotal_now(session)
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


def _check_customer_update(
    params: dict[str, Any],
    customer: dict[str, Any] | None,
    *,
    automatic_tax: bool,
    collect_tax_ids: bool,
) -> dict[str, str]:
    """Return `customer_update`, refusing what Stripe refuses with automatic tax and tax IDs."""
    raw = params.get("customer_update") or {}
    if raw and customer is None:
        raise StripeError(
            "`customer_update` can only be used with `customer`.", param="customer_update"
        )
    update = {
        key: str(raw[key])
        for key in ("address", "name", "shipping")
        if raw.get(key) not in (None, "")
    }
    for key, value in update.items():
        if value not in ("auto", "never"):
            raise StripeError(
                f"Invalid customer_update[{key}]: must be one of auto or never",
                param=f"customer_update[{key}]",
            )
    if customer is None:
        return update
    has_address = bool((customer.get("address") or {}).get("country"))
    if (
        automatic_tax
        and not has_address
        and "auto"
        not in (
            update.get("address"),
            update.get("shipping"),
        )
    ):
        raise StripeError(
            "Automatic tax calculation in Checkout requires a valid address on the Customer. "
            "Add a valid address to the Customer or set either `customer_update[address]` to "
            "'auto' or `customer_update[shipping]` to 'auto' to save the address entered in "
            "Checkout to the Customer.",
            param="automatic_tax[enabled]",
        )
    if collect_tax_ids and update.get("name") != "auto":
        raise StripeError(
            "tax_id_collection requires updating business name on the customer. To enable tax "
            "ID collection for an existing customer, please set `customer_update[name]` to "
            "`auto`.",
            param="tax_id_collection[enabled]",
        )
    return update


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
    collect_tax_ids = as_bool(params.get("tax_id_collection") or {}, "enabled", False)
    customer_update = _check_customer_update(
        params, customer, automatic_tax=bool(automatic_tax), collect_tax_ids=bool(collect_tax_ids)
    )
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
        billing_address_collection=one_of(
            params, "billing_address_collection", ("auto", "required")
        ),
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
        _customer_update=customer_update,
    )
    if mode != "setup":
        set_discounts(ctx, session, params.get("discounts"), customer_id, now)
    elif params.get("discounts"):
        raise StripeError("You cannot pass `discounts` in `setup` mode.", param="discounts")
    if params.get("tax_id_collection"):
        # Optional in Stripe's schema: present when the session was asked for it.
        session["tax_id_collection"] = {"enabled": bool(collect_tax_ids), "required": "never"}
    update_metadata(session, params.get("metadata"))
    ctx.account.add(session)
    if expire_due_sessions not in ctx.sim.time_hooks:
        ctx.sim.time_hooks.append(expire_due_sessions)
    return session


def expire_session(ctx: Ctx, session: dict[str, Any], now: int) -> None:
    session["status"] = "expired"
    session["url"] = None
    ctx.emit("checkout.session.expired", session, created=now)


def lazy_expire(ctx: Ctx, session: dict[str, Any]) -> dict[str, Any]:
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
    return lazy_expire(ctx, session)


@route("GET", "/v1/checkout/sessions/{session_id}", "checkout.SessionRetrieveParams")
def retrieve_session(ctx: Ctx, params: dict[str, Any], session_id: str) -> dict[str, Any]:
    return _with_line_items(_session(ctx, session_id), params)


@route("POST", "/v1/checkout/sessions/{session_id}", "checkout.SessionUpdateParams")
def update_session(ctx: Ctx, params: dict[str, Any], session_id: str) -> dict[str, Any]:
    session = _session(ctx, session_id)
    update_metadata(session, params.get("metadata"))
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
        lazy_expire(ctx, session)
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
