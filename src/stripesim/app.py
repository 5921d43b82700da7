"""The ASGI app: Stripe's REST API (form-encoded in, Stripe-shaped JSON out) plus /_sim helpers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import importlib
import pkgutil
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripesim import params as param_types
from stripesim import resources
from stripesim.billing import install as install_billing
from stripesim.errors import StripeError
from stripesim.forms import decode_form
from stripesim.lists import expand, render
from stripesim.registry import PAGE_ROUTES, Ctx, match
from stripesim.state import API_VERSION, Simulator, new_id
from stripesim.webhooks import WebhookDispatcher


def load_resources() -> None:
    """Import every module in stripesim.resources so their routes register."""
    for module in pkgutil.iter_modules(resources.__path__):
        importlib.import_module(f"{resources.__name__}.{module.name}")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _error(error: StripeError, request_id: str) -> Response:
    return _json(error.body(request_id), error.status, {"Request-Id": request_id})


def _api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "basic":
        credential = base64.b64decode(credential).decode().partition(":")[0]
    elif scheme.lower() != "bearer":
        credential = ""
    if not credential:
        raise StripeError(
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            status=401,
        )
    if credential.startswith(("sk_live_", "rk_live_")):
        raise StripeError(
            "stripesim accepts only test mode keys (sk_test_…, rk_test_…).",
            status=401,
            code="api_key_expired",
        )
    if not credential.startswith(("sk_test_", "rk_test_")):
        raise StripeError(f"Invalid API Key provided: {credential[:8]}***", status=401)
    return credential


_BASE_URLS: dict[tuple[str, str], str] = {}


def _base_url(request: Request) -> str:
    """The URL clients reach us at (for hosted page links), cached per scheme and Host."""
    key = (request.scope.get("scheme", "http"), request.headers.get("host", ""))
    url = _BASE_URLS.get(key)
    if url is None:
        if len(_BASE_URLS) > 64:
            _BASE_URLS.clear()
        url = _BASE_URLS[key] = str(request.base_url).rstrip("/")
    return url


class Api:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _fault(self, method: str, path: str) -> str | None:
        faults = self.sim.faults
        for queued in list(faults.queued):
            if queued.get("method", method) == method and path.startswith(queued.get("path", "/")):
                faults.queued.remove(queued)
                return str(queued["kind"])
        roll = random.random()
        if roll < faults.rate_429:
            return "429"
        if roll < faults.rate_429 + faults.rate_500:
            return "500"
        if roll < faults.rate_429 + faults.rate_500 + faults.rate_timeout:
            return "timeout"
        return None

    async def handle(self, request: Request) -> Response:
        request_id = new_id("req", 14)
        method, path = request.method, request.scope["path"]
        try:
            api_key = _api_key(request)
            fault = self._fault(method, path)
            if fault == "lock_timeout":
                # A 429 Stripe's SDKs retry on their own: it carries `Stripe-Should-Retry: true`.
                error = StripeError(
                    "This object cannot be accessed right now because another API request or "
                    "Stripe process is currently accessing it.",
                    status=429,
                    code="lock_timeout",
                )
                return _json(
                    error.body(request_id),
                    429,
                    {"Request-Id": request_id, "Stripe-Should-Retry": "true"},
                )
            if fault == "429":
                raise StripeError(
                    "Too many requests hit the API too quickly.",
                    status=429,
                    code="rate_limit",
                    type="invalid_request_error",
                )
            if fault == "500":
                raise StripeError("An unknown error occurred", status=500, type="api_error")
            body = (await request.body()).decode()
            # The raw scope is much cheaper than building `request.url` on every request.
            query = request.scope.get("query_string", b"").decode("latin-1")
            if method == "POST":
                data = decode_form(body)
                if query:
                    data.update(decode_form(query))
            else:
                data = decode_form(query)
            found = match(method, path)
            if found is None:
                raise StripeError(
                    f"Unrecognized request URL ({method}: {path}). "
                    "Please see https://stripe.com/docs "
                    "or we can help at https://support.stripe.com/.",
                    status=404,
                )
            api_route, path_params = found
            idempotency_key = request.headers.get("idempotency-key") if method == "POST" else None
            with self.sim.lock:
                account = self.sim.account(request.headers.get("stripe-account"))
                fingerprint = hashlib.sha256(f"{method} {path} {body}".encode()).hexdigest()
                if idempotency_key:
                    cached = account.idempotency.get(idempotency_key)
                    if cached is not None:
                        if cached[0] != fingerprint:
                            raise StripeError(
                                "Keys for idempotent requests can only be used with the same "
                                "parameters they were first used with. Try using a key other than "
                                f"'{idempotency_key}' if you meant to execute a different request.",
                                type="idempotency_error",
                            )
                        return Response(
                            cached[2],
                            status_code=cached[1],
                            media_type="application/json",
                            headers={
                                "Idempotent-Replayed": "true",
                                "Request-Id": request_id,
                                "Stripe-Version": API_VERSION,
                            },
                        )
                if api_route.params:
                    param_types.validate(api_route.params, data)
                ctx = Ctx(
                    self.sim,
                    account,
                    request_id,
                    idempotency_key,
                    _base_url(request),
                    api_key,
                )
                self.sim.base_url = ctx.base_url
                try:
                    result = api_route.handler(ctx, data, **path_params)
                    status = 200
                    if result.get("object") not in ("list", "search_result"):
                        result = expand(account, render(result), data.get("expand") or [])
                    payload = orjson.dumps(result)
                except StripeError as error:
                    status, payload = error.status, orjson.dumps(error.body(request_id))
                if idempotency_key and status < 500:
                    account.idempotency[idempotency_key] = (fingerprint, status, payload)
                for listener in self.sim.exchange_listeners:
                    listener(method, api_route.path, status, payload)
            if fault == "timeout":
                await asyncio.sleep(self.sim.faults.timeout_seconds)
            return Response(
                payload,
                status_code=status,
                media_type="application/json",
                headers={"Request-Id": request_id, "Stripe-Version": API_VERSION},
            )
        except StripeError as error:
            return _error(error, request_id)


def _sim_routes(sim: Simulator, dispatcher: WebhookDispatcher) -> list[Route]:
    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return dict(request.query_params)
        if request.headers.get("content-type", "").startswith("application/json"):
            return orjson.loads(raw)
        return decode_form(raw.decode())

    async def reset(request: Request) -> Response:
        dispatcher.flush(timeout=0)
        sim.reset()
        return _json({"reset": True})

    async def advance(request: Request) -> Response:
        data = await body_of(request)
        try:
            sim.advance(int(data.get("seconds", 0)))
        except StripeError as error:
            return _error(error, "req_sim")
        return _json({"now": sim.wall_time()})

    async def faults(request: Request) -> Response:
        data = await body_of(request)
        with sim.lock:
            for name in ("rate_429", "rate_500", "rate_timeout", "timeout_seconds"):
                if name in data:
                    setattr(sim.faults, name, float(data[name]))
            if "queue" in data:
                sim.faults.queued.extend(data["queue"])
        return _json({"faults": sim.faults.__dict__})

    async def webhook_settings(request: Request) -> Response:
        data = await body_of(request)
        with sim.lock:
            settings = sim.webhooks
            for name in ("duplicate_rate", "drop_rate", "retry_base_seconds"):
                if name in data:
                    setattr(settings, name, float(data[name]))
            if "shuffle" in data:
                settings.shuffle = str(data["shuffle"]).lower() in ("1", "true")
            if "drop_objects" in data:
                settings.dropped_objects.update(data["drop_objects"])
            if "drop_related" in data:
                settings.dropped_related.update(data["drop_related"])
            shown = {
                **settings.__dict__,
                "dropped_objects": sorted(settings.dropped_objects),
                "dropped_related": sorted(settings.dropped_related),
            }
        return _json({"webhooks": shown})

    async def flush(request: Request) -> Response:
        done = await asyncio.to_thread(dispatcher.flush, 30.0)
        return _json({"flushed": done, "pending": dispatcher.pending()})

    async def billing_settings(request: Request) -> Response:
        # The billing engine's account settings: retry schedule, status after the last retry.
        data = await body_of(request)
        with sim.lock:
            settings = sim.billing
            for name in (
                "subscription_status_after_final_attempt",
                "invoice_status_after_final_attempt",
            ):
                if name in data:
                    setattr(settings, name, str(data[name]))
            for name in (
                "upcoming_days",
                "trial_will_end_days",
                "finalize_delay_seconds",
                "incomplete_expiry_seconds",
            ):
                if name in data:
                    setattr(settings, name, int(data[name]))
            if "retry_days" in data:
                settings.retry_days = [int(day) for day in data["retry_days"]]
        return _json({"billing": sim.billing.__dict__})

    async def save(request: Request) -> Response:
        sim.save()
        return _json({"saved": str(sim.state_file or "stripesim-state.json")})

    return [
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/clock/advance", advance, methods=["POST"]),
        Route("/_sim/faults", faults, methods=["POST"]),
        Route("/_sim/webhooks", webhook_settings, methods=["POST"]),
        Route("/_sim/webhooks/flush", flush, methods=["POST"]),
        Route("/_sim/save", save, methods=["POST"]),
        Route("/_sim/billing", billing_settings, methods=["POST"]),
    ]


def create_app(sim: Simulator | None = None, *, deliver_webhooks: bool = True) -> Starlette:
    """The simulator as an ASGI app; `app.state.sim` and `app.state.webhooks` are its internals."""
    load_resources()
    sim = sim or Simulator()
    install_billing(sim)  # the billing engine's time hook (renewals, trials, retries)
    dispatcher = WebhookDispatcher(sim)
    api = Api(sim)

    def bind(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await handler(request, sim)

        return endpoint

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if deliver_webhooks:
            dispatcher.start()
        try:
            yield
        finally:
            dispatcher.stop()
            if sim.state_file:
                sim.save()

    routes = [
        *_sim_routes(sim, dispatcher),
        *(Route(p.path, bind(p.handler), methods=p.methods) for p in PAGE_ROUTES),
        Route("/v1/{path:path}", api.handle, methods=["GET", "POST", "DELETE"]),
        Route("/v2/{path:path}", api.handle, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sim = sim
    app.state.webhooks = dispatcher
    if deliver_webhooks:
        # Also start outside a lifespan (e.g. servers that skip it); start() is idempotent.
        dispatcher.start()
    return app


def json_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "invalid_request_error", "message": message}}, status_code=status
    )
