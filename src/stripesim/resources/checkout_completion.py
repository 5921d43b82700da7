"""Completing a Checkout Session: what the buyer's form makes (subscription, payment, setup).

The form's billing details and payment method are checked as Checkout does; a payment that does
not go through raises CheckoutDeclined and leaves the session open, for the page to show.
"""

from __future__ import annotations

from typing import Any

from stripesim import billing, cards, objects, payments
from stripesim.errors import StripeError, card_error
from stripesim.lists import as_int
from stripesim.pages import bank_from_form, card_from_form
from stripesim.registry import Ctx
from stripesim.resources.checkout import due_now, session_trial_days, set_discounts
from stripesim.resources.customers import create_customer, update_customer
from stripesim.resources.payment_methods import confirm_setup_intent, new_setup_intent
from stripesim.resources.tax_ids import check_tax_id, new_tax_id


class CheckoutDeclined(Exception):
    """The buyer's payment did not go through; the page shows `error` and stays open."""

    def __init__(self, error: StripeError) -> None:
        super().__init__(error.message)
        self.error = error


# Countries the hosted page offers for a billing address (Checkout offers every one).
COUNTRIES = {
    "AT": "Austria", "AU": "Australia", "BE": "Belgium", "CA": "Canada", "CH": "Switzerland",
    "DE": "Germany", "DK": "Denmark", "ES": "Spain", "FI": "Finland", "FR": "France",
    "GB": "United Kingdom", "IE": "Ireland", "IT": "Italy", "JP": "Japan", "NL": "Netherlands",
    "NO": "Norway", "NZ": "New Zealand", "PL": "Poland", "PT": "Portugal", "SE": "Sweden",
    "US": "United States",
}  # fmt: skip
# Tax ID types the page offers, as Checkout's selector names them.
TAX_ID_TYPES = {
    "eu_vat": "EU VAT", "gb_vat": "UK VAT", "ca_gst_hst": "Canada GST/HST",
    "ca_qst": "Quebec QST", "au_abn": "Australia ABN", "ch_vat": "Swiss VAT",
    "no_vat": "Norway VAT", "us_ein": "US EIN",
}  # fmt: skip


def collects_address(session: dict[str, Any]) -> bool:
    return session.get("billing_address_collection") == "required" or bool(
        session["automatic_tax"]["enabled"]
    )


BillingDetails = tuple[dict[str, str] | None, str | None, tuple[str, str] | None]


def _billing_details(session: dict[str, Any], form: dict[str, str]) -> BillingDetails:
    """Return the (address, business name, tax ID) typed on the page, or raise CheckoutDeclined."""
    address = None
    if collects_address(session):
        address = {
            key: (form.get(f"address_{key}") or "").strip()
            for key in ("line1", "line2", "city", "state", "postal_code", "country")
        }
        address["country"] = address["country"].upper()
        required = {"country": "country", "line1": "address", "postal_code": "postal code"}
        if address["country"] in ("US", "CA", "AU"):
            required["state"] = "state or province"
        for key, label in required.items():
            if not address[key]:
                raise CheckoutDeclined(
                    StripeError(f"Your {label} is incomplete.", param=f"address_{key}")
                )
        if address["country"] not in COUNTRIES:
            raise CheckoutDeclined(
                StripeError("Your country is not supported.", param="address_country")
            )
        address["state"] = (
            address["state"].upper() if len(address["state"]) <= 3 else address["state"]
        )
    business = (form.get("business_name") or "").strip() or None
    tax_id = None
    if session.get("tax_id_collection", {}).get("enabled") and (form.get("tax_id_value") or ""):
        kind = form.get("tax_id_type") or ""
        if kind not in TAX_ID_TYPES:
            raise CheckoutDeclined(StripeError("Choose a tax ID type.", param="tax_id_type"))
        try:
            tax_id = check_tax_id({"type": kind, "value": form["tax_id_value"]}, "tax_id")
        except StripeError as error:
            raise CheckoutDeclined(error) from None
        if business is None:
            raise CheckoutDeclined(
                StripeError("Your business name is incomplete.", param="business_name")
            )
    return address, business, tax_id


def _save_billing_details(
    ctx: Ctx,
    session: dict[str, Any],
    customer_id: str,
    details: BillingDetails,
) -> None:
    """Save what the buyer typed on the customer, as `customer_update` allows (and a new
    customer always), so Stripe Tax taxes the subscription by it."""
    address, business, tax_id = details
    allowed = session.get("_customer_update") or {}
    existing = bool(session.get("customer"))
    changes: dict[str, Any] = {}
    if address and (not existing or allowed.get("address") == "auto"):
        changes["address"] = address
    if business and (not existing or allowed.get("name") == "auto"):
        changes["name"] = business
    if changes:
        update_customer(ctx, changes, customer_id)
    if tax_id is not None:
        new_tax_id(ctx, ctx.account.get(customer_id, "customer"), *tax_id)


# How the hosted page names the payment method types it lists.
METHOD_NAMES = {
    "card": "a card",
    "us_bank_account": "a US bank account (ACH Direct Debit)",
    "customer_balance": "a bank transfer",
}


def takes_cards(session: dict[str, Any]) -> bool:
    """Return whether the session accepts cards (`payment_method_types`)."""
    return "card" in (session.get("payment_method_types") or ["card"])


def other_methods(session: dict[str, Any]) -> list[str]:
    return [kind for kind in session.get("payment_method_types") or [] if kind != "card"]


def takes_banks(session: dict[str, Any]) -> bool:
    """Return whether the session accepts a US bank account (ACH Direct Debit)."""
    return "us_bank_account" in (session.get("payment_method_types") or [])


def chosen_method(session: dict[str, Any], form: dict[str, str]) -> str:
    """The method the buyer picked on the page: a card unless the session takes no cards."""
    if form.get("payment_method_type"):
        return form["payment_method_type"]
    if form.get("card_number") or takes_cards(session) or not takes_banks(session):
        return "card"  # a card posted without a choice is taken as one
    return "us_bank_account"


def needs_card(session: dict[str, Any]) -> bool:
    return not (session.get("payment_method_collection") == "if_required" and due_now(session) == 0)


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
        set_discounts(ctx, session, raw, session.get("customer"), now)
    except StripeError as refused:
        raise CheckoutDeclined(refused) from None


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
    details: BillingDetails = (
        _billing_details(session, form) if session["mode"] != "setup" else (None, None, None)
    )
    pm = None
    if needs_card(session) and chosen_method(session, form) == "us_bank_account":
        if not takes_banks(session):
            raise CheckoutDeclined(
                StripeError(
                    "A US bank account cannot pay for this purchase.",
                    param="allowed_payment_method_types",
                )
            )
        if session["mode"] != "subscription":
            raise CheckoutDeclined(
                StripeError(
                    "This page takes a US bank account for subscriptions only.",
                    param="payment_method_type",
                )
            )
        try:
            pm = bank_from_form(ctx, form)
        except StripeError as error:
            raise CheckoutDeclined(error) from None
    elif needs_card(session):
        if not takes_cards(session):
            raise CheckoutDeclined(
                StripeError(
                    "Cards cannot pay for this purchase. Pay with "
                    + " or ".join(METHOD_NAMES.get(kind, kind) for kind in other_methods(session))
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
        if spec.behaviour == cards.DECLINE_AFTER_ATTACH and due_now(session) > 0:
            # Checkout confirms the first payment before it creates the subscription.
            raise CheckoutDeclined(spec.decline())
    if session["mode"] == "subscription":
        _complete_subscription(ctx, session, pm, email, now, details)
    elif session["mode"] == "payment":
        _complete_payment(ctx, session, pm, email, now)
        if session.get("customer"):
            _save_billing_details(ctx, session, session["customer"], details)
    else:
        _complete_setup(ctx, session, pm, email, now)
    customer_id = session.get("customer")
    customer = ctx.account.find(customer_id) if customer_id else None
    address, business, tax_id = details
    session["customer_details"] = {
        "address": objects.address(address) if address else None,
        "email": (customer or {}).get("email") or email,
        "name": business or (pm or {}).get("billing_details", {}).get("name"),
        "phone": None,
        "tax_exempt": (customer or {}).get("tax_exempt", "none"),
        "tax_ids": [{"type": tax_id[0], "value": tax_id[1]}] if tax_id else [],
        "business_name": None,
        "individual_name": None,
    }
    session["status"] = "complete"
    session["url"] = None
    ctx.emit("checkout.session.completed", session, created=ctx.now_for_customer(customer_id))
    return session


def _complete_subscription(
    ctx: Ctx,
    session: dict[str, Any],
    pm: dict[str, Any] | None,
    email: str | None,
    now: int,
    details: BillingDetails,
) -> None:
    customer_id = _customer_for(ctx, session, email, pm)
    assert customer_id is not None
    # Before the subscription, so its first invoice is taxed where the buyer is.
    _save_billing_details(ctx, session, customer_id, details)
    if pm is not None:
        try:
            payments.attach_payment_method(ctx, pm, customer_id)
        except StripeError as error:
            raise CheckoutDeclined(error) from None
        if pm["type"] == "card":
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
    days = session_trial_days(session)
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
    debiting = _debit_processing(ctx, subscription)
    if subscription["status"] not in ("active", "trialing") and not debiting:
        # The first payment failed (or needs action Checkout could not take): Checkout keeps the
        # buyer on the page; the incomplete subscription is canceled rather than left behind.
        failure = _payment_error_of(ctx, subscription)
        billing.cancel_subscription(ctx, subscription["id"])
        raise CheckoutDeclined(failure)
    session["customer"] = customer_id
    session["subscription"] = subscription["id"]
    session["invoice"] = subscription.get("latest_invoice")
    if debiting:
        # Checkout completes while the debit is processing; it settles days later.
        session["payment_status"] = "unpaid"
    else:
        session["payment_status"] = "paid" if due_now(session) > 0 else "no_payment_required"


def _debit_processing(ctx: Ctx, subscription: dict[str, Any]) -> bool:
    """Whether the subscription's first invoice is being paid by a bank debit, not yet settled."""
    invoice = ctx.account.find(subscription.get("latest_invoice"))
    return invoice is not None and any(
        pi.get("_invoice") == invoice["id"] and pi["status"] == "processing"
        for pi in ctx.account.where("payment_intent", customer=subscription["customer"])
    )


def _payment_error_of(ctx: Ctx, subscription: dict[str, Any]) -> StripeError:
    invoice = ctx.account.find(subscription.get("latest_invoice"))
    for pi in reversed(ctx.account.where("payment_intent", customer=subscription["customer"])):
        if (
            invoice is not None
            and pi.get("_invoice") == invoice["id"]
            and pi.get("last_payment_error")
        ):
            error = pi["last_payment_error"]
            return card_error(
                error.get("message") or "Your card was declined.", code=error.get("code")
            )
    return card_error("Your card was declined.", code="card_declined")


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
            amount=due_now(session),
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
