"""What Tollgate answers about customers, subscriptions and credits, and each answer's JSON form.

The services return these views, the API's routes answer `to_json()` and the Python client's
HTTP backend rebuilds them with `from_json()`, so each shape is written once, here. Standard
library only: the client can carry this module without the server's dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def timestamp_json(value: datetime | None) -> str | None:
    """Return an aware datetime as ISO 8601 UTC (`2026-11-20T10:00:00Z`)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def timestamp_of(value: str | None) -> datetime | None:
    """Return the datetime an ISO 8601 timestamp names (None stays None)."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _required_timestamp(value: str) -> datetime:
    moment = timestamp_of(value)
    if moment is None:
        raise ValueError("a timestamp is required here")
    return moment


@dataclass(frozen=True)
class CustomerView:
    """A billing customer: plan and status come from its subscription."""

    id: str
    email: str | None
    name: str | None
    stripe_customer_id: str | None
    offline: bool
    currency: str
    plan: str | None
    status: str
    metadata: dict[str, str]
    created: datetime
    address: dict[str, str] | None = None
    stripe_account: str | None = None
    # The version of `plan` the customer is on: its subscription's, or the newest (issue 20).
    plan_version: int | None = None
    # Tax (issue 21): none | exempt | reverse, and tax IDs as `{id, type, value, country,
    # verification}` (verification: pending, verified, unverified or unavailable).
    tax_exempt: str = "none"
    tax_ids: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "stripe_customer_id": self.stripe_customer_id,
            "offline": self.offline,
            "currency": self.currency,
            "plan": self.plan,
            "status": self.status,
            "metadata": self.metadata,
            "created": timestamp_json(self.created),
            "address": self.address,
            "stripe_account": self.stripe_account,
            "plan_version": self.plan_version,
            "tax_exempt": self.tax_exempt,
            "tax_ids": [dict(tax_id) for tax_id in self.tax_ids],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CustomerView:
        return cls(
            id=data["id"],
            email=data.get("email"),
            name=data.get("name"),
            stripe_customer_id=data.get("stripe_customer_id"),
            offline=bool(data.get("offline")),
            currency=data["currency"],
            plan=data.get("plan"),
            status=data["status"],
            metadata=dict(data.get("metadata") or {}),
            created=_required_timestamp(data["created"]),
            address=data.get("address"),
            stripe_account=data.get("stripe_account"),
            plan_version=data.get("plan_version"),
            tax_exempt=data.get("tax_exempt") or "none",
            tax_ids=tuple(data.get("tax_ids") or ()),
        )


@dataclass(frozen=True)
class PendingChangeView:
    """A plan change Tollgate makes when the period ends."""

    plan: str
    interval: str
    seats: int | None
    effective_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "interval": self.interval,
            "seats": self.seats,
            "effective_at": timestamp_json(self.effective_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PendingChangeView:
        return cls(
            plan=data["plan"],
            interval=data["interval"],
            seats=data.get("seats"),
            effective_at=_required_timestamp(data["effective_at"]),
        )


@dataclass(frozen=True)
class SubscriptionDiscount:
    """A discount on a subscription: the coupon, what it takes off, for how long (issue 20).

    `amount_off` is in `currency`, the subscription's, when the coupon has an amount in it.
    """

    id: str
    coupon: str  # the catalog's coupon id; a coupon made outside the catalog: Stripe's id
    name: str | None
    percent_off: float | None
    amount_off: int | None
    currency: str | None
    duration: str  # once | repeating | forever
    duration_in_months: int | None
    start: datetime | None
    end: datetime | None  # when a repeating coupon stops discounting
    promotion_code: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "coupon": self.coupon,
            "name": self.name,
            "percent_off": self.percent_off,
            "amount_off": (
                {"amount": self.amount_off, "currency": self.currency}
                if self.amount_off is not None
                else None
            ),
            "duration": self.duration,
            "duration_in_months": self.duration_in_months,
            "start": timestamp_json(self.start),
            "end": timestamp_json(self.end),
            "promotion_code": self.promotion_code,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubscriptionDiscount:
        amount = data.get("amount_off") or {}
        return cls(
            id=str(data["id"]),
            coupon=str(data["coupon"]),
            name=data.get("name"),
            percent_off=data.get("percent_off"),
            amount_off=amount.get("amount"),
            currency=amount.get("currency"),
            duration=str(data.get("duration") or "once"),
            duration_in_months=data.get("duration_in_months"),
            start=timestamp_of(data.get("start")),
            end=timestamp_of(data.get("end")),
            promotion_code=data.get("promotion_code"),
        )


@dataclass(frozen=True)
class SubscriptionView:
    """A customer's subscription (status `none` and no interval when it has none in Stripe)."""

    plan: str | None
    interval: str | None
    status: str
    seats: int | None
    currency: str | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    collection_method: str | None
    stripe_subscription_id: str | None
    pending_change: PendingChangeView | None = None
    plan_version: int | None = None  # the version of `plan` its price belongs to (issue 20)
    discounts: tuple[SubscriptionDiscount, ...] = ()  # in force, in Stripe's order (issue 20)
    # With status `action_required`: the page where the customer confirms the payment (3-D Secure).
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        shown = {
            "plan": self.plan,
            "interval": self.interval,
            "status": self.status,
            "seats": self.seats,
            "currency": self.currency,
            "trial_end": timestamp_json(self.trial_end),
            "current_period_start": timestamp_json(self.current_period_start),
            "current_period_end": timestamp_json(self.current_period_end),
            "cancel_at_period_end": self.cancel_at_period_end,
            "collection_method": self.collection_method,
            "stripe_subscription_id": self.stripe_subscription_id,
            "pending_change": self.pending_change.to_json() if self.pending_change else None,
            "plan_version": self.plan_version,
            "discounts": [discount.to_json() for discount in self.discounts],
        }
        if self.url:
            shown["url"] = self.url
        return shown

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubscriptionView:
        pending = data.get("pending_change")
        return cls(
            plan=data.get("plan"),
            interval=data.get("interval"),
            status=data["status"],
            seats=data.get("seats"),
            currency=data.get("currency"),
            trial_end=timestamp_of(data.get("trial_end")),
            current_period_start=timestamp_of(data.get("current_period_start")),
            current_period_end=timestamp_of(data.get("current_period_end")),
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            collection_method=data.get("collection_method"),
            stripe_subscription_id=data.get("stripe_subscription_id"),
            pending_change=PendingChangeView.from_json(pending) if pending else None,
            plan_version=data.get("plan_version"),
            discounts=tuple(
                SubscriptionDiscount.from_json(item) for item in data.get("discounts") or []
            ),
            url=data.get("url"),
        )


@dataclass(frozen=True)
class CheckoutSession:
    """A hosted Checkout page (a plan, or a credit pack): send the buyer to `url`."""

    session_id: str
    url: str

    def to_json(self) -> dict[str, str]:
        return {"session_id": self.session_id, "url": self.url}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckoutSession:
        return cls(str(data["session_id"]), str(data["url"]))


@dataclass(frozen=True)
class CreditEntryView:
    """One change to a customer's credits: `amount` in (+) or out of (-) the balance, and why.

    A grant or purchase also says when its credits expire and how many of them are left.
    """

    id: int
    kind: str  # grant, purchase, burn, expiry, clawback, overdraft_invoice
    amount: int
    reason: str
    idempotency_key: str
    actor: str
    created: datetime
    expires_at: datetime | None = None
    remaining: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "amount": self.amount,
            "reason": self.reason,
            "idempotency_key": self.idempotency_key,
            "actor": self.actor,
            "created": timestamp_json(self.created),
            "expires_at": timestamp_json(self.expires_at),
            "remaining": self.remaining,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreditEntryView:
        return cls(
            id=int(data["id"]),
            kind=str(data["kind"]),
            amount=int(data["amount"]),
            reason=str(data["reason"]),
            idempotency_key=str(data["idempotency_key"]),
            actor=str(data["actor"]),
            created=_required_timestamp(data["created"]),
            expires_at=timestamp_of(data.get("expires_at")),
            remaining=data.get("remaining"),
        )


@dataclass(frozen=True)
class CreditsView:
    """A customer's credits: the balance, how far below zero it may go, the newest entries."""

    customer: str
    balance: int
    allowance: int
    entries: list[CreditEntryView]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "balance": self.balance,
            "allowance": self.allowance,
            "entries": [entry.to_json() for entry in self.entries],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreditsView:
        return cls(
            customer=str(data["customer"]),
            balance=int(data["balance"]),
            allowance=int(data["allowance"]),
            entries=[CreditEntryView.from_json(entry) for entry in data["entries"]],
        )
