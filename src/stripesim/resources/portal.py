"""Billing Portal configurations and sessions, and the hosted customer portal page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from stripesim import billing, cards, objects, payments
from stripesim.currency import format_amount
from stripesim.errors import StripeError, card_error, parameter_missing
from stripesim.lists import as_bool, as_int, one_of, required_object, update_metadata
from stripesim.pages import (
    bank_from_form,
    card_from_form,
    form_of,
    hosted,
    message_page,
    render_page,
)
from stripesim.registry import Ctx, changed_since, list_route, page, retrieve_route, route
from stripesim.resources.checkout_page import AUTHENTICATION_FAILED
from stripesim.resources.customers import update_customer
from stripesim.state import Simulator, new_id, snapshot

_CANCEL_MODES = ("at_period_end", "immediately")
_PRORATIONS = ("none", "create_prorations", "always_invoice")
_UPDATES = ("price", "quantity", "promotion_code")
_NOTICES = {
    "canceled": "Your subscription has been canceled.",
    "cancel_scheduled": "Your subscription will be canceled at the end of the billing period.",
    "renewed": "Your subscription has been renewed.",
    "plan_changed": "Your plan has been updated.",
    "card_updated": "Your payment method has been updated.",
    "bank_added": "Your bank account has been added and will pay your next invoices.",
    "customer_updated": "Your billing information has been updated.",
}


# -- configurations --------------------------------------------------------------------------


def _default_features() -> dict[str, Any]:
    return dict(objects.new("billing_portal.configuration")["features"])


def _flag(raw: dict[str, Any], key: str, param: str) -> bool:
    value = as_bool(raw, key)
    if value is None:
        raise parameter_missing(param)
    return value


def _apply_features(ctx: Ctx, features: dict[str, Any], raw: Any) -> None:
    """Merge `features[...]` params into a configuration's features, validating as Stripe does."""
    if not isinstance(raw, dict):
        return
    prefix = "features"
    for name in ("invoice_history", "payment_method_update", "customer_update"):
        section = raw.get(name)
        if isinstance(section, dict):
            if "enabled" in section:
                features[name]["enabled"] = _flag(section, "enabled", f"{prefix}[{name}][enabled]")
            if name == "customer_update" and "allowed_updates" in section:
                features[name]["allowed_updates"] = list(section["allowed_updates"] or [])
    cancel = raw.get("subscription_cancel")
    if isinstance(cancel, dict):
        target = features["subscription_cancel"]
        if "enabled" in cancel:
            target["enabled"] = _flag(cancel, "enabled", f"{prefix}[subscription_cancel][enabled]")
        if cancel.get("mode"):
            target["mode"] = one_of(cancel, "mode", _CANCEL_MODES)
        if cancel.get("proration_behavior"):
            target["proration_behavior"] = one_of(cancel, "proration_behavior", _PRORATIONS)
        reason = cancel.get("cancellation_reason")
        if isinstance(reason, dict):
            target["cancellation_reason"] = {
                "enabled": bool(as_bool(reason, "enabled", False)),
                "options": list(reason.get("options") or []),
            }
    update = raw.get("subscription_update")
    if isinstance(update, dict):
        target = features["subscription_update"]
        if "enabled" in update:
            target["enabled"] = _flag(update, "enabled", f"{prefix}[subscription_update][enabled]")
        if "default_allowed_updates" in update:
            allowed = list(update["default_allowed_updates"] or [])
            for value in allowed:
                if value not in _UPDATES:
                    raise StripeError(
                        f"Invalid features[subscription_update][default_allowed_updates]: {value}",
                        param="features[subscription_update][default_allowed_updates]",
                    )
            target["default_allowed_updates"] = allowed
        if update.get("proration_behavior"):
            target["proration_behavior"] = one_of(update, "proration_behavior", _PRORATIONS)
        if update.get("trial_update_behavior"):
            target["trial_update_behavior"] = one_of(
                update, "trial_update_behavior", ("continue_trial", "end_trial")
            )
        if "products" in update:
            products = []
            for index, product in enumerate(update["products"] or []):
                param = f"features[subscription_update][products][{index}]"
                ctx.account.get(product.get("product"), "product", param=f"{param}[product]")
                prices = list(product.get("prices") or [])
                if not prices:
                    raise parameter_missing(f"{param}[prices]")
                for price_id in prices:
                    price = ctx.account.get(price_id, "price", param=f"{param}[prices]")
                    if price["product"] != product["product"]:
                        raise StripeError(
                            f"The price {price_id} does not belong to product "
                            f"{product['product']}.",
                            param=f"{param}[prices]",
                        )
                products.append(
                    {
                        "adjustable_quantity": _adjustable_quantity(
                            product.get("adjustable_quantity"), f"{param}[adjustable_quantity]"
                        ),
                        "prices": prices,
                        "product": product["product"],
                    }
                )
            target["products"] = products
        if (
            target["enabled"]
            and "price" in target["default_allowed_updates"]
            and not target["products"]
        ):
            raise StripeError(
                "You must provide at least one product when `price` is in "
                "features[subscription_update][default_allowed_updates].",
                param="features[subscription_update][products]",
            )


def _adjustable_quantity(raw: Any, param: str) -> dict[str, Any]:
    """Check a product's `adjustable_quantity` (the seats a customer may choose, 0-99 bounds
    checked as Stripe does)."""
    if not isinstance(raw, dict):
        return {"enabled": False, "maximum": None, "minimum": 1}
    minimum = as_int(raw, "minimum")
    maximum = as_int(raw, "maximum")
    if minimum is not None and minimum < 0:
        raise StripeError("Invalid minimum: must be at least 0", param=f"{param}[minimum]")
    if maximum is not None and (maximum < 1 or maximum < (minimum or 0)):
        raise StripeError(
            "Invalid maximum: must be at least 1 and not below the minimum",
            param=f"{param}[maximum]",
        )
    return {
        "enabled": bool(as_bool(raw, "enabled")),
        "maximum": maximum,
        "minimum": 1 if minimum is None else minimum,
    }


def _new_configuration(ctx: Ctx, params: dict[str, Any], *, is_default: bool) -> dict[str, Any]:
    now = ctx.now()
    profile = params.get("business_profile") or {}
    config = ctx.build(
        "billing_portal.configuration",
        "bpc",
        created=now,
        business_profile={
            "headline": profile.get("headline") or None,
            "privacy_policy_url": profile.get("privacy_policy_url") or None,
            "terms_of_service_url": profile.get("terms_of_service_url") or None,
        },
        default_return_url=params.get("default_return_url") or None,
        features=_default_features(),
        is_default=is_default,
        updated=now,
        name=params.get("name") or None,
    )
    _apply_features(ctx, config["features"], params.get("features"))
    login = params.get("login_page")
    if isinstance(login, dict) and as_bool(login, "enabled", False):
        config["login_page"] = {
            "enabled": True,
            "url": f"{ctx.base_url}/portal/login/{new_id('x', 20)[2:]}",
        }
    update_metadata(config, params.get("metadata"))
    ctx.account.add(config)
    ctx.emit("billing_portal.configuration.created", config, created=now)
    return config


def default_configuration(ctx: Ctx) -> dict[str, Any]:
    """The account's default configuration, created like the Dashboard's saved settings."""
    for config in ctx.account.all("billing_portal.configuration"):
        if config["is_default"]:
            return config
    return _new_configuration(
        ctx,
        {
            "features": {
                "invoice_history": {"enabled": "true"},
                "payment_method_update": {"enabled": "true"},
                "subscription_cancel": {"enabled": "true", "mode": "at_period_end"},
            }
        },
        is_default=True,
    )


@route("POST", "/v1/billing_portal/configurations", "billing_portal.ConfigurationCreateParams")
def create_configuration(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(params.get("features"), dict):
        raise parameter_missing("features")
    has_default = any(c["is_default"] for c in ctx.account.all("billing_portal.configuration"))
    return _new_configuration(ctx, params, is_default=not has_default)


retrieve_route(
    "/v1/billing_portal/configurations/{config_id}",
    "billing_portal.configuration",
    "billing_portal.ConfigurationRetrieveParams",
    label="configuration",
)


@route(
    "POST",
    "/v1/billing_portal/configurations/{config_id}",
    "billing_portal.ConfigurationUpdateParams",
)
def update_configuration(ctx: Ctx, params: dict[str, Any], config_id: str) -> dict[str, Any]:
    config = ctx.account.get(config_id, "billing_portal.configuration", label="configuration")
    before = snapshot(config)
    if "active" in params:
        active = as_bool(params, "active")
        if active is False and config["is_default"]:
            raise StripeError("You cannot deactivate the default configuration.", param="active")
        config["active"] = bool(active)
    if isinstance(params.get("business_profile"), dict):
        for key, value in params["business_profile"].items():
            config["business_profile"][key] = value or None
    if "default_return_url" in params:
        config["default_return_url"] = params["default_return_url"] or None
    if "name" in params:
        config["name"] = params["name"] or None
    features = params.get("features")
    if features is not None:
        merged = {key: dict(value) for key, value in config["features"].items()}
        _apply_features(ctx, merged, features)
        config["features"] = merged
    update_metadata(config, params.get("metadata"))
    previous = changed_since(before, config)
    if previous:
        now = ctx.now()
        previous["updated"] = config["updated"]
        config["updated"] = now
        ctx.emit("billing_portal.configuration.updated", config, previous=previous, created=now)
    return config


list_route(
    "/v1/billing_portal/configurations",
    "billing_portal.configuration",
    "billing_portal.ConfigurationListParams",
    flags=("active", "is_default"),
)


# -- sessions --------------------------------------------------------------------------------


def _flow(ctx: Ctx, raw: Any, customer_id: str) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    kind = one_of(
        raw,
        "type",
        (
            "payment_method_update",
            "subscription_cancel",
            "subscription_update",
            "subscription_update_confirm",
        ),
    )
    after = raw.get("after_completion") or {}
    after_type = (
        one_of(after, "type", ("hosted_confirmation", "portal_homepage", "redirect"))
        or "portal_homepage"
    )
    flow: dict[str, Any] = {
        "after_completion": {
            "hosted_confirmation": {
                "custom_message": (after.get("hosted_confirmation") or {}).get("custom_message")
            }
            if after_type == "hosted_confirmation"
            else None,
            "redirect": {"return_url": (after.get("redirect") or {}).get("return_url")}
            if after_type == "redirect"
            else None,
            "type": after_type,
        },
        "subscription_cancel": None,
        "subscription_update": None,
        "subscription_update_confirm": None,
        "type": kind,
    }
    if after_type == "redirect" and not flow["after_completion"]["redirect"]["return_url"]:
        raise parameter_missing("flow_data[after_completion][redirect][return_url]")
    if kind in ("subscription_cancel", "subscription_update", "subscription_update_confirm"):
        section = raw.get(kind) or {}
        sub_id = section.get("subscription")
        if not sub_id:
            raise parameter_missing(f"flow_data[{kind}][subscription]")
        sub = ctx.account.get(sub_id, "subscription", param=f"flow_data[{kind}][subscription]")
        if sub["customer"] != customer_id:
            raise StripeError(
                f"The subscription {sub_id} does not belong to customer {customer_id}.",
                param=f"flow_data[{kind}][subscription]",
            )
        flow[kind] = {"subscription": sub_id}
        if kind == "subscription_cancel":
            flow[kind]["retention"] = None
        if kind == "subscription_update_confirm":
            items = section.get("items") or []
            if not items:
                raise parameter_missing("flow_data[subscription_update_confirm][items]")
            flow[kind]["items"] = [
                {"id": i.get("id"), "price": i.get("price"), "quantity": i.get("quantity")}
                for i in items
            ]
            flow[kind]["discounts"] = None
    return flow


@route("POST", "/v1/billing_portal/sessions", "billing_portal.SessionCreateParams")
def create_portal_session(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer_id = required_object(ctx.account, params, "customer", "customer")["id"]
    if params.get("configuration"):
        config = ctx.account.get(
            params["configuration"],
            "billing_portal.configuration",
            param="configuration",
            label="configuration",
        )
        if not config["active"]:
            raise StripeError("The configuration is not active.", param="configuration")
    else:
        config = default_configuration(ctx)
    return_url = params.get("return_url") or config.get("default_return_url")
    if not return_url:
        raise StripeError(
            "You must provide a `return_url` or set a `default_return_url` on the portal "
            "configuration.",
            param="return_url",
        )
    now = ctx.now_for_customer(customer_id)
    session = ctx.build(
        "billing_portal.session",
        "bps",
        created=now,
        configuration=config["id"],
        customer=customer_id,
        flow=_flow(ctx, params.get("flow_data"), customer_id),
        locale=params.get("locale") or None,
        on_behalf_of=params.get("on_behalf_of") or None,
        return_url=return_url,
        _account=ctx.account.id,
    )
    session["url"] = f"{ctx.base_url}/portal/{session['id']}"
    ctx.account.add(session)
    ctx.emit("billing_portal.session.created", session, created=now)
    return session


# -- the hosted page -------------------------------------------------------------------------


def _date(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%B %-d, %Y") if ts else ""


def _interval_text(price: dict[str, Any]) -> str:
    recurring = price.get("recurring") or {}
    count = recurring.get("interval_count") or 1
    interval = recurring.get("interval") or "month"
    return f"per {interval}" if count == 1 else f"every {count} {interval}s"


def _price_label(ctx: Ctx, price: dict[str, Any]) -> str:
    product = ctx.account.find(price.get("product")) or {}
    name = product.get("name") or price.get("nickname") or price["id"]
    if price.get("unit_amount") is None:
        return f"{name} (usage-based)"
    amount = format_amount(int(price["unit_amount"]), price["currency"])
    return f"{name} · {amount} {_interval_text(price)}"


def _subscriptions(ctx: Ctx, customer_id: str) -> list[dict[str, Any]]:
    return [
        sub
        for sub in reversed(ctx.account.where("subscription", customer=customer_id))
        if sub["status"] not in ("canceled", "incomplete_expired")
    ]


def _sub_view(ctx: Ctx, sub: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    items = sub["items"]["data"]
    first = items[0] if items else None
    price = (ctx.account.find(first["price"]["id"]) or first["price"]) if first else None
    period_end = (first or {}).get("current_period_end")
    update = config["features"]["subscription_update"]
    allowed: list[dict[str, str]] = []
    if update["enabled"] and "price" in update["default_allowed_updates"]:
        for product in update["products"]:
            for price_id in product["prices"]:
                option = ctx.account.find(price_id)
                if option is not None and option.get("active", True):
                    allowed.append({"id": price_id, "label": _price_label(ctx, option)})
    amount = None
    if first is not None and price is not None and price.get("unit_amount") is not None:
        amount = format_amount(
            int(price["unit_amount"]) * int(first.get("quantity") or 1), price["currency"]
        )
    return {
        "id": sub["id"],
        "plan": _price_label(ctx, price) if price else sub["id"],
        "price_id": price["id"] if price else None,
        "amount": f"{amount} {_interval_text(price)}" if amount and price else None,
        "quantity": (first or {}).get("quantity"),
        "status": sub["status"],
        "period_end": _date(period_end),
        "trial_end": _date(sub.get("trial_end")) if sub["status"] == "trialing" else None,
        "cancel_at_period_end": sub.get("cancel_at_period_end"),
        "cancel_at": _date(sub.get("cancel_at") or period_end),
        "allowed_prices": allowed,
        "can_cancel": config["features"]["subscription_cancel"]["enabled"]
        and not sub.get("cancel_at_period_end"),
        "can_change": bool(allowed) and len(items) >= 1,
        "can_change_quantity": update["enabled"]
        and "quantity" in update["default_allowed_updates"]
        and first is not None
        and first.get("quantity") is not None,
    }


def _page_context(ctx: Ctx, session: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    customer = ctx.account.get(session["customer"], "customer")
    features = config["features"]
    pm_id = payments.resolve_payment_method(ctx, customer["id"])
    pm = ctx.account.find(pm_id) if pm_id else None
    invoices = []
    if features["invoice_history"]["enabled"]:
        rows = [
            inv
            for inv in ctx.account.where("invoice", customer=customer["id"])
            if inv.get("status") != "draft"
        ]
        for inv in reversed(rows[-24:]):
            invoices.append(
                {
                    "id": inv["id"],
                    "number": inv.get("number") or inv["id"],
                    "date": _date(inv.get("created")),
                    "amount": format_amount(int(inv.get("total") or 0), inv["currency"]),
                    "status": inv.get("status"),
                    "url": inv.get("hosted_invoice_url"),
                }
            )
    subs = _subscriptions(ctx, customer["id"])
    flow = session.get("flow") or {}
    focus = None
    for kind in ("subscription_cancel", "subscription_update", "subscription_update_confirm"):
        if flow.get(kind):
            focus = flow[kind]["subscription"]
    if focus:
        subs = [sub for sub in subs if sub["id"] == focus]
    return {
        "session": session,
        "config": config,
        "headline": config["business_profile"].get("headline"),
        "customer": customer,
        "subscriptions": [_sub_view(ctx, sub, config) for sub in subs],
        "card": pm.get("card") if pm else None,
        "bank": pm.get("us_bank_account") if pm else None,
        "can_update_card": features["payment_method_update"]["enabled"],
        "can_add_bank": features["payment_method_update"]["enabled"]
        and _banks_taken(ctx, session["customer"]),
        "invoices": invoices,
        "show_invoices": features["invoice_history"]["enabled"],
        "cancel_mode": features["subscription_cancel"]["mode"],
        "customer_fields": [
            key
            for key in ("email", "name", "phone")
            if features["customer_update"]["enabled"]
            and key in features["customer_update"]["allowed_updates"]
        ],
    }


class PortalError(Exception):
    def __init__(self, error: StripeError) -> None:
        super().__init__(error.message)
        self.error = error


def _owned_subscription(ctx: Ctx, session: dict[str, Any], sub_id: str) -> dict[str, Any]:
    sub = ctx.account.find(sub_id)
    if sub is None or sub.get("object") != "subscription" or sub["customer"] != session["customer"]:
        raise PortalError(StripeError("That subscription was not found.", status=404))
    return sub


def _check_quantity(config: dict[str, Any], price_id: str, quantity: int) -> None:
    """Refuse a quantity outside the bounds the configuration gives the price's product."""
    for product in config["features"]["subscription_update"]["products"] or []:
        bounds = product["adjustable_quantity"]
        if price_id not in product["prices"] or not bounds["enabled"]:
            continue
        most = bounds["maximum"]
        if quantity < bounds["minimum"] or (most is not None and quantity > most):
            span = f"from {bounds['minimum']}" + (f" to {most}" if most is not None else "")
            raise PortalError(StripeError(f"Choose a quantity {span}.", param="quantity"))


def _act(ctx: Ctx, session: dict[str, Any], config: dict[str, Any], form: dict[str, str]) -> str:
    """Run one portal action through the billing engine; returns the notice key."""
    action = form.get("action")
    features = config["features"]
    if action == "cancel":
        if not features["subscription_cancel"]["enabled"]:
            raise PortalError(StripeError("Canceling is not enabled.", status=403))
        sub = _owned_subscription(ctx, session, form.get("subscription", ""))
        cancel = features["subscription_cancel"]
        details: dict[str, Any] = {}
        if form.get("reason"):
            details["feedback"] = form["reason"]
        if cancel["mode"] == "immediately":
            behavior = cancel["proration_behavior"]
            billing.cancel_subscription(
                ctx,
                sub["id"],
                prorate=behavior != "none",
                invoice_now=behavior == "always_invoice",
                feedback=details.get("feedback"),
            )
            return "canceled"
        params: dict[str, Any] = {"cancel_at_period_end": "true"}
        if details:
            params["cancellation_details"] = details
        billing.update_subscription(ctx, sub["id"], params)
        return "cancel_scheduled"
    if action == "renew":
        sub = _owned_subscription(ctx, session, form.get("subscription", ""))
        billing.update_subscription(ctx, sub["id"], {"cancel_at_period_end": "false"})
        return "renewed"
    if action == "change_plan":
        update = features["subscription_update"]
        sub = _owned_subscription(ctx, session, form.get("subscription", ""))
        view = _sub_view(ctx, sub, config)
        item = sub["items"]["data"][0]
        change: dict[str, Any] = {"id": item["id"]}
        price_id = form.get("price", "")
        if price_id and price_id != view["price_id"]:
            if price_id not in {option["id"] for option in view["allowed_prices"]}:
                raise PortalError(StripeError("That plan is not available.", param="price"))
            change["price"] = price_id
        if form.get("quantity"):
            if not view["can_change_quantity"]:
                raise PortalError(StripeError("Changing the quantity is not enabled."))
            if not form["quantity"].isdigit() or int(form["quantity"]) < 1:
                raise PortalError(StripeError("Quantity must be at least 1.", param="quantity"))
            _check_quantity(config, change.get("price") or view["price_id"], int(form["quantity"]))
            if int(form["quantity"]) != item.get("quantity"):
                change["quantity"] = form["quantity"]
        if len(change) == 1:
            raise PortalError(StripeError("Choose a different plan or quantity.", param="price"))
        params = {"items": [change], "proration_behavior": update["proration_behavior"]}
        if sub["status"] == "trialing" and update["trial_update_behavior"] == "end_trial":
            params["trial_end"] = "now"
        billing.update_subscription(ctx, sub["id"], params)
        return "plan_changed"
    if action == "update_customer":
        allowed = features["customer_update"]
        if not allowed["enabled"]:
            raise PortalError(StripeError("Updating your details is not enabled.", status=403))
        changes = {
            key: form[key].strip()
            for key in ("email", "name", "phone")
            if key in allowed["allowed_updates"] and form.get(key, "").strip()
        }
        if not changes:
            raise PortalError(StripeError("Nothing to update.", param="email"))
        update_customer(ctx, changes, session["customer"])
        return "customer_updated"
    if action in ("update_card", "add_bank"):
        if not features["payment_method_update"]["enabled"]:
            raise PortalError(StripeError("Updating the card is not enabled.", status=403))
        return _update_card(ctx, session, form)
    raise PortalError(StripeError("Unknown action.", param="action"))


def _card_challenge(session: dict[str, Any], form: dict[str, str]) -> Response | None:
    """Stop a new card that needs 3-D Secure at the test challenge before it is saved.

    The challenge posts the form back with `three_d_secure=complete` (save the card, set up for
    later payments) or `fail` (Stripe's error; the card on file stays the default).
    """
    if form.get("action") != "update_card":
        return None
    try:
        card = cards.by_number(form.get("card_number", ""))
    except StripeError:
        return None  # the action answers a bad number as the Portal does
    if card.behaviour != cards.AUTHENTICATE:
        return None
    answer = form.get("three_d_secure")
    if answer == "complete":
        return None
    if answer == "fail":
        raise PortalError(
            card_error(AUTHENTICATION_FAILED, code="setup_intent_authentication_failure")
        )
    return render_page(
        "three_d_secure.html",
        amount=None,
        action=f"/portal/{session['id']}",
        carried={key: value for key, value in form.items() if key != "three_d_secure"},
        answer_name="three_d_secure",
    )


def _cards_refused(ctx: Ctx, customer_id: str) -> bool:
    """Return whether the customer's subscriptions take no card (`payment_settings`)."""
    for sub in _subscriptions(ctx, customer_id):
        types = (sub.get("payment_settings") or {}).get("payment_method_types")
        if types and "card" not in types:
            return True
    return False


def _banks_taken(ctx: Ctx, customer_id: str) -> bool:
    """Whether a US bank account may pay the customer's subscriptions (`payment_settings`).

    Unset types let Stripe's dynamic methods decide; stripesim then offers a bank account only
    where a subscription names it, as the Portal offers what the merchant turned on.
    """
    return any(
        "us_bank_account" in ((sub.get("payment_settings") or {}).get("payment_method_types") or [])
        for sub in _subscriptions(ctx, customer_id)
    )


def _update_card(ctx: Ctx, session: dict[str, Any], form: dict[str, str]) -> str:
    customer_id = session["customer"]
    now = ctx.now_for_customer(customer_id)
    if form.get("action") == "add_bank":
        if not _banks_taken(ctx, customer_id):
            raise PortalError(
                StripeError(
                    "A US bank account cannot pay your subscription.", param="account_number"
                )
            )
        try:
            pm = bank_from_form(ctx, form)
            payments.attach_payment_method(ctx, pm, customer_id)
        except StripeError as error:
            raise PortalError(error) from None
        return _make_default(ctx, customer_id, pm, "bank_added")
    if _cards_refused(ctx, customer_id):
        raise PortalError(
            StripeError(
                "Your subscription is not paid by card: a card cannot be added here.",
                param="card_number",
            )
        )
    try:
        pm = card_from_form(ctx, form, created=now)
        payments.attach_payment_method(ctx, pm, customer_id)
    except StripeError as error:
        raise PortalError(error) from None
    if cards.by_key(pm.get("_test_card")).behaviour == cards.AUTHENTICATE:
        # The customer completes the challenge in the portal, setting the card up.
        pm["_authenticate_next"] = True
        pm["_setup_authenticated"] = True
    return _make_default(ctx, customer_id, pm, "card_updated")


def _make_default(ctx: Ctx, customer_id: str, pm: dict[str, Any], notice: str) -> str:
    """Make `pm` the customer's (and their subscriptions') default; retry what is open."""
    update_customer(ctx, {"invoice_settings": {"default_payment_method": pm["id"]}}, customer_id)
    for sub in _subscriptions(ctx, customer_id):
        if sub.get("default_payment_method"):
            billing.update_subscription(ctx, sub["id"], {"default_payment_method": pm["id"]})
    billing.retry_open_invoices(ctx, customer_id)
    pm.pop("_authenticate_next", None)
    return notice


@page("/portal/{session_id}", methods=("GET", "POST"))
async def portal_page(request: Request, sim: Simulator) -> Response:
    """The hosted customer portal: subscriptions, card, invoices, and the actions they allow."""
    session_id = request.path_params["session_id"]
    form = await form_of(request)
    with hosted(sim, request, session_id, "billing_portal.session") as found:
        if found is None:
            return message_page(404, "Not found", "This portal link does not exist.")
        ctx, session = found
        config = ctx.account.get(session["configuration"], "billing_portal.configuration")
        if request.method == "GET":
            notice = _NOTICES.get(request.query_params.get("notice", ""))
            return render_page(
                "portal.html", notice=notice, error=None, **_page_context(ctx, session, config)
            )
        try:
            challenge = _card_challenge(session, form)
            if challenge is not None:
                return challenge
            notice_key = _act(ctx, session, config, form)
        except (PortalError, StripeError) as failure:
            error = failure.error if isinstance(failure, PortalError) else failure
            return render_page(
                "portal.html",
                error.status if error.status >= 400 else 400,
                notice=None,
                error=error.message,
                **_page_context(ctx, session, config),
            )
        after = (session.get("flow") or {}).get("after_completion") or {}
        if after.get("type") == "redirect":
            return RedirectResponse(after["redirect"]["return_url"], status_code=303)
        if after.get("type") == "hosted_confirmation":
            message = (after.get("hosted_confirmation") or {}).get("custom_message")
            return message_page(200, "Done", message or _NOTICES[notice_key], session["return_url"])
    query = urlencode({"notice": notice_key})
    return RedirectResponse(f"/portal/{session_id}?{query}", status_code=303)
