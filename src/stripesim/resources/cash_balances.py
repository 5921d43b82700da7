"""Bank transfers: a customer's cash balance, its transactions, funding instructions, the test
helper that simulates an incoming transfer, and the hosted instructions page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stripesim import billing, cash_balances
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_currency, required_int
from stripesim.pages import hosted, message_page, render_page
from stripesim.registry import Ctx, customer_list_route, customer_retrieve_route, page, route
from stripesim.state import Simulator, snapshot

_TXN = "customer_cash_balance_transaction"


@route("GET", "/v1/customers/{customer_id}/cash_balance", "CustomerCashBalanceRetrieveParams")
def retrieve_cash_balance(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    return cash_balances.cash_balance(ctx.account.get(customer_id, "customer"))


customer_list_route(
    "/v1/customers/{customer_id}/cash_balance_transactions",
    _TXN,
    "CustomerCashBalanceTransactionListParams",
)


customer_retrieve_route(
    "/v1/customers/{customer_id}/cash_balance_transactions/{txn_id}",
    _TXN,
    "CustomerCashBalanceTransactionRetrieveParams",
    label="customer cash balance transaction",
)


@route(
    "POST",
    "/v1/customers/{customer_id}/funding_instructions",
    "CustomerFundingInstructionsCreateParams",
)
def create_funding_instructions(
    ctx: Ctx, params: dict[str, Any], customer_id: str
) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    for key in ("bank_transfer", "currency", "funding_type"):
        if not params.get(key):
            raise parameter_missing(key)
    if params["funding_type"] != "bank_transfer":
        raise StripeError("Invalid funding_type: must be bank_transfer", param="funding_type")
    cash_balances.check_bank_transfer_params(params)
    return cash_balances.funding_instructions(customer, str(params["currency"]))


@route(
    "POST",
    "/v1/test_helpers/customers/{customer_id}/fund_cash_balance",
    "test_helpers.CustomerFundCashBalanceParams",
)
def fund_cash_balance(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    amount = required_int(params, "amount")
    if amount <= 0:
        raise StripeError("Invalid positive integer", param="amount")
    if not params.get("currency"):
        raise parameter_missing("currency")
    currency = as_currency(params)
    return billing.fund_cash_balance(
        ctx,
        customer,
        amount=amount,
        currency=currency,
        reference=params.get("reference") or None,
        now=ctx.now_for_customer(customer_id),
    )


@page("/bank-transfer/{intent_id}", methods=("GET",))
async def bank_transfer_instructions(request: Request, sim: Simulator) -> Response:
    """Stripe's hosted instructions: where to send the money, the reference, what remains."""
    intent_id = request.path_params["intent_id"]
    with hosted(sim, request, intent_id, "payment_intent") as found:
        if found is None:
            return message_page(404, "Not found", "There are no transfer instructions here.")
        _, intent = found
        shown = snapshot(intent)
    action = (shown.get("next_action") or {}).get("display_bank_transfer_instructions")
    if action is None:
        return message_page(200, "Nothing to pay", f"{intent_id}: {shown['status']}")
    return render_page("bank_transfer.html", instructions=action)
