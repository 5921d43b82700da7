"""`ConsumeFastPath` answers exactly as the consume route it shadows.

The same calls, good and bad, go in the same order to a Tollgate with its fast paths and to one
without (`create_app(..., fast_paths=False)`), each over its own SQLite file so that a call is
new to each, and must get the same status, content type, body and replay header. Each case
also says whether the fast path answers it itself or hands it on, so a fast path that quietly
stopped answering would fail here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tollgate.api.app import create_app
from tollgate.api.consume_fastpath import ConsumeFastPath
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.migrate import upgrade

READ_KEY = "0123456789abcdef0123read"
WRITE_KEY = "0123456789abcdef0123write"
KEYS = f"web:read:{READ_KEY},app:write:{WRITE_KEY}"
HANDED_ON = 599  # what the stand-in behind a lone fast path answers
WRITE = {"Authorization": f"Bearer {WRITE_KEY}", "Content-Type": "application/json"}


async def _stand_in(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": HANDED_ON, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def answer_of(response: Any) -> tuple[int, str, Any, str | None]:
    kind = response.headers.get("content-type", "")
    body = response.json() if kind.startswith("application/json") else response.text
    return response.status_code, kind, body, response.headers.get("idempotent-replayed")


@dataclass
class Twins:
    fast: TestClient
    routes: TestClient
    alone: TestClient  # the consume fast path alone, before a stand-in app (a third database)

    def both(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
        return (
            answer_of(self.fast.post(path, content=body, headers=headers)),
            answer_of(self.routes.post(path, content=body, headers=headers)),
        )


@pytest.fixture
def twins(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Twins]:
    containers: list[Container] = []
    for name in ("fast", "routes", "alone"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        settings = make_settings(
            url, STRIPE_SECRET_KEY="", TOLLGATE_API_KEYS=KEYS, TOLLGATE_MAX_BODY_BYTES=4096
        )
        containers.append(build_container(settings))
    options: dict[str, Any] = {"follow_redirects": False}
    alone = TestClient(ConsumeFastPath(_stand_in, containers[2]), **options)
    with (
        TestClient(create_app(containers[0]), **options) as fast,
        TestClient(create_app(containers[1], fast_paths=False), **options) as routes,
        TestClient(create_app(containers[2]), **options) as third,
    ):
        for api in (fast, routes, third):
            api.headers.update(WRITE)
            for customer, plan in (("acme", "pro"), ("tiny", None)):
                body = {"id": customer, "email": f"b@{customer}.example", "offline": True}
                answer = api.post("/v1/customers", json=body | ({"plan": plan} if plan else {}))
                assert answer.status_code == 201, answer.text
            event = {"id": "ev-1", "customer": "tiny", "meter": "runs", "value": 1}
            assert api.post("/v1/usage", json={"events": [event]}).status_code == 200
        yield Twins(fast, routes, alone)
    for container in containers:
        container.close()


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


TINY = "/v1/customers/tiny/consume"
ACME = "/v1/customers/acme/consume"

# (case, path, body, headers, does the fast path answer it itself?), in order: later cases
# repeat ids of earlier ones.
CASES: list[tuple[str, str, bytes, dict[str, str], bool]] = [
    ("allowed", TINY, body(feature="runs", quantity=990, id="c-1"), WRITE, True),
    ("a retry", TINY, body(feature="runs", quantity=990, id="c-1"), WRITE, True),
    ("denied past a hard limit", TINY, body(feature="runs", quantity=11, id="c-2"), WRITE, True),
    ("a denied call's retry", TINY, body(feature="runs", quantity=11, id="c-2"), WRITE, True),
    ("quantity left out", TINY, body(feature="runs", id="c-3"), WRITE, True),
    ("quantity zero", ACME, body(feature="runs", quantity=0, id="c-4"), WRITE, True),
    ("a soft limit", ACME, body(feature="runs", quantity=5, id="c-5"), WRITE, True),
    (
        "the id with another quantity",
        TINY,
        body(feature="runs", quantity=2, id="c-1"),
        WRITE,
        False,
    ),
    (
        "the id for another customer",
        ACME,
        body(feature="runs", quantity=990, id="c-1"),
        WRITE,
        False,
    ),
    ("an id POST /v1/usage recorded", TINY, body(feature="runs", id="ev-1"), WRITE, False),
    (
        "unknown customer",
        "/v1/customers/nobody/consume",
        body(feature="runs", id="c-6"),
        WRITE,
        False,
    ),
    ("unknown feature", TINY, body(feature="teleport", id="c-7"), WRITE, False),
    ("not a metered feature", TINY, body(feature="sso", id="c-7"), WRITE, False),
    ("quantity negative", TINY, body(feature="runs", quantity=-1, id="c-7"), WRITE, False),
    ("quantity a fraction", TINY, body(feature="runs", quantity=1.5, id="c-7"), WRITE, False),
    ("quantity true", TINY, body(feature="runs", quantity=True, id="c-7"), WRITE, False),
    ("quantity a string", TINY, body(feature="runs", quantity="1", id="c-7"), WRITE, False),
    ("quantity too large", TINY, body(feature="runs", quantity=2**53, id="c-7"), WRITE, False),
    ("no id", TINY, body(feature="runs", quantity=1), WRITE, False),
    ("an empty id", TINY, body(feature="runs", id=""), WRITE, False),
    ("an id too long", TINY, body(feature="runs", id="x" * 256), WRITE, False),
    ("an id with a NUL", TINY, body(feature="runs", id="a\x00b"), WRITE, False),
    ("an id with a lone surrogate", TINY, b'{"feature": "runs", "id": "a\\ud800"}', WRITE, False),
    ("an extra field", TINY, body(feature="runs", id="c-7", extra=1), WRITE, False),
    ("malformed JSON", TINY, b'{"feature": "runs",', WRITE, False),
    ("not an object", TINY, b'["runs"]', WRITE, False),
    ("a body over the limit", TINY, body(feature="runs", id="x" * 5000), WRITE, True),
    (
        "a read key",
        TINY,
        body(feature="runs", id="c-8"),
        {"Authorization": f"Bearer {READ_KEY}"},
        False,
    ),
    ("no key", TINY, body(feature="runs", id="c-8"), {"Authorization": ""}, False),
    (
        "an unknown key",
        TINY,
        body(feature="runs", id="c-8"),
        {"Authorization": "Bearer nope"},
        False,
    ),
    ("a trailing slash", f"{TINY}/", body(feature="runs", id="c-8"), WRITE, False),
    ("no customer id", "/v1/customers//consume", body(feature="runs", id="c-8"), WRITE, False),
]


def test_every_consume_call_is_answered_alike_with_and_without_the_fast_path(
    twins: Twins,
) -> None:
    for case, path, content, headers, fast in CASES:
        with_fast_path, routes_only = twins.both(path, content, headers)
        assert with_fast_path == routes_only, case
        answered_itself = twins.alone.post(path, content=content, headers=headers)
        assert (answered_itself.status_code != HANDED_ON) == fast, case
    used = twins.fast.get("/v1/customers/tiny/usage").json()["meters"]["runs"]["used"]
    assert used == 1 + 990 + 1  # ev-1, c-1 and c-3; nothing else counted
