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

import functools
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar

import httpx
from starlette.requests import Request

from tollgate.app_webhooks import AppWebhookSignatureError, verify_app_webhook  # noqa: F401
from tollgate.domain.entitlements import Code, Decision
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound, TollgateError

if TYPE_CHECKING:
    from tollgate.bootstrap import Container

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "ApiError",
    "CheckoutSession",
    "Conflict",
    "CreditEntry",
    "Credits",
    "Customer",
    "Decision",
    "FeatureDenied",
    "InvalidRequest",
    "LocalTollgate",
    "NotFound",
    "PendingChange",
    "Subscription",
    "Tollgate",
    "TollgateError",
    "require_feature",
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


@dataclass(frozen=True)
class CreditEntry:
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


@dataclass(frozen=True)
class Credits:
    """A customer's credits: the balance, how far below zero it may go, the newest entries."""

    customer: str
    balance: int
    allowance: int
    entries: list[CreditEntry]


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


def _credit_entry(data: Mapping[str, Any]) -> CreditEntry:
    created = _time(data["created"])
    assert created is not None
    return CreditEntry(
        id=int(data["id"]),
        kind=str(data["kind"]),
        amount=int(data["amount"]),
        reason=str(data["reason"]),
        idempotency_key=str(data["idempotency_key"]),
        actor=str(data["actor"]),
        created=created,
        expires_at=_time(data.get("expires_at")),
        remaining=data.get("remaining"),
    )


def _credits(data: Mapping[str, Any]) -> Credits:
    return Credits(
        customer=str(data["customer"]),
        balance=int(data["balance"]),
        allowance=int(data["allowance"]),
        entries=[_credit_entry(entry) for entry in data["entries"]],
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

    def record_usage(
        self, events: list[Mapping[str, Any]], *, enforce_limits: bool | None = None
    ) -> dict[str, Any]:
        """Record usage events (each counted once per `id`): {accepted, duplicates, rejected}."""
        body: dict[str, Any] = {"events": [dict(event) for event in events]}
        if enforce_limits is not None:
            body["enforce_limits"] = enforce_limits
        return dict(self.transport.request("POST", "/v1/usage", json=body, key=None))

    def get_entitlements(self, id: str) -> dict[str, Any]:
        """Return every feature the customer has now, with plan, status and access."""
        return dict(self.transport.request("GET", f"/v1/customers/{id}/entitlements", key=None))

    def get_usage(self, id: str) -> dict[str, Any]:
        """Return the customer's usage this period per meter."""
        return dict(self.transport.request("GET", f"/v1/customers/{id}/usage", key=None))

    def resume_subscription(self, id: str, *, idempotency_key: str | None = None) -> Subscription:
        """Undo a cancel at period end."""
        answer = self.transport.request(
            "POST", f"/v1/customers/{id}/subscription/resume", key=idempotency_key
        )
        return _subscription(answer)

    # -- credits ------------------------------------------------------------------------------

    def get_credits(self, id: str, *, limit: int | None = None) -> Credits:
        """Return the customer's credits balance, allowance and newest entries (100 by default)."""
        params = _given(limit=limit) or None
        return _credits(
            self.transport.request("GET", f"/v1/customers/{id}/credits", params=params, key=None)
        )

    def grant_credits(
        self,
        id: str,
        *,
        amount: int,
        reason: str,
        idempotency_key: str,
        expires_at: datetime | None = None,
    ) -> CreditEntry:
        """Grant credits (support, promotion), once per `idempotency_key`; a repeat answers the
        first grant. Credits with `expires_at` (an aware datetime) are spent first."""
        body: dict[str, Any] = {
            "amount": amount,
            "reason": reason,
            "idempotency_key": idempotency_key,
        }
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        answer = self.transport.request("POST", f"/v1/customers/{id}/credits", json=body, key=None)
        self._credits_changed(id)
        return _credit_entry(answer)

    def _credits_changed(self, id: str) -> None:
        """Hook: this client changed the customer's credits (a cached decision is stale)."""

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
        answer = self.transport.request(
            "POST",
            f"/v1/customers/{id}/credits/checkout",
            json={"pack": pack, "success_url": success_url, "cancel_url": cancel_url},
            key=idempotency_key,
        )
        return str(answer["url"])


# -- entitlements and usage ------------------------------------------------------------------

# Codes a payment would fix answer 402 Payment Required; a feature outside the plan is 403.
_PAYMENT_CODES = frozenset({Code.LIMIT_EXCEEDED, Code.PAYMENT_OVERDUE, Code.INSUFFICIENT_CREDITS})


class FeatureDenied(TollgateError):
    """The customer may not use the feature now; `decision` says why (`reason`, `code`)."""

    type: ClassVar[str] = "feature_denied"

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason, param=decision.feature)
        self.decision = decision
        self.status = 402 if decision.code in _PAYMENT_CODES else 403


def decision_from_json(data: Mapping[str, Any]) -> Decision:
    """Return the Decision an entitlement check answered."""
    return Decision(
        allowed=bool(data["allowed"]),
        feature=str(data["feature"]),
        reason=str(data["reason"]),
        code=Code(data["code"]),
        limit=data.get("limit"),
        used=data.get("used"),
        remaining=data.get("remaining"),
        warning=data.get("warning"),
    )


class _Gate:
    """`check`, and what is built on it: a decorator and a FastAPI dependency."""

    def check(
        self, customer: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        raise NotImplementedError

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


def require_feature(
    gate: _Gate,
    feature: str,
    *,
    customer: str | Callable[[Any], str] = "customer_id",
    quantity: int = 1,
) -> Callable[..., Any]:
    """A FastAPI dependency: answers 402/403 with the reason unless the customer may use the
    feature. `customer` names the path or query parameter holding the customer's id, or is a
    function of the request returning it.

        @app.post("/orgs/{customer_id}/listings",
                  dependencies=[Depends(require_feature(billing, "marketplace"))])
    """
    from fastapi import HTTPException
    from starlette.concurrency import run_in_threadpool

    async def dependency(request: Request) -> Decision:
        customer_id: Any
        if callable(customer):
            customer_id = customer(request)
        else:
            customer_id = request.path_params.get(customer) or request.query_params.get(customer)
        if not customer_id:
            raise HTTPException(400, detail=f"no customer id in {customer!r}")
        if isinstance(gate, LocalTollgate):
            decision = gate.check(str(customer_id), feature, quantity)
        else:  # over HTTP: off the event loop
            decision = await run_in_threadpool(gate.check, str(customer_id), feature, quantity)
        if not decision.allowed:
            status = 402 if decision.code in _PAYMENT_CODES else 403
            raise HTTPException(status, detail=decision.to_json())
        return decision

    return dependency


class _DecisionCache:
    """Decisions kept for `ttl` seconds, dropped early when Tollgate says a customer changed."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.entries: dict[tuple[str, str, int, int | None], tuple[float, Decision]] = {}
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str, int, int | None]) -> Decision | None:
        found = self.entries.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: tuple[str, str, int, int | None], decision: Decision) -> None:
        self.entries[key] = (time.monotonic() + self.ttl, decision)

    def forget(self, customers: set[str]) -> None:
        with self.lock:
            for key in [key for key in self.entries if key[0] in customers]:
                self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()


class _ChangeFollower:
    """Long-polls Tollgate's change feed and drops cached decisions of customers that changed."""

    def __init__(self, client: httpx.Client, cache: _DecisionCache, wait: float = 2.0) -> None:
        # A connection of its own, so closing it ends a poll in flight at once.
        self.client = httpx.Client(
            base_url=client.base_url, headers=client.headers, transport=client._transport
        )
        self.cache = cache
        self.wait = wait
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tollgate-changes", daemon=True)
        self.ready = threading.Event()
        self.thread.start()

    def _run(self) -> None:
        last: int | None = None
        while not self.stop.is_set():
            try:
                params: dict[str, Any] = {} if last is None else {"after": last, "wait": self.wait}
                answer = self.client.get("/v1/changes", params=params, timeout=self.wait + 10)
                answer.raise_for_status()
                body = answer.json()
                if last is None:
                    self.cache.clear()  # anything cached before the feed was followed
                    self.ready.set()
                last = int(body["last"])
                changed = {change["customer"] for change in body["changes"]}
                if changed:
                    self.cache.forget(changed)
            except (httpx.HTTPError, RuntimeError, ValueError, KeyError):
                if self.stop.is_set():
                    return
                # Unreachable: nothing is known, so nothing cached is trusted; try again soon.
                self.cache.clear()
                last = None
                self.stop.wait(1.0)

    def close(self) -> None:
        self.stop.set()
        self.client.close()
        self.thread.join(timeout=2)


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


class Tollgate(_Verbs, _Gate):
    """Tollgate's API over HTTP with an API key; use as a context manager or call `close()`.

    `check` answers from a local cache for up to `decision_ttl` seconds; with `follow_changes`
    a background thread long-polls Tollgate's change feed and drops a customer's cached
    decisions as soon as a plan, status, dunning, credit or usage-threshold change commits.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        decision_ttl: float = 1.0,
        follow_changes: bool = True,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "tollgate-client"},
            timeout=timeout,
            transport=transport,
        )
        super().__init__(_Http(self._client))
        self._decisions = _DecisionCache(decision_ttl)
        self._follow = follow_changes and decision_ttl > 0
        self._follower: _ChangeFollower | None = None

    def check(
        self, customer: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        """Return whether the customer may use `quantity` more of `feature` now."""
        key = (customer, feature, quantity, in_use)
        decision = self._decisions.get(key)
        if decision is not None:
            return decision
        if self._follow and self._follower is None:
            self._follower = _ChangeFollower(self._client, self._decisions)
            self._follower.ready.wait(timeout=5)
        params: dict[str, Any] = {"quantity": quantity}
        if in_use is not None:
            params["in_use"] = in_use
        answer = self.transport.request(
            "GET", f"/v1/customers/{customer}/entitlements/{feature}", params=params, key=None
        )
        decision = decision_from_json(answer)
        if self._decisions.ttl > 0:
            self._decisions.put(key, decision)
        return decision

    def _credits_changed(self, id: str) -> None:
        # The change feed would say so too, a poll later; this client knows already.
        self._decisions.forget({id})

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
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
        if path == "/v1/usage":
            return self._usage(dict(json or {}))
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
        if (method, rest) == ("GET", "entitlements"):
            return app.entitlements.entitlements(customer_id).to_json()
        if rest == "credits" or rest.startswith("credits/"):
            return self._credits(method, customer_id, rest, body, params, key)
        if (method, rest) == ("GET", "usage"):
            from tollgate.services.usage import get_usage

            usage = get_usage(
                db=app.db,
                catalog=app.catalog,
                clock=app.clock,
                customer_id=customer_id,
                grace=app.grace,
            )
            return usage.to_json()
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

    def _credits(
        self,
        method: str,
        customer_id: str,
        rest: str,
        body: dict[str, Any],
        params: Any,
        key: str | None,
    ) -> Any:
        from tollgate.api.routes.credits import (
            CreditCheckoutCreate,
            CreditGrantCreate,
            credits_json,
            entry_json,
        )
        from tollgate.services import credits

        app = self.container
        if (method, rest) == ("GET", "credits"):
            limit = (params or {}).get("limit", 100)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
                raise InvalidRequest("limit must be a whole number from 1 to 1000", param="limit")
            return credits_json(
                credits.list_credits(db=app.db, customer_id=customer_id, limit=limit)
            )
        if (method, rest) == ("POST", "credits"):
            grant = CreditGrantCreate(**body)
            result = credits.grant_credits(
                db=app.db,
                clock=app.clock,
                customer_id=customer_id,
                amount=grant.amount,
                reason=grant.reason,
                idempotency_key=grant.idempotency_key,
                actor="library",
                expires_at=grant.expires_at,
            )
            app.entitlements.forget([customer_id])
            return entry_json(result.entry)
        if (method, rest) == ("POST", "credits/checkout"):
            asked = CreditCheckoutCreate(**body)
            checkout = credits.start_credit_checkout(
                db=app.db,
                catalog=app.catalog,
                gateway=_gateway(app),
                customer_id=customer_id,
                pack=asked.pack,
                success_url=asked.success_url,
                cancel_url=asked.cancel_url,
                idempotency_key=key,
            )
            return {"session_id": checkout.session_id, "url": checkout.url}
        raise NotFound(f"no such route: {method} /v1/customers/{customer_id}/{rest}")

    def _usage(self, body: dict[str, Any]) -> Any:
        from tollgate.services.usage import record_usage

        app = self.container
        if "events" not in body:
            raise InvalidRequest("send {events: [...]}", param="events")
        report = record_usage(
            db=app.db,
            catalog=app.catalog,
            clock=app.clock,
            events=body["events"],
            enforce_limits=body.get("enforce_limits", app.settings.usage_enforce_limits),
            grace=app.grace,
        )
        app.entitlements.forget(report.customers)
        return report.to_json()


def _gateway(app: Container) -> Any:
    from tollgate.config import ConfigError

    try:
        return app.stripe
    except ConfigError:
        return None


class LocalTollgate(_Verbs, _Gate):
    """Tollgate in-process: the same verbs and answers, over the service layer of `container`.

    Input is checked by the API's own request models, so bad input raises InvalidRequest here
    as it answers 400 over HTTP.
    """

    def __init__(self, container: Container) -> None:
        super().__init__(_InProcess(container))
        self.container = container

    def check(
        self, customer: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        """Return whether the customer may use `quantity` more of `feature` now (cached in
        process, dropped as the change feed says)."""
        return self.container.entitlements.check(customer, feature, quantity, in_use=in_use)
