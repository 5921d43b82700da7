"""Per-customer deals (issue 20): overrides of a feature, and one-off usage grants."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from tollgate.api.deps import container, read_scope, write_actor
from tollgate.api.responses import created_or_repeated
from tollgate.api.schemas import RequestBody
from tollgate.bootstrap import Container
from tollgate.services.addons import list_addons, set_addon
from tollgate.services.deals import grant_usage, list_overrides, remove_override, set_override
from tollgate.services.discounts import apply_discount

router = APIRouter(prefix="/v1/customers", tags=["deals"])


class OverridePut(RequestBody):
    """The customer's own grant of a feature: on/off, or a limit (`"unlimited"` for none)."""

    enabled: bool | None = None
    limit: Annotated[int, Field(ge=0)] | Literal["unlimited"] | None = None
    ends_at: datetime | None = None


class UsageGrantCreate(RequestBody):
    """Included usage of a metered feature for the current period, once per key."""

    feature: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=10**15)
    reason: str | None = Field(None, max_length=500)
    idempotency_key: str = Field(min_length=1, max_length=255)


@router.get("/{customer_id}/overrides", dependencies=[Depends(read_scope)])
def get_overrides(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """The customer's overrides (ended ones too, with their end)."""
    found = list_overrides(db=app.db, customer_id=customer_id)
    return {"overrides": [value.to_json() for value in found]}


@router.put("/{customer_id}/overrides/{feature}")
def put_override(
    customer_id: str,
    feature: str,
    body: OverridePut,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> dict[str, Any]:
    """Set the customer's own grant of a feature; entitlements follow at once."""
    value = set_override(
        app, customer_id=customer_id, feature=feature, actor=actor, **body.model_dump()
    )
    app.forget_decisions([customer_id])
    return value.to_json()


@router.delete("/{customer_id}/overrides/{feature}")
def delete_override(
    customer_id: str,
    feature: str,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> Response:
    """Drop the override: the plan decides the feature again."""
    remove_override(app, customer_id=customer_id, feature=feature, actor=actor)
    app.forget_decisions([customer_id])
    return Response(status_code=204)


@router.post("/{customer_id}/grants")
def post_usage_grant(
    customer_id: str,
    body: UsageGrantCreate,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> JSONResponse:
    """Give included usage for this period (201; the same key again answers 200)."""
    grant, created = grant_usage(app, customer_id=customer_id, actor=actor, **body.model_dump())
    app.forget_decisions([customer_id])
    return created_or_repeated(grant.to_json(), created=created)


class DiscountCreate(RequestBody):
    """A catalog coupon, or one of its promotion codes, for the customer's subscription."""

    coupon: str | None = Field(None, max_length=64)
    promotion_code: str | None = Field(None, max_length=64)


@router.post("/{customer_id}/discounts")
def post_discount(
    customer_id: str,
    body: DiscountCreate,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> JSONResponse:
    """Discount the customer's live subscription (201): the next invoices show it."""
    given = apply_discount(app, customer_id=customer_id, actor=actor, **body.model_dump())
    return JSONResponse(given.to_json(), status_code=201)


class AddOnPut(RequestBody):
    """How many units of the add-on the subscription carries (0 removes it)."""

    quantity: int = Field(ge=0, le=10_000)


@router.get("/{customer_id}/addons", dependencies=[Depends(read_scope)])
def get_addons(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """The add-ons the customer's plan allows, each with its price and the units held."""
    offers = list_addons(app, customer_id=customer_id)
    return {"data": [offer.to_json() for offer in offers]}


@router.put("/{customer_id}/addons/{addon}")
def put_addon(
    customer_id: str,
    addon: str,
    body: AddOnPut,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> dict[str, Any]:
    """Buy (or change, or remove) an add-on: its own item on the live subscription."""
    return set_addon(
        app,
        customer_id=customer_id,
        addon_id=addon,
        quantity=body.quantity,
        actor=actor,
    ).to_json()
