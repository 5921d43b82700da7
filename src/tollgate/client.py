"""A small Python client for Tollgate's customers and subscriptions API.

Over HTTP, from the app's own process:

    from tollgate.client import Tollgate
    billing = Tollgate("http://127.0.0.1:8000", "tg_write_…")
    billing.create_customer("acme", email="billing@acme.example")

or in-process, over the service layer of a Tollgate imported as a library
(`LocalTollgate(container)`). Both answer the same dataclasses and raise Tollgate's own errors
(`tollgate.domain.errors`: InvalidRequest, NotFound, Conflict, …; `ApiError` for the rest), so
code written against one runs against the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx

from tollgate.domain.errors import Conflict, InvalidRequest, NotFound, TollgateError

if TYPE_CHECKING:
    from tollgate.bootstrap import Container

__all__ = [
    "ApiError",
    "CheckoutSession",
    "Conflict",
    "Customer",
    "InvalidRequest",
    "LocalTollgate",
    "NotFound",
    "PendingChange",
    "Subscription",
    "Tollgate",
    "TollgateError",
]


class ApiError(TollgateError):
    """An error answer without a more specific class here; `type` and `status` are the API's."""

    type: ClassVar[str] = "api_error"

    def __init__(
        self, message: str, *, param: str | None = None, type_: str = "api_error", status: int = 0
    ) -> None:
        super().__init__(message, param=param)
        self.type = type_  # type: ignore[misc]
        self.status = status


_ERRORS: dict[str, type[TollgateError]] = {
    InvalidRequest.type: InvalidRequest,
    NotFound.type: NotFound,
    Conflict.type: Conflict,
}


# -- what the client answers -----------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    """A billing customer: plan and status follow its subscription."""

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


@dataclass(frozen=True)
class PendingChange:
    """A plan change Tollgate makes at the period end."""

    plan: str
    interval: str
    seats: int | None
    effective_at: datetime


@dataclass(frozen=True)
class Subscription:
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
    pending_change: PendingChange | None = None


@dataclass(frozen=True)
class CheckoutSession:
    """A hosted Checkout page: send the buyer to `url`."""

    session_id: str
    url: str


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _customer(data: Mapping[str, Any]) -> Customer:
    created = _time(data["created"])
    assert created is not None
    return Customer(
        id=data["id"],
        email=data.get("email"),
        name=data.get("name"),
        stripe_customer_id=data.get("stripe_customer_id"),
        offline=bool(data.get("offline")),
        currency=data["currency"],
        plan=data.get("plan"),
        status=data["status"],
        metadata=dict(data.get("metadata") or {}),
        created=created,
        address=data.get("address"),
        stripe_account=data.get("stripe_account"),
    )


def _subscription(data: Mapping[str, Any]) -> Subscription:
    pending = data.get("pending_change")
    return Subscription(
        plan=data.get("plan"),
        interval=data.get("interval"),
        status=data["status"],
        seats=data.get("seats"),
        currency=data.get("currency"),
        trial_end=_time(data.get("trial_end")),
        current_period_start=_time(data.get("current_period_start")),
        current_period_end=_time(data.get("current_period_end")),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        collection_method=data.get("collection_method"),
        stripe_subscription_id=data.get("stripe_subscription_id"),
        pending_change=(
            PendingChange(
                plan=pending["plan"],
                interval=pending["interval"],
                seats=pending.get("seats"),
                effective_at=_time(pending["effective_at"]),  # type: ignore[arg-type]
            )
            if pending
            else None
        ),
    )


def _given(**values: Any) -> dict[str, Any]:
    """Return only the arguments the caller gave (None means "not given")."""
    return {key: value for key, value in values.items() if value is not None}


class _Transport(Protocol):
    def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, key: str | None
    ) -> Any: ...


# -- the verbs, shared by both variants ------------------------------------------------------


@dataclass
class _Verbs:
    """The customer and subscription verbs over a transport that speaks the API's JSON."""

    transport: _Transport = field(repr=False)

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
    ) -> Customer:
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
        return _customer(self.transport.request("POST", "/v1/customers", json=body, key=None))

    def get_customer(self, id: str) -> Customer:
        """Return the customer with its plan and status."""
        return _customer(self.transport.request("GET", f"/v1/customers/{id}", key=None))

    def update_customer(
        self,
        id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        address: Mapping[str, str] | None = None,
        metadata: Mapping[str, str | None] | None = None,
        idempotency_key: str | None = None,
    ) -> Customer:
        """Change email, name, address or metadata (a metadata value of None removes the key)."""
        body = _given(
            email=email,
            name=name,
            address=dict(address) if address is not None else None,
            metadata=dict(metadata) if metadata is not None else None,
        )
        answer = self.transport.request(
            "PATCH", f"/v1/customers/{id}", json=body, key=idempotency_key
        )
        return _customer(answer)

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
        answer = self.transport.request(
            "POST", f"/v1/customers/{id}/checkout", json=body, key=idempotency_key
        )
        return CheckoutSession(answer["session_id"], answer["url"])

    def portal(self, id: str, *, return_url: str, idempotency_key: str | None = None) -> str:
        """Return a Customer Portal URL for the customer."""
        answer = self.transport.request(
            "POST",
            f"/v1/customers/{id}/portal",
            json={"return_url": return_url},
            key=idempotency_key,
        )
        return str(answer["url"])

    def get_subscription(self, id: str) -> Subscription:
        """Return the customer's subscription."""
        answer = self.transport.request("GET", f"/v1/customers/{id}/subscription", key=None)
        return _subscription(answer)

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
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Subscribe directly, or change plan, interval or seats."""
        body = _given(
            plan=plan,
            interval=interval,
            seats=seats,
            proration=proration,
            collection_method=collection_method,
            days_until_due=days_until_due,
            trial_days=trial_days,
            at_period_end=at_period_end,
        )
        answer = self.transport.request(
            "PUT", f"/v1/customers/{id}/subscription", json=body, key=idempotency_key
        )
        return _subscription(answer)

    def cancel_subscription(
        self, id: str, *, at_period_end: bool = False, idempotency_key: str | None = None
    ) -> Subscription:
        """Cancel now, or at period end."""
        answer = self.transport.request(
            "DELETE",
            f"/v1/customers/{id}/subscription",
            params={"at_period_end": "true" if at_period_end else "false"},
            key=idempotency_key,
        )
        return _subscription(answer)

    def resume_subscription(self, id: str, *, idempotency_key: str | None = None) -> Subscription:
        """Undo a cancel at period end."""
        answer = self.transport.request(
            "POST", f"/v1/customers/{id}/subscription/resume", key=idempotency_key
        )
        return _subscription(answer)


# -- over HTTP -------------------------------------------------------------------------------


class _Http:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, key: str | None
    ) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        answer = self.client.request(method, path, json=json, params=params, headers=headers)
        if answer.is_success:
            return answer.json()
        raise _error_of(answer)


def _error_of(answer: httpx.Response) -> TollgateError:
    try:
        error = answer.json()["error"]
        kind, message, param = str(error["type"]), str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):
        kind, message, param = "api_error", answer.text[:500] or answer.reason_phrase, None
    known = _ERRORS.get(kind)
    if known is not None:
        return known(message, param=param)
    return ApiError(message, param=param, type_=kind, status=answer.status_code)


class Tollgate(_Verbs):
    """Tollgate's API over HTTP with an API key; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "tollgate-client"},
            timeout=timeout,
            transport=transport,
        )
        super().__init__(_Http(self._client))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Tollgate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- in process ------------------------------------------------------------------------------


class _InProcess:
    """The API's routes without HTTP: the same JSON, built by the same services."""

    def __init__(self, container: Container) -> None:
        self.container = container

    def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, key: str | None
    ) -> Any:
        from pydantic import ValidationError

        try:
            return self._route(method, path, json=json, params=params, key=key)
        except ValidationError as error:
            # The API's own request models check the input, as they do behind HTTP.
            first = error.errors()[0]
            param = ".".join(str(part) for part in first.get("loc", ())) or None
            message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
            raise InvalidRequest(message, param=param) from None

    def _route(
        self, method: str, path: str, *, json: Any = None, params: Any = None, key: str | None
    ) -> Any:
        from tollgate.api import schemas
        from tollgate.services import customers, subscriptions

        app = self.container
        parts = path.strip("/").split("/")[2:]  # after v1/customers
        body = dict(json or {})
        gateway = _gateway(app)
        if not parts:
            created = customers.create_customer(
                db=app.db,
                catalog=app.catalog,
                gateway=gateway,
                settings=app.settings,
                clock=app.clock,
                new=customers.NewCustomer(**schemas.CustomerCreate(**body).model_dump()),
            )
            return schemas.customer_json(created.customer)
        customer_id, rest = parts[0], "/".join(parts[1:])
        if (method, rest) == ("GET", ""):
            view = customers.get_customer(db=app.db, catalog=app.catalog, customer_id=customer_id)
            return schemas.customer_json(view)
        if (method, rest) == ("PATCH", ""):
            update = schemas.CustomerUpdate(**body)
            changes = customers.CustomerChanges(
                email=update.email,
                name=update.name,
                address=update.address,
                metadata=update.metadata,
                fields=frozenset(update.model_fields_set),
            )
            view = customers.update_customer(
                db=app.db,
                catalog=app.catalog,
                gateway=gateway,
                clock=app.clock,
                customer_id=customer_id,
                changes=changes,
                idempotency_key=key,
            )
            return schemas.customer_json(view)
        if rest == "checkout":
            asked = schemas.CheckoutCreate(**body)
            session = subscriptions.start_checkout(
                db=app.db,
                catalog=app.catalog,
                gateway=gateway,
                settings=app.settings,
                customer_id=customer_id,
                idempotency_key=key,
                **asked.model_dump(),
            )
            return {"session_id": session.session_id, "url": session.url}
        if rest == "portal":
            url = customers.open_portal(
                db=app.db,
                gateway=gateway,
                customer_id=customer_id,
                return_url=schemas.PortalCreate(**body).return_url,
                idempotency_key=key,
            )
            return {"url": url}
        common: dict[str, Any] = {
            "db": app.db,
            "catalog": app.catalog,
            "customer_id": customer_id,
        }
        if (method, rest) == ("GET", "subscription"):
            return schemas.subscription_json(subscriptions.get_subscription(**common))
        common.update(gateway=gateway, clock=app.clock, idempotency_key=key)
        if (method, rest) == ("PUT", "subscription"):
            wanted = subscriptions.SubscriptionRequest(
                **schemas.SubscriptionPut(**body).model_dump()
            )
            changed = subscriptions.change_subscription(
                settings=app.settings, wanted=wanted, **common
            )
            return schemas.subscription_json(changed)
        if (method, rest) == ("DELETE", "subscription"):
            at_period_end = (params or {}).get("at_period_end") == "true"
            canceled = subscriptions.cancel_subscription(at_period_end=at_period_end, **common)
            return schemas.subscription_json(canceled)
        if (method, rest) == ("POST", "subscription/resume"):
            return schemas.subscription_json(subscriptions.resume_subscription(**common))
        raise NotFound(f"no such route: {method} {path}")


def _gateway(app: Container) -> Any:
    from tollgate.config import ConfigError

    try:
        return app.stripe
    except ConfigError:
        return None


class LocalTollgate(_Verbs):
    """Tollgate in-process: the same verbs and answers, over the service layer of `container`.

    Input is checked by the API's own request models, so bad input raises InvalidRequest here
    as it answers 400 over HTTP.
    """

    def __init__(self, container: Container) -> None:
        super().__init__(_InProcess(container))
