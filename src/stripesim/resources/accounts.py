"""Connect accounts: each one created here is also its own space, reached with `Stripe-Account`."""

from __future__ import annotations

from typing import Any

from stripesim import objects
from stripesim.errors import StripeError, parameter_invalid
from stripesim.lists import as_bool, paginate, update_metadata
from stripesim.registry import Ctx, route
from stripesim.state import PLATFORM_ACCOUNT, Account, new_id

KIND = "account"
PLATFORM_CREATED = 1_704_067_200  # 2024-01-01: the simulated platform predates every test object

_CURRENCY_BY_COUNTRY = {
    "US": "usd", "CA": "cad", "GB": "gbp", "AU": "aud", "NZ": "nzd", "JP": "jpy", "CH": "chf",
    "SE": "sek", "NO": "nok", "DK": "dkk", "PL": "pln", "CZ": "czk", "HU": "huf", "RO": "ron",
    "BG": "bgn", "SG": "sgd", "HK": "hkd", "MX": "mxn", "BR": "brl", "IN": "inr", "AE": "aed",
    "TH": "thb", "MY": "myr",
}  # fmt: skip
_EURO = {"AT", "BE", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR", "IE", "IT", "LT", "LU", "LV",
         "MT", "NL", "PT", "SI", "SK"}  # fmt: skip
_TYPES = ("standard", "express", "custom")


def _currency_for(country: str) -> str:
    return "eur" if country in _EURO else _CURRENCY_BY_COUNTRY.get(country, "usd")


def _merge(target: dict[str, Any], given: Any) -> None:
    """Copy `given` (request values) onto `target` (Stripe's nested shape), key by key."""
    if not isinstance(given, dict):
        return
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value or None


def _capabilities(requested: Any, current: dict[str, str] | None = None) -> dict[str, str]:
    # Test mode has no verification to wait for: a requested capability is active at once.
    capabilities = dict(current or {})
    for name, settings in (requested or {}).items():
        wanted = as_bool(settings if isinstance(settings, dict) else {}, "requested", False)
        if wanted:
            capabilities[name] = "active"
        else:
            capabilities.pop(name, None)
    return capabilities


def _account_type(params: dict[str, Any]) -> str:
    kind = params.get("type")
    if kind:
        if kind not in _TYPES:
            raise parameter_invalid(
                "type", "Invalid type: must be one of custom, express, or standard"
            )
        return str(kind)
    dashboard = ((params.get("controller") or {}).get("stripe_dashboard") or {}).get("type")
    return {"express": "express", "none": "custom"}.get(dashboard or "", "standard")


def _build_account(account_id: str, *, created: int, params: dict[str, Any]) -> dict[str, Any]:
    obj = objects.new(KIND)
    country = str(params.get("country") or "US").upper()
    kind = _account_type(params)
    capabilities = _capabilities(params.get("capabilities"))
    business_profile = obj["business_profile"]
    _merge(business_profile, params.get("business_profile"))
    if business_profile["support_address"] is not None:
        business_profile["support_address"] = objects.address(business_profile["support_address"])
    settings = obj["settings"]
    settings["dashboard"]["display_name"] = business_profile.get("name")
    _merge(settings, params.get("settings"))
    _merge(obj["tos_acceptance"], params.get("tos_acceptance"))
    active = (
        capabilities.get("card_payments") == "active" or capabilities.get("transfers") == "active"
    )
    obj.update(
        id=account_id,
        business_type=params.get("business_type") or None,
        capabilities=capabilities,
        charges_enabled=capabilities.get("card_payments") == "active",
        payouts_enabled=active,
        details_submitted=active,
        controller={"is_controller": True, "type": "application"}
        if account_id != PLATFORM_ACCOUNT
        else {"type": "account"},
        country=country,
        created=created,
        default_currency=(params.get("default_currency") or _currency_for(country)).lower(),
        email=params.get("email") or None,
        external_accounts=objects.empty_list(f"/v1/accounts/{account_id}/external_accounts"),
        type=kind,
    )
    update_metadata(obj, params.get("metadata"))
    return obj


def platform_account() -> dict[str, Any]:
    """The platform's own account object (`GET /v1/account` without `Stripe-Account`)."""
    return _build_account(
        PLATFORM_ACCOUNT,
        created=PLATFORM_CREATED,
        params={
            "email": "platform@stripesim.test",
            "business_profile": {"name": "stripesim platform"},
            "capabilities": {
                "card_payments": {"requested": "true"},
                "transfers": {"requested": "true"},
            },
        },
    )


def _platform_only(ctx: Ctx) -> None:
    if ctx.account.id != PLATFORM_ACCOUNT:
        raise StripeError(
            "Only a platform can manage connected accounts; this request was made "
            f"as the connected account {ctx.account.id}.",
            status=403,
            code="account_invalid",
        )


def _connected(ctx: Ctx, account_id: str) -> dict[str, Any]:
    if account_id == PLATFORM_ACCOUNT:
        return platform_account()
    return ctx.sim.platform.get(account_id, KIND, param="account", label="account")


@route("POST", "/v1/accounts", "AccountCreateParams")
def create_account(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    _platform_only(ctx)
    account_id = new_id("acct", 16)
    account = _build_account(account_id, created=ctx.now(), params=params)
    ctx.account.add(account)
    # Its own space: objects made with `Stripe-Account: acct_…` live there, unseen by the platform.
    ctx.sim.accounts[account_id] = Account(account_id)
    return account


@route("GET", "/v1/account", "AccountRetrieveCurrentParams")
def retrieve_current_account(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return _connected(ctx, ctx.account.id)


@route("GET", "/v1/accounts/{account_id}", "AccountRetrieveParams")
def retrieve_account(ctx: Ctx, params: dict[str, Any], account_id: str) -> dict[str, Any]:
    if ctx.account.id != PLATFORM_ACCOUNT and account_id != ctx.account.id:
        _platform_only(ctx)
    return _connected(ctx, account_id)


@route("POST", "/v1/accounts/{account_id}", "AccountUpdateParams")
def update_account(ctx: Ctx, params: dict[str, Any], account_id: str) -> dict[str, Any]:
    _platform_only(ctx)
    if account_id == PLATFORM_ACCOUNT:
        raise StripeError(
            "The platform account cannot be updated through the API here.", param="account"
        )
    account = _connected(ctx, account_id)
    previous: dict[str, Any] = {}
    for key in ("email", "business_type", "default_currency"):
        if key in params and params[key] != account.get(key):
            previous[key] = account.get(key)
            account[key] = params[key] or None
    for key in ("business_profile", "settings", "tos_acceptance"):
        if key in params:
            previous[key] = dict(account[key])
            _merge(account[key], params[key])
    if "capabilities" in params:
        previous["capabilities"] = dict(account["capabilities"])
        account["capabilities"] = _capabilities(params["capabilities"], account["capabilities"])
        account["charges_enabled"] = account["capabilities"].get("card_payments") == "active"
    if "metadata" in params:
        previous["metadata"] = dict(account["metadata"])
        update_metadata(account, params["metadata"])
    if previous:
        # Stripe sends `account.updated` as a Connect event, from the connected account.
        space = ctx.sim.accounts.get(account_id)
        if space is not None:
            ctx.sim.emit(
                space,
                "account.updated",
                account,
                previous=previous,
                request_id=ctx.request_id,
                idempotency_key=ctx.idempotency_key,
            )
    return account


@route("DELETE", "/v1/accounts/{account_id}", "AccountDeleteParams")
def delete_account(ctx: Ctx, params: dict[str, Any], account_id: str) -> dict[str, Any]:
    _platform_only(ctx)
    if account_id == PLATFORM_ACCOUNT:
        raise StripeError("You cannot delete your own account through the API.", param="account")
    account = _connected(ctx, account_id)
    ctx.sim.platform.delete(account)
    # Its space goes too: `Stripe-Account` for it now answers account_invalid.
    ctx.sim.accounts.pop(account_id, None)
    return objects.deleted(KIND, account_id)


@route("GET", "/v1/accounts", "AccountListParams")
def list_accounts(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    _platform_only(ctx)
    return paginate(ctx.account, KIND, params, "/v1/accounts")
