"""The client's verbs, one class for both ways to reach Tollgate: each verb calls its backend."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, Self, TypeVar

from tollgate_client.backend import Backend
from tollgate_client.decisions import Decision
from tollgate_client.errors import FeatureDenied
from tollgate_client.views import (
    CheckoutSession,
    CreditEntryView,
    CreditsView,
    CustomerView,
    SubscriptionView,
)

P = ParamSpec("P")
R = TypeVar("R")


def _given(**values: Any) -> dict[str, Any]:
    """Return only the arguments the caller gave (None means "not given")."""
    return {key: value for key, value in values.items() if value is not None}


class Client:
    """Customers, subscriptions, usage, entitlements and credits, answered by `backend`.

    Use `Tollgate(base_url, api_key)` over HTTP or `LocalTollgate(container)` in process; both
    answer the services' views and raise Tollgate's errors, so code written against one runs
    against the other. Use as a context manager or call `close()`.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- customers -------------------------------------------------------------------------

    def create_customer(
        self,
        id: str,
        *,
        email: str,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        offline: bool = False,
        plan: str | None = None,
        currency: str | None = None,
        stripe_account: str | None = None,
        address: Mapping[str, str] | None = None,
    ) -> CustomerView:
        """Create the billing customer for the organisation `id` (repeating it is harmless)."""
        body = _given(
            id=id,
            email=email,
            name=name,
            metadata=dict(metadata) if metadata is not None else None,
            plan=plan,
            currency=currency,
            stripe_account=stripe_account,
            address=dict(address) if address is not None else None,
        )
        if offline:
            body["offline"] = True
        return self.backend.create_customer(body)

    def get_customer(self, id: str) -> CustomerView:
        """Return the customer with its plan and status."""
        return self.backend.get_customer(id)

    def update_customer(
        self,
        id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        address: Mapping[str, str] | None = None,
        metadata: Mapping[str, str | None] | None = None,
        tax_exempt: str | None = None,
        tax_ids: Sequence[Mapping[str, str]] | None = None,
        idempotency_key: str | None = None,
    ) -> CustomerView:
        """Change email, name, address, metadata (a metadata value of None removes the key), tax
        status (none, exempt, reverse) or tax IDs (`[{type, value}]`: the whole set)."""
        body = _given(
            email=email,
            name=name,
            address=dict(address) if address is not None else None,
            metadata=dict(metadata) if metadata is not None else None,
            tax_exempt=tax_exempt,
            tax_ids=[dict(entry) for entry in tax_ids] if tax_ids is not None else None,
        )
        return self.backend.update_customer(id, body, idempotency_key=idempotency_key)

    def checkout(
        self,
        id: str,
        *,
        plan: str,
        interval: str,
        success_url: str,
        cancel_url: str,
        trial_days: int | None = None,
        seats: int | None = None,
        idempotency_key: str | None = None,
    ) -> CheckoutSession:
        """Open a hosted Checkout page that subscribes the customer to `plan`."""
        body = _given(
            plan=plan,
            interval=interval,
            success_url=success_url,
            cancel_url=cancel_url,
            trial_days=trial_days,
            seats=seats,
        )
        return self.backend.checkout(id, body, idempotency_key=idempotency_key)

    def portal(self, id: str, *, return_url: str, idempotency_key: str | None = None) -> str:
        """Return a Customer Portal URL for the customer."""
        body = {"return_url": return_url}
        return self.backend.portal(id, body, idempotency_key=idempotency_key)

    # -- subscriptions ---------------------------------------------------------------------

    def get_subscription(self, id: str) -> SubscriptionView:
        """Return the customer's subscription."""
        return self.backend.get_subscription(id)

    def change_subscription(
        self,
        id: str,
        *,
        plan: str,
        interval: str,
        seats: int | None = None,
        proration: str | None = None,
        collection_method: str | None = None,
        days_until_due: int | None = None,
        trial_days: int | None = None,
        at_period_end: bool | None = None,
        payment_method: str | None = None,
        idempotency_key: str | None = None,
    ) -> SubscriptionView:
        """Subscribe directly, or change plan, interval or seats (`payment_method=
        "customer_balance"`: invoices paid by bank transfer)."""
        body = _given(
            plan=plan,
            interval=interval,
            seats=seats,
            proration=proration,
            collection_method=collection_method,
            days_until_due=days_until_due,
            trial_days=trial_days,
            at_period_end=at_period_end,
            payment_method=payment_method,
        )
        return self.backend.change_subscription(id, body, idempotency_key=idempotency_key)

    def cancel_subscription(
        self, id: str, *, at_period_end: bool = False, idempotency_key: str | None = None
    ) -> SubscriptionView:
        """Cancel now, or at period end."""
        return self.backend.cancel_subscription(
            id, at_period_end=at_period_end, idempotency_key=idempotency_key
        )

    def resume_subscription(
        self, id: str, *, idempotency_key: str | None = None
    ) -> SubscriptionView:
        """Undo a cancel at period end."""
        return self.backend.resume_subscription(id, idempotency_key=idempotency_key)

    # -- usage and entitlements ------------------------------------------------------------

    def record_usage(
        self, events: list[Mapping[str, Any]], *, enforce_limits: bool | None = None
    ) -> dict[str, Any]:
        """Record usage events (each counted once per `id`): {accepted, duplicates, rejected}."""
        body: dict[str, Any] = {"events": [dict(event) for event in events]}
        if enforce_limits is not None:
            body["enforce_limits"] = enforce_limits
        return self.backend.record_usage(body)

    def consume(self, customer: str, feature: str, quantity: int = 1, *, id: str) -> Decision:
        """Use `quantity` of a metered feature if the customer may, in one atomic step: allowed
        and counted, or denied with the reason and nothing counted. Once per `id`: a retry
        returns the first answer and counts nothing again."""
        body = {"feature": feature, "quantity": quantity, "id": id}
        return self.backend.consume(customer, body)

    def billing_session(self, id: str) -> dict[str, Any]:
        """Return a short-lived signed link to the customer's billing page: `{customer, url,
        expires_at}`. Send the customer there at once; the link is not for keeping."""
        return self.backend.billing_session(id)

    def get_entitlements(self, id: str) -> dict[str, Any]:
        """Return every feature the customer has now, with plan, status and access."""
        return self.backend.get_entitlements(id)

    def get_usage(self, id: str) -> dict[str, Any]:
        """Return the customer's usage this period per meter."""
        return self.backend.get_usage(id)

    def check(
        self, customer: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        """Return whether the customer may use `quantity` more of `feature` now.

        Over HTTP the decision is cached for up to `decision_ttl` seconds and dropped as the
        change feed says; in process it comes from the container's cache, kept true the same way.
        """
        return self.backend.check(customer, feature, quantity, in_use=in_use)

    def require(
        self, customer: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        """Return the decision if allowed; raise FeatureDenied (402/403) if not."""
        decision = self.check(customer, feature, quantity, in_use=in_use)
        if not decision.allowed:
            raise FeatureDenied(decision)
        return decision

    def requires(
        self, feature: str, *, customer_arg: str = "customer", quantity: int = 1
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function so it runs only if the customer (named by an argument) may use
        the feature; otherwise it raises FeatureDenied.

            @billing.requires("marketplace", customer_arg="org_id")
            def publish(org_id: str, listing: Listing) -> None: ...
        """

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            signature = inspect.signature(function)
            if customer_arg not in signature.parameters:
                raise TypeError(f"{function.__name__} has no argument {customer_arg!r}")

            @functools.wraps(function)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                bound = signature.bind_partial(*args, **kwargs)
                self.require(str(bound.arguments[customer_arg]), feature, quantity)
                return function(*args, **kwargs)

            return guarded

        return decorate

    # -- credits ---------------------------------------------------------------------------

    def get_credits(self, id: str, *, limit: int | None = None) -> CreditsView:
        """Return the customer's credits balance, allowance and newest entries (100 by default)."""
        return self.backend.get_credits(id, limit=limit)

    def grant_credits(
        self,
        id: str,
        *,
        amount: int,
        reason: str,
        idempotency_key: str,
        expires_at: datetime | None = None,
    ) -> CreditEntryView:
        """Grant credits (support, promotion), once per `idempotency_key`; a repeat answers the
        first grant. Credits with `expires_at` (an aware datetime) are spent first."""
        body: dict[str, Any] = {
            "amount": amount,
            "reason": reason,
            "idempotency_key": idempotency_key,
        }
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return self.backend.grant_credits(id, body)

    def buy_credits(
        self,
        id: str,
        *,
        pack: str,
        success_url: str,
        cancel_url: str,
        idempotency_key: str | None = None,
    ) -> str:
        """Return the URL of a hosted Checkout page selling the credit pack to the customer; the
        credits arrive once Stripe reports the payment."""
        body = {"pack": pack, "success_url": success_url, "cancel_url": cancel_url}
        return self.backend.buy_credits(id, body, idempotency_key=idempotency_key).url

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of what the backend holds (connections, the change feed's thread)."""
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
