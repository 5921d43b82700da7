"""Rate limits: per API key on the /v1 routes, per client address everywhere else.

A request is counted in fixed one-minute windows, before any route, fast path or key lookup
runs, so a flood costs a dictionary update per request:

- `/v1` with a key this process has seen accepted: that key's allowance
  (TOLLGATE_RATE_LIMIT_PER_KEY). An app behind one address (a NAT, a load balancer) is limited
  by its key, never by its neighbours.
- Every other request, `/v1` without a key or with one not (yet) seen accepted included: the
  client address's allowance (TOLLGATE_RATE_LIMIT_PER_ADDRESS). Guessing keys, hammering the
  health routes or the pages costs an address its allowance, and a key seen accepted once
  leaves this bucket on its next request.
- `POST /webhooks/stripe`: its own allowance per address (TOLLGATE_RATE_LIMIT_WEBHOOKS, off by
  default: Stripe sends bursts at renewals, and an unsigned delivery costs one HMAC, checked
  before the body is parsed).

Over the allowance: 429 in the error shape with `Retry-After` (seconds to the next window).
Counts live in the process (several replicas each allow the figure); keys are held as the first
bytes of their SHA-256, never as secrets.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.api.errors import error_response

WINDOW_SECONDS = 60.0
# Keys remembered as accepted; past this many the memory is started afresh (they re-qualify
# on their next accepted request, counted per address meanwhile).
MAX_KNOWN_KEYS = 10_000
WEBHOOK_ROUTE = "/webhooks/stripe"


class RateLimit:
    """Answer 429 to a key or address over its allowance this minute; pass the rest on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_key: int,
        per_address: int,
        webhooks: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.per_key = per_key
        self.per_address = per_address
        self.webhooks = webhooks
        self.clock = clock
        self._window = 0.0
        self._counts: dict[tuple[str, str | bytes], int] = {}
        self._accepted: set[bytes] = set()
        # The digest of each bearer header seen, so a key's requests hash it once.
        self._digests: dict[bytes, bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.awaitable_for(scope, receive, send)

    def awaitable_for(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What answers the request: the inner app's own awaitable when this layer lets the
        request by. Plain, not async: TollgateApi chains its layers by this (api/app.py), one
        coroutine less per layer and request."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        now = self.clock()
        if now - self._window >= WINDOW_SECONDS:
            self._window, self._counts = now, {}
        key = self._key_digest(scope) if scope["path"].startswith("/v1/") else None
        known = key is not None and key in self._accepted
        bucket: tuple[str, str | bytes]
        if known and key is not None:  # a /v1 path, so never the webhook route
            limit = self.per_key
            if limit:
                bucket = ("key", key)
        elif scope["path"] == WEBHOOK_ROUTE and scope["method"] == "POST":
            limit = self.webhooks
            if limit:
                bucket = ("webhook", _address(scope))
        else:
            limit = self.per_address
            if limit:
                bucket = ("address", _address(scope))
        if limit:  # the bucket is made only when counted (a key's allowance is off by default)
            count = self._counts.get(bucket, 0) + 1
            self._counts[bucket] = count
            if count > limit:
                return self._refuse(bucket, limit, now)(scope, receive, send)
        if key is None or known:
            return self.app(scope, receive, send)
        return self._remembering(key, scope, receive, send)

    def _refuse(self, bucket: tuple[str, str | bytes], limit: int, now: float) -> Response:
        retry = max(1, math.ceil(self._window + WINDOW_SECONDS - now))
        answer = error_response(
            429,
            "rate_limited",
            f"more than {limit:,} requests this minute from this "
            f"{'API key' if bucket[0] == 'key' else 'address'}; "
            f"retry in {retry} s",
        )
        answer.headers["Retry-After"] = str(retry)
        return answer

    async def _remembering(self, key: bytes, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, remembering `key` as accepted unless the answer is a 401."""

        async def remember_accepted(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != 401:
                if len(self._accepted) >= MAX_KNOWN_KEYS:
                    self._accepted = set()
                self._accepted.add(key)
            await send(message)

        await self.app(scope, receive, remember_accepted)

    def _key_digest(self, scope: Scope) -> bytes | None:
        """The digest of the request's bearer secret (None without one)."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                # Remembered by the whole header: a key's requests parse and hash it once.
                digest = self._digests.get(value)
                if digest is not None:
                    return digest
                kind, _, secret = value.partition(b" ")
                secret = secret.strip()
                if kind.lower() != b"bearer" or not secret:
                    return None
                if len(self._digests) >= MAX_KNOWN_KEYS:
                    self._digests = {}
                digest = self._digests[value] = hashlib.sha256(secret).digest()[:16]
                return digest
        return None


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
