"""What the client's verbs need from a Tollgate: one method per verb, in Tollgate's own terms.

Two backends answer it: `HttpBackend` speaks the JSON API with an API key, and `LocalBackend`
calls the use cases the API's routes call (`tollgate.api.operations`) over a Container in this
process. Both return the services' own views (`tollgate.views`) and raise Tollgate's errors.

A request body is the JSON object the API's route takes (only the fields the caller gave);
over HTTP it is sent as is, in process the route's own request model checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tollgate_client.decisions import Decision
from tollgate_client.views import (
    CheckoutSession,
    CreditEntryView,
    CreditsView,
    CustomerView,
    SubscriptionView,
)

Body = Mapping[str, Any]


class Backend(Protocol):
    """Where the client's verbs are answered."""

    # True when `check` answers in this process without I/O (no thread needed around it).
    in_process: bool

    def create_customer(self, body: Body) -> CustomerView: ...

    def get_customer(self, customer_id: str) -> CustomerView: ...

    def update_customer(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CustomerView: ...

    def checkout(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CheckoutSession: ...

    def portal(self, customer_id: str, body: Body, *, idempotency_key: str | None) -> str: ...

    def get_subscription(self, customer_id: str) -> SubscriptionView: ...

    def change_subscription(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> SubscriptionView: ...

    def cancel_subscription(
        self, customer_id: str, *, at_period_end: bool, idempotency_key: str | None
    ) -> SubscriptionView: ...

    def resume_subscription(
        self, customer_id: str, *, idempotency_key: str | None
    ) -> SubscriptionView: ...

    def record_usage(self, body: Body) -> dict[str, Any]: ...

    def consume(self, customer_id: str, body: Body) -> Decision: ...

    def billing_session(self, customer_id: str) -> dict[str, Any]: ...

    def get_entitlements(self, customer_id: str) -> dict[str, Any]: ...

    def check(
        self, customer_id: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision: ...

    def get_usage(self, customer_id: str) -> dict[str, Any]: ...

    def get_credits(self, customer_id: str, *, limit: int | None) -> CreditsView: ...

    def grant_credits(self, customer_id: str, body: Body) -> CreditEntryView: ...

    def buy_credits(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CheckoutSession: ...

    def close(self) -> None: ...
