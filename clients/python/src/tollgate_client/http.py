"""The client over HTTP: Tollgate's JSON API with an API key, and `check`'s decision cache."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tollgate_client.backend import Body
from tollgate_client.decisions import Decision
from tollgate_client.errors import ApiError, Conflict, InvalidRequest, NotFound, TollgateError
from tollgate_client.verbs import Client
from tollgate_client.views import (
    CheckoutSession,
    CreditEntryView,
    CreditsView,
    CustomerView,
    SubscriptionView,
)

_ERRORS: dict[str, type[TollgateError]] = {
    InvalidRequest.type: InvalidRequest,
    NotFound.type: NotFound,
    Conflict.type: Conflict,
}

_DecisionKey = tuple[str, str, int, int | None]


def error_of(answer: httpx.Response) -> TollgateError:
    """Return the error an answer of the API names: Tollgate's own class, else ApiError."""
    try:
        error = answer.json()["error"]
        kind, message, param = str(error["type"]), str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):
        kind, message, param = "api_error", answer.text[:500] or answer.reason_phrase, None
    known = _ERRORS.get(kind)
    if known is not None:
        return known(message, param=param)
    return ApiError(message, param=param, type_=kind, status=answer.status_code)


class _DecisionCache:
    """Decisions kept for `ttl` seconds, dropped early when Tollgate says a customer changed."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.entries: dict[_DecisionKey, tuple[float, Decision]] = {}
        self.lock = threading.Lock()

    def get(self, key: _DecisionKey) -> Decision | None:
        found = self.entries.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: _DecisionKey, decision: Decision) -> None:
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


class HttpBackend:
    """The verbs as requests to Tollgate's JSON API; the answers rebuilt as the services' views."""

    in_process = False

    def __init__(
        self, client: httpx.Client, *, decision_ttl: float = 1.0, follow_changes: bool = True
    ) -> None:
        self.client = client  # with the base URL and the API key's Authorization header
        self._decisions = _DecisionCache(decision_ttl)
        self._follow = follow_changes and decision_ttl > 0
        self._follower: _ChangeFollower | None = None

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        answer = self.client.request(method, path, json=json, params=params, headers=headers)
        if answer.is_success:
            return answer.json()
        raise error_of(answer)

    # -- customers and subscriptions -------------------------------------------------------

    def create_customer(self, body: Body) -> CustomerView:
        return CustomerView.from_json(self._call("POST", "/v1/customers", json=body))

    def get_customer(self, customer_id: str) -> CustomerView:
        return CustomerView.from_json(self._call("GET", f"/v1/customers/{customer_id}"))

    def update_customer(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CustomerView:
        path = f"/v1/customers/{customer_id}"
        answer = self._call("PATCH", path, json=body, idempotency_key=idempotency_key)
        return CustomerView.from_json(answer)

    def checkout(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CheckoutSession:
        path = f"/v1/customers/{customer_id}/checkout"
        answer = self._call("POST", path, json=body, idempotency_key=idempotency_key)
        return CheckoutSession.from_json(answer)

    def portal(self, customer_id: str, body: Body, *, idempotency_key: str | None) -> str:
        path = f"/v1/customers/{customer_id}/portal"
        answer = self._call("POST", path, json=body, idempotency_key=idempotency_key)
        return str(answer["url"])

    def get_subscription(self, customer_id: str) -> SubscriptionView:
        answer = self._call("GET", f"/v1/customers/{customer_id}/subscription")
        return SubscriptionView.from_json(answer)

    def change_subscription(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> SubscriptionView:
        path = f"/v1/customers/{customer_id}/subscription"
        answer = self._call("PUT", path, json=body, idempotency_key=idempotency_key)
        return SubscriptionView.from_json(answer)

    def cancel_subscription(
        self, customer_id: str, *, at_period_end: bool, idempotency_key: str | None
    ) -> SubscriptionView:
        answer = self._call(
            "DELETE",
            f"/v1/customers/{customer_id}/subscription",
            params={"at_period_end": "true" if at_period_end else "false"},
            idempotency_key=idempotency_key,
        )
        return SubscriptionView.from_json(answer)

    def resume_subscription(
        self, customer_id: str, *, idempotency_key: str | None
    ) -> SubscriptionView:
        path = f"/v1/customers/{customer_id}/subscription/resume"
        answer = self._call("POST", path, idempotency_key=idempotency_key)
        return SubscriptionView.from_json(answer)

    # -- usage and entitlements ------------------------------------------------------------

    def record_usage(self, body: Body) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/usage", json=body))

    def consume(self, customer_id: str, body: Body) -> Decision:
        answer = self._call("POST", f"/v1/customers/{customer_id}/consume", json=body)
        self._decisions.forget({customer_id})
        return Decision.from_json(answer)

    def billing_session(self, customer_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/customers/{customer_id}/billing-session"))

    def get_entitlements(self, customer_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/customers/{customer_id}/entitlements"))

    def get_usage(self, customer_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/customers/{customer_id}/usage"))

    def check(
        self, customer_id: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        """Answer from the cache when it holds the decision; else ask, and keep the answer."""
        key = (customer_id, feature, quantity, in_use)
        decision = self._decisions.get(key)
        if decision is not None:
            return decision
        if self._follow and self._follower is None:
            self._follower = _ChangeFollower(self.client, self._decisions)
            self._follower.ready.wait(timeout=5)
        params: dict[str, Any] = {"quantity": quantity}
        if in_use is not None:
            params["in_use"] = in_use
        path = f"/v1/customers/{customer_id}/entitlements/{feature}"
        decision = Decision.from_json(self._call("GET", path, params=params))
        if self._decisions.ttl > 0:
            self._decisions.put(key, decision)
        return decision

    # -- credits ---------------------------------------------------------------------------

    def get_credits(self, customer_id: str, *, limit: int | None) -> CreditsView:
        params = {"limit": limit} if limit is not None else None
        answer = self._call("GET", f"/v1/customers/{customer_id}/credits", params=params)
        return CreditsView.from_json(answer)

    def grant_credits(self, customer_id: str, body: Body) -> CreditEntryView:
        answer = self._call("POST", f"/v1/customers/{customer_id}/credits", json=body)
        # The change feed would say so too, a poll later; this client knows already.
        self._decisions.forget({customer_id})
        return CreditEntryView.from_json(answer)

    def buy_credits(
        self, customer_id: str, body: Body, *, idempotency_key: str | None
    ) -> CheckoutSession:
        path = f"/v1/customers/{customer_id}/credits/checkout"
        answer = self._call("POST", path, json=body, idempotency_key=idempotency_key)
        return CheckoutSession.from_json(answer)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
        self.client.close()


class Tollgate(Client):
    """Tollgate's API over HTTP with an API key; use as a context manager or call `close()`.

    `check` answers from a local cache for up to `decision_ttl` seconds; with `follow_changes`
    a background thread long-polls Tollgate's change feed and drops a customer's cached
    decisions as soon as a plan, status, dunning, credit or usage-threshold change commits.
    """

    backend: HttpBackend

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
        client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "tollgate-client"},
            timeout=timeout,
            transport=transport,
        )
        super().__init__(
            HttpBackend(client, decision_ttl=decision_ttl, follow_changes=follow_changes)
        )
