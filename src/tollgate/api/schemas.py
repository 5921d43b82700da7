"""Request and response shapes of the API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, model_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from tollgate.domain.catalog import Catalog, Plan, PlanFeature
from tollgate.domain.errors import InvalidRequest
from tollgate.domain.text import NUL, first_unstorable, text_problem
from tollgate.money import Money
from tollgate.services.usage.events import MAX_ID_LENGTH


def json_response(body: object) -> Response:
    """A 200 JSON answer serialized by orjson (FastAPI's own encoder is several times slower)."""
    return Response(orjson.dumps(body), media_type="application/json")


def _feature_json(feature: PlanFeature) -> dict[str, Any]:
    return {
        key: value
        for key, value in {
            "enabled": feature.enabled,
            "limit": feature.limit,
            "included": feature.included,
            "hard": feature.hard,
            "overage": (
                {
                    "per": feature.overage.per,
                    "amount_minor_by_currency": {
                        currency: str(amount)
                        for currency, amount in feature.overage.amount_minor_by_currency.items()
                    },
                }
                if feature.overage
                else None
            ),
        }.items()
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "name": plan.name,
        "version": plan.version,
        "custom": plan.custom,
        "trial_days": plan.trial_days,
        "seats": {"min": plan.seats.min, "max": plan.seats.max} if plan.seats else None,
        "prices": [
            {"interval": price.interval, **Money(price.amount_minor, price.currency).to_json()}
            for price in plan.prices
        ],
        "features": {
            feature_id: _feature_json(value) for feature_id, value in plan.features.items()
        },
    }


def catalog_json(catalog: Catalog) -> dict[str, Any]:
    return {
        "currency": catalog.currency,
        "default_plan": catalog.default_plan,
        "version": catalog.version,
        "features": {
            feature.id: {"type": str(feature.type), "name": feature.name, "unit": feature.unit}
            for feature in catalog.features.values()
        },
        "plans": [plan_json(plan) for plan in catalog.plans.values()],
    }


# -- customers and subscriptions -------------------------------------------------------------


def invalid_input(problem: Mapping[str, Any]) -> InvalidRequest:
    """Return the error for a request model's complaint (FastAPI's or the in-process client's).

    The parameter is named without FastAPI's "body" / "query" / "path" prefix.
    """
    location = [
        str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path")
    ]
    param = ".".join(location) or None
    message = str(problem.get("msg", "invalid request"))
    if problem.get("type") == "json_invalid":
        message, param = "the request body is not valid JSON", None
    elif param:
        message = f"{param}: {message}"
    return InvalidRequest(message, param=param)


class RequestBody(BaseModel):
    """A request body: unknown fields are refused, so a typo never passes silently, and so is
    text no database can store (NUL, lone surrogates: see domain/text.py), in any field."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problem = first_unstorable(data)
        if problem is not None:
            raise PydanticCustomError("unstorable_text", "{problem}", {"problem": problem})
        return data


class CustomerCreate(RequestBody):
    id: str = Field(description="The app's id for the organisation (1 to 255 characters).")
    email: str
    name: str | None = None
    metadata: dict[str, Any] | None = None
    offline: bool = False
    plan: str | None = Field(
        None,
        description="Offline customers: any plan. Others: a free plan (default: the catalog's).",
    )
    currency: str | None = Field(None, description="Bill in this currency once subscribed.")
    stripe_account: str | None = Field(None, description="A Connect account (acct_…) to bill on.")
    address: dict[str, Any] | None = None
    test_clock: str | None = Field(None, description="Test mode: a Stripe test clock (clock_…).")


class CustomerUpdate(RequestBody):
    email: str | None = None
    name: str | None = None
    address: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = Field(
        None, description='Keys to set; a key set to null or "" is removed.'
    )
    tax_exempt: str | None = Field(
        None, description="none, exempt (no tax) or reverse (reverse charge: the buyer accounts)"
    )
    tax_ids: list[dict[str, Any]] | None = Field(
        None,
        description="The customer's tax IDs, the whole set: `[{type, value}]` with Stripe's "
        "types (eu_vat, gb_vat, ca_gst_hst, ca_qst, au_abn…); [] removes them all.",
    )


class CheckoutCreate(RequestBody):
    plan: str
    interval: str
    success_url: str
    cancel_url: str
    trial_days: int | None = None
    seats: int | None = None


class PortalCreate(RequestBody):
    return_url: str


class SubscriptionPut(RequestBody):
    plan: str
    interval: str
    seats: int | None = None
    proration: str | None = Field(
        None, description="create_prorations, none or always_invoice (default: the settings')."
    )
    collection_method: str | None = None
    days_until_due: int | None = None
    trial_days: int | None = None
    payment_method: str | None = Field(
        None,
        description="customer_balance: invoices paid by bank transfer (sent, due in "
        "days_until_due, default the plan's or 30); default: the customer's payment method.",
    )
    at_period_end: bool | None = Field(
        None,
        description="Apply the change at period end (true) or now (false); "
        "default: upgrades now, downgrades at period end.",
    )


# -- credits ---------------------------------------------------------------------------------


class CreditsQuery(BaseModel):
    limit: int = Field(100, ge=1, le=1000, description="How many entries, newest first.")


class CreditGrantCreate(RequestBody):
    amount: StrictInt = Field(description="Whole credits to grant (1 or more).")
    reason: str
    idempotency_key: str = Field(description="The same key again grants nothing more.")
    expires_at: AwareDatetime | None = Field(None, description="When unspent credits expire.")


class MoneyBody(RequestBody):
    amount: StrictInt = Field(description="Integer minor units (cents), as Stripe counts them.")
    currency: str = Field(description="ISO 4217, e.g. usd; must be the payment's.")


class RefundCreate(RequestBody):
    invoice: str | None = Field(None, description="A paid invoice: Stripe makes a credit note.")
    charge: str | None = Field(None, description="A charge (name an invoice or a charge).")
    amount: MoneyBody | None = Field(None, description="How much; all of it when absent.")
    reason: str | None = Field(None, description="duplicate, fraudulent or requested_by_customer.")


class CreditAllowancePut(RequestBody):
    allowance: StrictInt = Field(description="How far below zero the balance may go.")


class CreditCheckoutCreate(RequestBody):
    pack: str
    success_url: str
    cancel_url: str


# -- usage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageBatch:
    """A `POST /v1/usage` body. Checked by hand, not by a model: a batch holds up to 1,000
    events, and `record_usage` checks each one (a bad event is rejected, not the batch)."""

    events: Any
    enforce_limits: bool | None  # None: the settings' TOLLGATE_USAGE_ENFORCE_LIMITS

    @classmethod
    def parse(cls, body: Any) -> UsageBatch:
        if not isinstance(body, dict) or "events" not in body:
            message = 'send {"events": [{id, customer, meter, value}, ...]}'
            raise InvalidRequest(message, param="events")
        enforce = body.get("enforce_limits")
        if "enforce_limits" in body and not isinstance(enforce, bool):
            raise InvalidRequest("enforce_limits must be true or false", param="enforce_limits")
        return cls(body["events"], enforce)


# -- usage controls --------------------------------------------------------------------------


class ReservationCreate(RequestBody):
    feature: str = Field(description="A summed metered feature.")
    quantity: StrictInt = Field(ge=1, description="Units to hold against the limit.")
    ttl_seconds: StrictInt = Field(
        ge=1, le=604_800, description="Released by the expiry job after this (at most 7 days)."
    )
    id: str = Field(min_length=1, max_length=230, description="Your id: a retry repeats it.")


class ReservationCommit(RequestBody):
    quantity: StrictInt = Field(
        ge=0, description="Units actually used: up to the held ones, or more where they fit."
    )


class UsageVoid(RequestBody):
    ids: list[Any] = Field(description="Ids of recorded usage events (1 to 1,000).")
    reason: Any = Field(description="Why (1 to 500 characters); kept in the audit log.")


class SpendCapPut(RequestBody):
    amount: StrictInt | None = Field(
        description="Minor units of overage a period may cost at most; null removes the cap."
    )
    currency: str | None = Field(None, description="The customer's currency (checked).")
    by_customer: bool = Field(
        False,
        description="The customer sets it itself (the app relays its choice); needs the "
        "catalog's `customer_spend_caps: true`.",
    )


class AlertCreate(RequestBody):
    feature: str = Field(description="A metered feature.")
    kind: str = Field(description="units | percent (of the included quantity) | money.")
    threshold: StrictInt = Field(
        description="Units, percent, or minor units of overage (money, in the customer's currency)."
    )
    id: str | None = Field(None, max_length=255, description="Your id (a repeat is harmless).")


class AutoTopupPut(RequestBody):
    below: StrictInt | None = Field(
        description="Buy the pack when the credit balance falls below this; null turns it off."
    )
    pack: str | None = Field(None, description="A credit pack of the catalog.")


class ConsumeCreate(RequestBody):
    feature: str = Field(description="A metered feature.")
    quantity: StrictInt = Field(1, ge=0, description="Units to use (the reading, for max/last).")
    id: str = Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="Your id of this use: a retry repeats it.",
    )


_CONSUME_FIELDS = frozenset(ConsumeCreate.model_fields)


def plain_consume(data: Any) -> tuple[str, int, str] | None:
    """Return (feature, quantity, id) of a consume body ConsumeCreate takes as it is, checked
    without the model; None for anything else, which the model judges (and so words the error).

    The plain valid case is every consume call an app makes, and the model's validation costs
    more than the check (about 10 µs of an in-process call): exactly the model's fields, text
    a database can store, a whole number 0 or more (under 2**53, as the service takes it) and
    an id of 1 to 255 characters.
    """
    if type(data) is not dict or not data.keys() <= _CONSUME_FIELDS:
        return None
    feature, quantity, use_id = data.get("feature"), data.get("quantity", 1), data.get("id")
    if type(feature) is not str or type(use_id) is not str or type(quantity) is not int:
        return None
    if not 0 <= quantity < 2**53 or not 0 < len(use_id) <= MAX_ID_LENGTH:
        return None
    # Plain ASCII without NUL, checked in C: text_problem's own calls only for the rare rest.
    plain = feature.isascii() and use_id.isascii() and NUL not in feature and NUL not in use_id
    if not plain and (text_problem(feature) is not None or text_problem(use_id) is not None):
        return None
    return feature, quantity, use_id
