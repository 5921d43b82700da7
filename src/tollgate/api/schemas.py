"""Request and response shapes of the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from tollgate.domain.catalog import Catalog, Plan, PlanFeature
from tollgate.money import Money


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
        "features": {
            feature.id: {"type": str(feature.type), "name": feature.name, "unit": feature.unit}
            for feature in catalog.features.values()
        },
        "plans": [plan_json(plan) for plan in catalog.plans.values()],
    }


# -- customers and subscriptions -------------------------------------------------------------


def timestamp_json(value: datetime | None) -> str | None:
    """Return an aware datetime as ISO 8601 UTC (`2026-11-20T10:00:00Z`)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Body(BaseModel):
    """A request body: unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class CustomerCreate(_Body):
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


class CustomerUpdate(_Body):
    email: str | None = None
    name: str | None = None
    address: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = Field(
        None, description='Keys to set; a key set to null or "" is removed.'
    )


class CheckoutCreate(_Body):
    plan: str
    interval: str
    success_url: str
    cancel_url: str
    trial_days: int | None = None
    seats: int | None = None


class PortalCreate(_Body):
    return_url: str


class SubscriptionPut(_Body):
    plan: str
    interval: str
    seats: int | None = None
    proration: str | None = Field(
        None, description="create_prorations, none or always_invoice (default: the settings')."
    )
    collection_method: str | None = None
    days_until_due: int | None = None
    trial_days: int | None = None
    at_period_end: bool | None = Field(
        None,
        description="Apply the change at period end (true) or now (false); "
        "default: upgrades now, downgrades at period end.",
    )


def customer_json(customer: Any) -> dict[str, Any]:
    """Return a CustomerView in the API's shape."""
    return {
        "id": customer.id,
        "email": customer.email,
        "name": customer.name,
        "stripe_customer_id": customer.stripe_customer_id,
        "offline": customer.offline,
        "currency": customer.currency,
        "plan": customer.plan,
        "status": customer.status,
        "metadata": customer.metadata,
        "created": timestamp_json(customer.created),
        "address": customer.address,
        "stripe_account": customer.stripe_account,
    }


def subscription_json(subscription: Any) -> dict[str, Any]:
    """Return a SubscriptionView in the API's shape."""
    pending = subscription.pending_change
    return {
        "plan": subscription.plan,
        "interval": subscription.interval,
        "status": subscription.status,
        "seats": subscription.seats,
        "currency": subscription.currency,
        "trial_end": timestamp_json(subscription.trial_end),
        "current_period_start": timestamp_json(subscription.current_period_start),
        "current_period_end": timestamp_json(subscription.current_period_end),
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "collection_method": subscription.collection_method,
        "stripe_subscription_id": subscription.stripe_subscription_id,
        "pending_change": (
            {
                "plan": pending.plan,
                "interval": pending.interval,
                "seats": pending.seats,
                "effective_at": timestamp_json(pending.effective_at),
            }
            if pending
            else None
        ),
    }
