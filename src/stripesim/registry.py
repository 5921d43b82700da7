"""The route registry: resource modules declare Stripe endpoints and hosted pages here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stripesim.lists import as_bool, customer_owned, list_customer_owned, paginate, search
from stripesim.state import Account, Simulator

Handler = Callable[..., Any]


@dataclass
class Ctx:
    """What a handler knows about the request it answers."""

    sim: Simulator
    account: Account
    request_id: str
    idempotency_key: str | None
    base_url: str
    api_key: str = ""

    def now(self, clock_id: str | None = None) -> int:
        return self.sim.now(self.account, clock_id)

    def now_for_customer(self, customer_id: Any) -> int:
        """Time as the customer's test clock (if any) sees it."""
        return self.sim.now(self.account, self.sim.clock_of(self.account, customer_id))

    def build(self, kind: str, prefix: str, **fields: Any) -> dict[str, Any]:
        return self.sim.build(kind, prefix, self.account, **fields)

    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous: dict[str, Any] | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        return self.sim.emit(
            self.account,
            event_type,
            obj,
            previous=previous,
            created=created,
            request_id=self.request_id,
            idempotency_key=self.idempotency_key,
        )

    def emit_update(
        self,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any],
        *,
        created: int | None = None,
    ) -> None:
        """Emit an update event when anything changed, dated by the object's customer's clock."""
        if previous:
            when = created if created is not None else self.now_for_customer(obj.get("customer"))
            self.emit(event_type, obj, previous=previous, created=when)


def changed_since(before: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """Return the public top-level values of `before` that `obj` no longer has."""
    return {
        key: before[key] for key in obj if not key.startswith("_") and before.get(key) != obj[key]
    }


@dataclass
class ApiRoute:
    method: str
    path: str
    pattern: re.Pattern[str]
    handler: Handler
    params: str | None


@dataclass
class PageRoute:
    path: str
    methods: list[str]
    handler: Handler  # async (request, sim) -> Response


API_ROUTES: list[ApiRoute] = []
PAGE_ROUTES: list[PageRoute] = []


def route(method: str, path: str, params: str | None = None) -> Callable[[Handler], Handler]:
    """Register `handler(ctx, params, **path_params)` for a Stripe endpoint.

    `params` names the SDK's parameter type in `stripe.params` (e.g. "CustomerCreateParams",
    "billing.MeterEventCreateParams"); unknown and missing parameters are checked against it.
    """

    def register(handler: Handler) -> Handler:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"
        API_ROUTES.append(ApiRoute(method.upper(), path, re.compile(regex), handler, params))
        # Literal paths win over patterns: /v1/customers/search before /v1/customers/{id}.
        API_ROUTES.sort(key=lambda r: (r.path.count("{"), -len(r.path)))
        return handler

    return register


def retrieve_route(path: str, kind: str, params: str, *, label: str | None = None) -> None:
    """Register a GET answering the stored `kind` object its path's one id names (or a 404)."""

    def retrieve(ctx: Ctx, query: dict[str, Any], **path_params: str) -> dict[str, Any]:
        (object_id,) = path_params.values()
        return ctx.account.get(object_id, kind, label=label)

    route("GET", path, params)(retrieve)


def list_route(
    path: str,
    kind: str,
    params: str,
    *,
    filters: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
    private: tuple[str, ...] = (),
) -> None:
    """Register a GET listing `kind` whose fields equal the `filters` (boolean: `flags`) given.

    A `private` parameter is matched against the simulator's own `_name` copy of a field Stripe
    nests elsewhere (an invoice's subscription, a promotion code's coupon).
    """

    fields = [(key, key) for key in filters] + [(f"_{key}", key) for key in private]

    def list_objects(ctx: Ctx, query: dict[str, Any]) -> dict[str, Any]:
        wanted = {field: query.get(key) for field, key in fields}
        for key in flags:
            wanted[key] = as_bool(query, key)
        return paginate(ctx.account, kind, query, path, filters=wanted)

    route("GET", path, params)(list_objects)


def customer_retrieve_route(path: str, kind: str, params: str, *, label: str) -> None:
    """Register a GET answering the customer's own `kind` object its path names after the
    customer's id (another customer's is a 404, as a missing one)."""

    def retrieve(
        ctx: Ctx, query: dict[str, Any], customer_id: str, **path_params: str
    ) -> dict[str, Any]:
        (object_id,) = path_params.values()
        return customer_owned(ctx.account, customer_id, object_id, kind, label=label)

    route("GET", path, params)(retrieve)


def customer_list_route(
    path: str, kind: str, params: str, *, filters: tuple[str, ...] = ()
) -> None:
    """Register a GET listing the customer's own `kind` objects at `/v1/customers/{id}/<list>`
    whose fields equal the `filters` given (an empty one filters nothing)."""
    collection = path.rsplit("/", 1)[-1]

    def list_objects(ctx: Ctx, query: dict[str, Any], customer_id: str) -> dict[str, Any]:
        wanted = {key: query.get(key) or None for key in filters}
        return list_customer_owned(
            ctx.account, query, customer_id, kind, collection, filters=wanted
        )

    route("GET", path, params)(list_objects)


def search_route(path: str, kind: str, params: str) -> None:
    """Register a GET answering Stripe's search over `kind`."""

    def search_objects(ctx: Ctx, query: dict[str, Any]) -> dict[str, Any]:
        return search(ctx.account, kind, query, path)

    route("GET", path, params)(search_objects)


def page(path: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[Handler], Handler]:
    """Register an HTML page (Checkout, Portal) served beside the API."""

    def register(handler: Handler) -> Handler:
        PAGE_ROUTES.append(PageRoute(path, list(methods), handler))
        return handler

    return register


def match(method: str, path: str) -> tuple[ApiRoute, dict[str, str]] | None:
    for candidate in API_ROUTES:
        found = candidate.pattern.match(path)
        if found and candidate.method == method:
            return candidate, found.groupdict()
    return None
