"""The account's balance and its transactions; customers' credit balances; customer sessions."""

from __future__ import annotations

from typing import Any

from stripesim import balances, objects
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import (
    as_currency,
    as_int,
    customer_owned,
    paginate,
    required_int,
    update_metadata,
)
from stripesim.registry import Ctx, customer_list_route, customer_retrieve_route, route
from stripesim.state import new_id

CUSTOMER_SESSION_SECONDS = 30 * 60  # a customer session's client secret lasts 30 minutes


# -- the account's balance ------------------------------------------------------------------------


@route("GET", "/v1/balance", "BalanceRetrieveParams")
def retrieve_balance(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return balances.balance(ctx)


@route("GET", "/v1/balance_transactions/{txn_id}", "BalanceTransactionRetrieveParams")
def retrieve_balance_transaction(ctx: Ctx, params: dict[str, Any], txn_id: str) -> dict[str, Any]:
    txn = ctx.account.get(txn_id, "balance_transaction", label="balance transaction")
    return balances.settle(txn, ctx.now())


@route("GET", "/v1/balance_transactions", "BalanceTransactionListParams")
def list_balance_transactions(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    now = ctx.now()
    currency = (params.get("currency") or "").lower() or None
    return paginate(
        ctx.account,
        "balance_transaction",
        params,
        "/v1/balance_transactions",
        filters={"type": params.get("type"), "source": params.get("source"), "currency": currency},
        view=lambda txn: balances.settle(txn, now),
    )


# -- a customer's credit balance ------------------------------------------------------------------

_CUSTOMER_TXN = "customer_balance_transaction"
_CUSTOMER_TXN_LABEL = "customer balance transaction"


@route(
    "POST",
    "/v1/customers/{customer_id}/balance_transactions",
    "CustomerBalanceTransactionCreateParams",
)
def create_customer_balance_transaction(
    ctx: Ctx, params: dict[str, Any], customer_id: str
) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    amount = required_int(params, "amount")
    currency = as_currency(params)
    if customer.get("currency") not in (None, currency):
        raise StripeError(
            f"The currency of this customer's balance is {customer['currency']}; a balance "
            f"transaction in {currency} cannot be added.",
            param="currency",
        )
    txn = balances.adjust_customer_balance(
        ctx,
        customer,
        amount,
        currency,
        kind="adjustment",
        now=ctx.now_for_customer(customer_id),
        description=params.get("description") or None,
    )
    update_metadata(txn, params.get("metadata"))
    return txn


customer_retrieve_route(
    "/v1/customers/{customer_id}/balance_transactions/{txn_id}",
    _CUSTOMER_TXN,
    "CustomerBalanceTransactionRetrieveParams",
    label=_CUSTOMER_TXN_LABEL,
)


@route(
    "POST",
    "/v1/customers/{customer_id}/balance_transactions/{txn_id}",
    "CustomerBalanceTransactionUpdateParams",
)
def update_customer_balance_transaction(
    ctx: Ctx, params: dict[str, Any], customer_id: str, txn_id: str
) -> dict[str, Any]:
    txn = customer_owned(ctx.account, customer_id, txn_id, _CUSTOMER_TXN, label=_CUSTOMER_TXN_LABEL)
    if "description" in params:
        txn["description"] = params["description"] or None
    update_metadata(txn, params.get("metadata"))
    return txn


customer_list_route(
    "/v1/customers/{customer_id}/balance_transactions",
    _CUSTOMER_TXN,
    "CustomerBalanceTransactionListParams",
    filters=("invoice",),
)


# -- customer sessions ----------------------------------------------------------------------------


def _components(requested: Any) -> dict[str, Any]:
    """Return a session's components: each requested one enabled, with its features."""
    shown: dict[str, Any] = objects.new("customer_session")["components"]  # all disabled
    for name, settings in (requested or {}).items():
        if name not in shown or not isinstance(settings, dict):
            continue
        enabled = str(settings.get("enabled")).lower() == "true"
        shown[name]["enabled"] = enabled
        if "features" in shown[name] and enabled:
            shown[name]["features"] = _features(name, settings.get("features") or {})
    return shown


def _features(name: str, given: dict[str, Any]) -> dict[str, Any]:
    if name == "payment_element":
        return {
            "payment_method_allow_redisplay_filters": list(
                given.get("payment_method_allow_redisplay_filters") or ["always"]
            ),
            "payment_method_redisplay": given.get("payment_method_redisplay") or "disabled",
            "payment_method_redisplay_limit": as_int(given, "payment_method_redisplay_limit"),
            "payment_method_remove": given.get("payment_method_remove") or "disabled",
            "payment_method_save": given.get("payment_method_save") or "disabled",
            "payment_method_save_usage": given.get("payment_method_save_usage") or None,
        }
    if name == "customer_sheet":
        return {
            "payment_method_allow_redisplay_filters": given.get(
                "payment_method_allow_redisplay_filters"
            ),
            "payment_method_remove": given.get("payment_method_remove") or None,
        }
    return {
        "payment_method_allow_redisplay_filters": given.get(
            "payment_method_allow_redisplay_filters"
        ),
        "payment_method_redisplay": given.get("payment_method_redisplay") or None,
        "payment_method_remove": given.get("payment_method_remove") or None,
        "payment_method_save": given.get("payment_method_save") or None,
        "payment_method_save_allow_redisplay_override": given.get(
            "payment_method_save_allow_redisplay_override"
        )
        or None,
    }


@route("POST", "/v1/customer_sessions", "CustomerSessionCreateParams")
def create_customer_session(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer_id = params.get("customer")
    if not customer_id:
        raise parameter_missing("customer")
    ctx.account.get(customer_id, "customer", param="customer")
    components = _components(params.get("components"))
    if not any(component["enabled"] for component in components.values()):
        raise StripeError(
            "You must enable at least one component for a customer session.",
            param="components",
        )
    now = ctx.now_for_customer(customer_id)
    session = ctx.build(
        "customer_session",
        "cuss",
        created=now,
        client_secret="cuss_secret_" + new_id("x", 48)[2:],
        components=components,
        customer=customer_id,
        expires_at=now + CUSTOMER_SESSION_SECONDS,
    )
    # Stripe's customer session has no id of its own: only its client secret names it.
    session.pop("id")
    return session
