"""Deliver events to webhook endpoints, signed as Stripe signs them, with retries and chaos."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from stripesim.lists import render
from stripesim.state import PLATFORM_ACCOUNT, Account, Simulator

log = logging.getLogger("stripesim.webhooks")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header for `payload`: `t=…,v1=HMAC-SHA256(secret, "t.payload")`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def subscribed(endpoint: dict[str, Any], event: dict[str, Any], account: Account) -> bool:
    if endpoint.get("status") != "enabled":
        return False
    if bool(endpoint.get("_connect")) != (account.id != PLATFORM_ACCOUNT):
        return False
    enabled = endpoint.get("enabled_events") or ["*"]
    return "*" in enabled or event["type"] in enabled


_RELATED = ("customer", "subscription", "invoice", "charge", "payment_intent")


def _names_any(obj: dict[str, Any], ids: set[str]) -> bool:
    """Whether the object refers to one of `ids` (as an id or an expanded object)."""
    for key in _RELATED:
        value = obj.get(key)
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, str) and value in ids:
            return True
    return False


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    endpoint_id: str = field(compare=False)
    event_id: str = field(compare=False)
    account_id: str = field(compare=False)
    attempt: int = field(compare=False, default=0)


class WebhookDispatcher:
    """A background thread that POSTs each event to each subscribed endpoint until it gets a 2xx."""

    def __init__(self, sim: Simulator, *, timeout: float = 10.0) -> None:
        self.sim = sim
        self.timeout = timeout
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.delivered: list[tuple[str, str, int]] = []  # (endpoint id, event id, status)
        self.dropped: list[str] = []  # event ids dropped on purpose
        sim.event_listeners.append(self.on_event)

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(
                target=self._run, name="stripesim-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def on_event(self, account: Account, event: dict[str, Any]) -> None:
        if not self.sim.deliver_webhooks:
            return
        settings = self.sim.webhooks
        obj = event["data"]["object"]
        if (
            obj.get("id") in settings.dropped_objects
            or (settings.dropped_related and _names_any(obj, settings.dropped_related))
            or random.random() < settings.drop_rate
        ):
            self.dropped.append(event["id"])
            return
        now = time.monotonic()
        with self._cond:
            for endpoint in self.sim.platform.all("webhook_endpoint"):
                if not subscribed(endpoint, event, account):
                    continue
                copies = 2 if random.random() < settings.duplicate_rate else 1
                for _ in range(copies):
                    due = now + (random.uniform(0, 0.25) if settings.shuffle else 0)
                    heapq.heappush(
                        self._queue,
                        _Delivery(due, next(self._seq), endpoint["id"], event["id"], account.id),
                    )
                    event["pending_webhooks"] = event.get("pending_webhooks", 0) + 1
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery is done (or gave up); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._in_flight

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                with self._cond:
                    while not self._stop and (
                        not self._queue or self._queue[0].due > time.monotonic()
                    ):
                        wait = self._queue[0].due - time.monotonic() if self._queue else None
                        self._cond.wait(wait if wait is None else max(wait, 0.001))
                    if self._stop:
                        return
                    delivery = heapq.heappop(self._queue)
                    self._in_flight += 1
                try:
                    self._deliver(client, delivery)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._cond.notify_all()

    def _deliver(self, client: httpx.Client, delivery: _Delivery) -> None:
        with self.sim.lock:
            account = self.sim.accounts.get(delivery.account_id)
            endpoint = self.sim.platform.find(delivery.endpoint_id)
            event = account.find(delivery.event_id) if account else None
            if not (account and endpoint and event):
                return
            payload = orjson.dumps(render(event), option=orjson.OPT_INDENT_2)
            secret = endpoint["secret"]
            url = endpoint["url"]
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(payload, secret),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        try:
            status = client.post(url, content=payload, headers=headers).status_code
        except httpx.HTTPError as error:
            log.info("webhook %s to %s failed: %s", delivery.event_id, url, error)
            status = 0
        self.delivered.append((delivery.endpoint_id, delivery.event_id, status))
        if 200 <= status < 300:
            with self.sim.lock:
                event["pending_webhooks"] = max(0, event.get("pending_webhooks", 1) - 1)
            return
        settings = self.sim.webhooks
        if delivery.attempt + 1 >= settings.max_attempts:
            log.warning(
                "webhook %s to %s abandoned after %d attempts",
                delivery.event_id,
                url,
                delivery.attempt + 1,
            )
            return
        delivery.attempt += 1
        delivery.due = time.monotonic() + settings.retry_base_seconds * 2 ** (delivery.attempt - 1)
        with self._cond:
            heapq.heappush(self._queue, delivery)
            self._cond.notify_all()
