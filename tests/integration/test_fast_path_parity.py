"""The fast paths answer exactly as the routes they shadow.

`EntitlementFastPath` (entitlement reads) and `StripeWebhookFastPath` (Stripe's deliveries) take
requests before FastAPI's stack. The same requests, good and bad, go to an app with the fast
paths and to one without (`create_app(..., fast_paths=False)`), and must get the same status,
content type and body. Each entitlement case also says whether the fast path answers it itself
or hands it on, so a fast path that quietly stopped answering would fail here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import stripe
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tests.stripe_reference import example
from tollgate.api.app import create_app
from tollgate.api.fastpath import EntitlementFastPath
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.migrate import upgrade
from tollgate.db.unit_of_work import Database

READ_KEY = "0123456789abcdef0123read"
WRITE_KEY = "0123456789abcdef0123write"
KEYS = f"web:read:{READ_KEY},app:write:{WRITE_KEY}"
SECRET = "whsec_parity_0123456789"
HANDED_ON = 599  # what the stand-in behind a lone fast path answers


def answer_of(response: Any) -> tuple[int, str, Any]:
    """Status, content type and body (JSON parsed) of an answer."""
    kind = response.headers.get("content-type", "")
    body = response.json() if kind.startswith("application/json") else response.text
    return response.status_code, kind, body


@dataclass
class Twins:
    """The same Tollgate with its fast paths and without."""

    fast: TestClient
    routes: TestClient
    alone: TestClient  # the entitlement fast path alone, before a stand-in app

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
        return (
            answer_of(self.fast.request(method, path, **kwargs)),
            answer_of(self.routes.request(method, path, **kwargs)),
        )


async def _stand_in(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": HANDED_ON, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def twins(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Twins]:
    container = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", TOLLGATE_API_KEYS=KEYS))
    options: dict[str, Any] = {"follow_redirects": False}
    # Not entered: the stand-in has no lifespan to run.
    alone = TestClient(EntitlementFastPath(_stand_in, container), **options)
    with (
        TestClient(create_app(container), **options) as fast,
        TestClient(create_app(container, fast_paths=False), **options) as routes,
    ):
        write = {"Authorization": f"Bearer {WRITE_KEY}"}
        body = {"id": "acme", "email": "b@acme.example", "offline": True}
        assert fast.post("/v1/customers", json=body, headers=write).status_code == 201
        events = [
            {"id": f"run-{i}", "customer": "acme", "meter": "runs", "value": 1} for i in range(30)
        ]
        assert fast.post("/v1/usage", json={"events": events}, headers=write).status_code == 200
        yield Twins(fast, routes, alone)
    container.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ENTITLEMENTS = "/v1/customers/acme/entitlements"
CHECK = f"{ENTITLEMENTS}/runs"

# (case, path, headers, does the fast path answer it itself?)
ENTITLEMENT_CASES: list[tuple[str, str, dict[str, str], bool]] = [
    ("every feature", ENTITLEMENTS, bearer(READ_KEY), True),
    ("every feature, write key", ENTITLEMENTS, bearer(WRITE_KEY), True),
    ("check", CHECK, bearer(READ_KEY), True),
    ("check, write key", CHECK, bearer(WRITE_KEY), True),
    ("check, lowercase scheme", CHECK, {"Authorization": f"bearer {READ_KEY}"}, True),
    ("quantity within the limit", f"{CHECK}?quantity=970", bearer(READ_KEY), True),
    ("quantity past the limit", f"{CHECK}?quantity=971", bearer(READ_KEY), True),
    ("quantity zero", f"{CHECK}?quantity=0", bearer(READ_KEY), True),
    ("quantity with leading zeros", f"{CHECK}?quantity=007", bearer(READ_KEY), True),
    ("quantity given twice", f"{CHECK}?quantity=1&quantity=2000", bearer(READ_KEY), True),
    (
        "a limit feature in use",
        f"{ENTITLEMENTS}/workflows?in_use=1&quantity=2",
        bearer(READ_KEY),
        True,
    ),
    ("a feature outside the plan", f"{ENTITLEMENTS}/sso", bearer(READ_KEY), True),
    ("no Authorization header", CHECK, {}, False),
    ("no key after the scheme", CHECK, {"Authorization": "Bearer "}, False),
    ("wrong scheme", CHECK, {"Authorization": f"Basic {READ_KEY}"}, False),
    ("unknown key", CHECK, bearer("not-a-key"), False),
    ("unknown key, every feature", ENTITLEMENTS, bearer("not-a-key"), False),
    ("unknown customer", "/v1/customers/nobody/entitlements/runs", bearer(READ_KEY), False),
    (
        "unknown customer, every feature",
        "/v1/customers/nobody/entitlements",
        bearer(READ_KEY),
        False,
    ),
    ("unknown feature", f"{ENTITLEMENTS}/teleport", bearer(READ_KEY), False),
    ("quantity not a number", f"{CHECK}?quantity=many", bearer(READ_KEY), False),
    ("quantity negative", f"{CHECK}?quantity=-1", bearer(READ_KEY), False),
    ("quantity empty", f"{CHECK}?quantity=", bearer(READ_KEY), False),
    ("quantity of 19 digits", f"{CHECK}?quantity=1234567890123456789", bearer(READ_KEY), False),
    ("in_use negative", f"{ENTITLEMENTS}/workflows?in_use=-1", bearer(READ_KEY), False),
    ("an extra query parameter", f"{CHECK}?quantity=2&via=app", bearer(READ_KEY), False),
    ("a query on every feature", f"{ENTITLEMENTS}?quantity=1", bearer(READ_KEY), False),
    ("a trailing slash", f"{CHECK}/", bearer(READ_KEY), False),
    ("no customer id", "/v1/customers//entitlements", bearer(READ_KEY), False),
]


@pytest.mark.parametrize(
    ("path", "headers", "fast"),
    [pytest.param(path, headers, fast, id=case) for case, path, headers, fast in ENTITLEMENT_CASES],
)
def test_an_entitlement_read_is_answered_alike_with_and_without_the_fast_path(
    twins: Twins, path: str, headers: dict[str, str], fast: bool
) -> None:
    with_fast_path, routes_only = twins.both("GET", path, headers=headers)
    assert with_fast_path == routes_only
    answered_itself = twins.alone.get(path, headers=headers).status_code != HANDED_ON
    assert answered_itself == fast


# -- Stripe's deliveries -------------------------------------------------------------------------


@dataclass
class WebhookTwins:
    """Two Tollgates over two empty databases, one with its fast paths and one without, so a
    delivery is new to each."""

    fast: TestClient
    routes: TestClient
    containers: list[Container] = field(default_factory=list)

    def both(self, body: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
        return tuple(  # type: ignore[return-value]
            answer_of(api.post("/webhooks/stripe", content=body, headers=headers))
            for api in (self.fast, self.routes)
        )


@pytest.fixture
def webhook_twins(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[WebhookTwins]:
    # Two SQLite files: the fast path's parsing does not depend on the database, and one
    # database would see the second delivery of each event as a duplicate.
    containers = []
    for name in ("fast", "routes"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        settings = make_settings(
            url, STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRETS=SECRET, TOLLGATE_MAX_BODY_BYTES=4096
        )
        containers.append(build_container(settings, clock=FrozenClock(SIGNED_AT)))
    with (
        TestClient(create_app(containers[0])) as fast,
        TestClient(create_app(containers[1], fast_paths=False)) as routes,
    ):
        yield WebhookTwins(fast, routes, containers)
    for container in containers:
        container.close()


def _event(event_id: str, **object_fields: Any) -> bytes:
    event = example("event")
    product = {**example("product"), **object_fields}
    event.update(id=event_id, type="product.created", data={"object": product}, livemode=False)
    return orjson.dumps(event)


def _signed(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, at or int(SIGNED_AT.timestamp())
    )
    return {"Content-Type": "application/json", "Stripe-Signature": header}


# Both apps read one frozen clock and every delivery is signed against it, so an error that
# names a signature's age says the same number of seconds to both (no second ticks between).
SIGNED_AT = datetime.fromtimestamp(int(time.time()), UTC)
GOOD = _event("evt_parity_good")
LARGE = _event("evt_parity_large", description="x" * 8192)

# (case, body, headers): the headers are made once per case, so both apps get the same request.
WEBHOOK_CASES: list[tuple[str, bytes, Callable[[], dict[str, str]]]] = [
    ("a good signed event", GOOD, lambda: _signed(GOOD)),
    (
        "a bad signature",
        GOOD,
        lambda: {"Stripe-Signature": f"t={int(SIGNED_AT.timestamp())},v1={'0' * 64}"},
    ),
    ("another secret's signature", GOOD, lambda: _signed(GOOD, secret="whsec_not_ours_000000")),
    (
        "a timestamp past the tolerance",
        GOOD,
        lambda: _signed(GOOD, at=int(SIGNED_AT.timestamp()) - 301),
    ),
    ("no Stripe-Signature header", GOOD, lambda: {"Content-Type": "application/json"}),
    ("an empty Stripe-Signature header", GOOD, lambda: {"Stripe-Signature": ""}),
    ("malformed JSON", GOOD[:-5], lambda: _signed(GOOD[:-5])),
    ("not an event", b'{"object": "customer"}', lambda: _signed(b'{"object": "customer"}')),
    ("an empty body", b"", lambda: _signed(b"")),
    ("a body over the limit", LARGE, lambda: _signed(LARGE)),
]


@pytest.mark.parametrize(
    ("body", "headers"),
    [pytest.param(body, headers, id=case) for case, body, headers in WEBHOOK_CASES],
)
def test_a_delivery_is_answered_alike_with_and_without_the_fast_path(
    webhook_twins: WebhookTwins, body: bytes, headers: Callable[[], dict[str, str]]
) -> None:
    with_fast_path, routes_only = webhook_twins.both(body, headers())
    assert with_fast_path == routes_only


def test_a_repeated_delivery_and_a_streamed_oversized_body_are_answered_alike(
    webhook_twins: WebhookTwins,
) -> None:
    first = webhook_twins.both(GOOD, _signed(GOOD))
    again = webhook_twins.both(GOOD, _signed(GOOD))
    assert first[0] == first[1] and again[0] == again[1]
    assert (first[0][2]["status"], again[0][2]["status"]) == ("ignored", "duplicate")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(LARGE), 1024):
            yield LARGE[start : start + 1024]

    streamed = [
        answer_of(api.post("/webhooks/stripe", content=chunks(), headers=_signed(LARGE)))
        for api in (webhook_twins.fast, webhook_twins.routes)
    ]
    assert streamed[0] == streamed[1]
    assert streamed[0][0] == 413
