"""The client in process: the API's use cases over a Container, without HTTP.

Each verb checks its input with the route's own request model and calls the use case the
route calls (`tollgate.api.operations`), with the same wiring: the same gateway, settings,
clock and usage counters (Redis when TOLLGATE_REDIS_URL is set), and the same cached decisions
dropped after a change. Bad input raises InvalidRequest here as it answers 400 over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tollgate.api import operations
from tollgate.api.schemas import (
    CheckoutCreate,
    ConsumeCreate,
    CreditCheckoutCreate,
    CreditGrantCreate,
    CreditsQuery,
    CustomerCreate,
    CustomerUpdate,
    PortalCreate,
    SubscriptionPut,
    UsageBatch,
    invalid_input,
    plain_consume,
)
from tollgate.bootstrap import Container
from tollgate.domain.entitlements import Decision
from tollgate.services.usage import ConsumeCall
from tollgate_client.backend import Body
from tollgate_client.verbs import Client
from tollgate_client.views import (
    CheckoutSession,
    CreditEntryView,
    CreditsView,
    CustomerView,
    SubscriptionView,
)

M = TypeVar("M", bound=BaseModel)

# Who granted credits through this client, in the credits ledger (over HTTP: the API key).
LIBRARY_ACTOR = "library"


def _checked(model: type[M], body: Body) -> M:
    """Return the body as the route's request model takes it; raise InvalidRequest if it won't."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise invalid_input(error.errors()[0]) from None


class LocalBackend:
    """The verbs as the API's use cases over `container`, in this process."""

    in_process = True

    def __init__(self, container: Container) -> None:
        self.container = container

    # -- customers and subscriptions -------------------------------------------------------

    def create_customer(self, body: Body) -> CustomerView:
        created = operations.create_customer(self.container, _checked(CustomerCreate, body))
        return created.customer

    def get_customer(self, customer_id: str) -> CustomerView:
        return operations.get_customer(self.container, customer_id)

    def update_customer(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CustomerView:
        return operations.update_customer(
            self.container,
            customer_id,
            _checked(CustomerUpdate, body),
            idempotency_key=idempotency_key,
        )

    def checkout(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CheckoutSession:
        return operations.start_checkout(
            self.container,
            customer_id,
            _checked(CheckoutCreate, body),
            idempotency_key=idempotency_key,
        )

    def portal(self, customer_id: str, body: Body, *, idempotency_key: str | None) -> str:
        return operations.open_portal(
            self.container,
            customer_id,
            _checked(PortalCreate, body),
            idempotency_key=idempotency_key,
        )

    def get_subscription(self, customer_id: str) -> SubscriptionView:
        return operations.get_subscription(self.container, customer_id)

    def change_subscription(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> SubscriptionView:
        return operations.change_subscription(
            self.container,
            customer_id,
            _checked(SubscriptionPut, body),
            idempotency_key=idempotency_key,
        )

    def cancel_subscription(
        self, customer_id: str, *, at_period_end: bool, idempotency_key: str | None
    ) -> SubscriptionView:
        return operations.cancel_subscription(
            self.container,
            customer_id,
            at_period_end=at_period_end,
            idempotency_key=idempotency_key,
        )

    def resume_subscription(
        self, customer_id: str, *, idempotency_key: str | None
    ) -> SubscriptionView:
        return operations.resume_subscription(
            self.container, customer_id, idempotency_key=idempotency_key
        )

    # -- usage and entitlements ------------------------------------------------------------

    def record_usage(self, body: Body) -> dict[str, Any]:
        report = operations.record_usage(self.container, UsageBatch.parse(dict(body)))
        return report.to_json()

    def consume(self, customer_id: str, body: Body) -> Decision:
        plain = plain_consume(body)  # the client's own body: the model only for anything else
        if plain is None:
            call = operations.consume_call(customer_id, _checked(ConsumeCreate, body))
        else:
            call = tuple.__new__(ConsumeCall, (customer_id, *plain))  # made in C
        return operations.consume(self.container, call).decision

    def billing_session(self, customer_id: str) -> dict[str, Any]:
        # In process there is no request to learn the server's address from: the link is
        # built on TOLLGATE_PUBLIC_URL.
        return operations.open_billing_session(
            self.container, customer_id, base_url=self.container.settings.public_url or ""
        )

    def get_entitlements(self, customer_id: str) -> dict[str, Any]:
        return self.container.entitlements.entitlements(customer_id).to_json()

    def get_usage(self, customer_id: str) -> dict[str, Any]:
        return operations.get_usage(self.container, customer_id).to_json()

    @cached_property
    def check(self) -> Callable[..., Decision]:
        """The container's cache answers (its entries dropped as the change feed says).

        Its own method, not one wrapping it: a cached check costs about a microsecond, and a
        call more would add a twentieth to it (bench/entitlements.py).
        """
        return self.container.entitlements.check

    # -- credits ---------------------------------------------------------------------------

    def get_credits(self, customer_id: str, *, limit: int | None) -> CreditsView:
        query = _checked(CreditsQuery, {} if limit is None else {"limit": limit})
        return operations.list_credits(self.container, customer_id, query)

    def grant_credits(self, customer_id: str, body: Body) -> CreditEntryView:
        grant = _checked(CreditGrantCreate, body)
        result = operations.grant_credits(self.container, customer_id, grant, actor=LIBRARY_ACTOR)
        return result.entry

    def buy_credits(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CheckoutSession:
        return operations.start_credit_checkout(
            self.container,
            customer_id,
            _checked(CreditCheckoutCreate, body),
            idempotency_key=idempotency_key,
        )

    def close(self) -> None:
        """Nothing to let go of: the container is its owner's to close."""


class LocalTollgate(Client):
    """Tollgate in-process: the same verbs and answers, over the API's use cases on `container`.

    Input is checked by the API's own request models, so bad input raises InvalidRequest here
    as it answers 400 over HTTP.
    """

    backend: LocalBackend

    def __init__(self, container: Container) -> None:
        super().__init__(LocalBackend(container))
        self.container = container
