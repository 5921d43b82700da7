"""Consume: decide and record in one step, exactly once per id, on SQLite, PostgreSQL and
PostgreSQL + Redis; the Python client's verb (HTTP and in process) and FastAPI dependency."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient

from tests.redis_space import redis_space
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.client.local import LocalTollgate
from tollgate.config import Settings
from tollgate.db.models import UsageConsumption, UsageEvent
from tollgate.db.queries import billing
from tollgate.db.unit_of_work import Database
from tollgate.domain.entitlements import AWAITING_TRANSFER
from tollgate.services.api_keys import create_api_key
from tollgate.services.usage import ConsumeCall, Consumed, consume_many
from tollgate.services.usage.consume import Kept
from tollgate_client import Code, InvalidRequest, Tollgate
from tollgate_client.dependency import consume_on_success


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def app(
    request: pytest.FixtureRequest, db: Database, make_settings: Callable[..., Settings]
) -> Iterator[Container]:
    """Tollgate counting in the database, or in Redis."""
    if request.param == "redis":
        if db.engine.dialect.name == "sqlite":
            pytest.skip("Redis counters are tested with PostgreSQL")
        with redis_space() as settings:
            container = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", **settings))
            yield container
            container.close()
        return
    container = build_container(make_settings(db.url, STRIPE_SECRET_KEY=""))
    yield container
    container.close()


@pytest.fixture
def api(app: Container) -> Iterator[TestClient]:
    key = create_api_key(db=app.db, clock=app.clock, name="app", scope="write")
    with TestClient(create_app(app)) as client:
        client.headers["Authorization"] = f"Bearer {key.secret}"
        yield client


def offline_customer(api: TestClient, customer_id: str, plan: str | None = None) -> None:
    body: dict[str, Any] = {"id": customer_id, "email": f"b@{customer_id}.example", "offline": True}
    if plan:
        body["plan"] = plan
    assert api.post("/v1/customers", json=body).status_code == 201


def consume(api: TestClient, customer: str, quantity: int, use_id: str) -> dict[str, Any]:
    answer = api.post(
        f"/v1/customers/{customer}/consume",
        json={"feature": "runs", "quantity": quantity, "id": use_id},
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def used(api: TestClient, customer: str) -> int:
    return int(api.get(f"/v1/customers/{customer}/usage").json()["meters"]["runs"]["used"])


def test_consume_counts_what_fits_and_denies_the_rest_with_the_reason(api: TestClient) -> None:
    offline_customer(api, "tiny")  # Free: 1,000 runs a month, hard
    first = consume(api, "tiny", 990, "c-1")
    assert (first["allowed"], first["code"], first["used"], first["remaining"]) == (
        True,
        "allowed",
        990,
        10,
    )
    denied = consume(api, "tiny", 11, "c-2")
    assert (denied["allowed"], denied["code"]) == (False, "limit_exceeded")
    assert denied["reason"] == "Free plan: 1,000 runs a month, 990 used; upgrade to Pro for more."
    assert used(api, "tiny") == 990
    assert consume(api, "tiny", 10, "c-3")["allowed"] is True
    assert used(api, "tiny") == 1000


def test_a_retry_returns_the_first_answer_and_counts_nothing_again(
    api: TestClient, app: Container
) -> None:
    offline_customer(api, "tiny")
    first = consume(api, "tiny", 600, "job-1")
    again = api.post(
        "/v1/customers/tiny/consume", json={"feature": "runs", "quantity": 600, "id": "job-1"}
    )
    assert again.json() == first and again.headers["Idempotent-Replayed"] == "true"
    assert used(api, "tiny") == 600
    # A denied answer is stored too: the same id stays denied, though 400 more would fit now.
    denied = consume(api, "tiny", 500, "job-2")
    assert denied["allowed"] is False
    assert consume(api, "tiny", 500, "job-2") == denied
    assert used(api, "tiny") == 600
    with app.db.transaction() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(UsageConsumption)) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(UsageEvent)) == 1


def test_an_id_recorded_before_keeps_its_answer_when_the_limit_is_full(api: TestClient) -> None:
    offline_customer(api, "tiny")
    event = {"id": "ev-1", "customer": "tiny", "meter": "runs", "value": 1}
    api.post("/v1/usage", json={"events": [event]})
    allowed = consume(api, "tiny", 999, "job-1")
    assert allowed["allowed"] is True and used(api, "tiny") == 1000
    # Neither fits now: each is still the call it was, not a denial.
    again = api.post(
        "/v1/customers/tiny/consume", json={"feature": "runs", "quantity": 999, "id": "job-1"}
    )
    assert again.json() == allowed and again.headers["Idempotent-Replayed"] == "true"
    clash = api.post("/v1/customers/tiny/consume", json={"feature": "runs", "id": "ev-1"})
    assert clash.status_code == 409 and "usage event" in clash.json()["error"]["message"]
    assert used(api, "tiny") == 1000


def test_bad_consume_calls_get_a_clear_error_and_change_nothing(api: TestClient) -> None:
    offline_customer(api, "tiny")
    consume(api, "tiny", 5, "x-1")
    cases = [
        ("tiny", {"feature": "runs", "quantity": 6, "id": "x-1"}, 409, "x-1"),
        ("tiny", {"feature": "nope", "quantity": 1, "id": "x-2"}, 400, "unknown metered"),
        ("tiny", {"feature": "sso", "quantity": 1, "id": "x-2"}, 400, "unknown metered"),
        ("tiny", {"feature": "runs", "quantity": -1, "id": "x-2"}, 400, "quantity"),
        ("tiny", {"feature": "runs", "quantity": 1.5, "id": "x-2"}, 400, "quantity"),
        ("tiny", {"feature": "runs", "quantity": 1}, 400, "id"),
        ("tiny", {"feature": "runs", "quantity": 1, "id": "x-2", "extra": 1}, 400, "extra"),
        ("ghost", {"feature": "runs", "quantity": 1, "id": "x-3"}, 404, "ghost"),
    ]
    for customer, body, status, words in cases:
        answer = api.post(f"/v1/customers/{customer}/consume", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert words in answer.json()["error"]["message"], answer.text
    assert used(api, "tiny") == 5
    # An id POST /v1/usage recorded is not a consume's to answer.
    event = {"id": "ev-1", "customer": "tiny", "meter": "runs", "value": 1}
    api.post("/v1/usage", json={"events": [event]})
    clash = api.post("/v1/customers/tiny/consume", json={"feature": "runs", "id": "ev-1"})
    assert clash.status_code == 409 and "usage event" in clash.json()["error"]["message"]


def test_the_in_process_client_answers_and_refuses_each_call_as_the_route_does(
    api: TestClient, app: Container
) -> None:
    """The client checks a plain body without the route's model: what the model would refuse
    still gets the model's error, word for word, and nothing is counted."""
    offline_customer(api, "tiny")
    tollgate = LocalTollgate(app)
    cases: list[tuple[str, Any, str]] = [
        ("runs", 5, "p-1"),  # plain and valid: answered alike
        ("runs", 5, "p-1"),  # its retry
        ("runs", 0, "p-2"),
        ("runs", -1, "p-3"),
        ("runs", 1.5, "p-3"),
        ("runs", True, "p-3"),
        ("runs", "1", "p-3"),
        ("runs", 2**53, "p-3"),
        ("runs", 1, ""),
        ("runs", 1, "x" * 256),
        ("runs", 1, "a\x00b"),
        ("runs", 1, "a\ud800"),
        ("ru\x00ns", 1, "p-3"),
        ("teleport", 1, "p-3"),
        ("sso", 1, "p-3"),
    ]
    for feature, quantity, use_id in cases:
        body = {"feature": feature, "quantity": quantity, "id": use_id}
        over_http = api.post(
            "/v1/customers/tiny/consume", content=_json_text(body), headers=_JSON_BODY
        )
        case = (feature, quantity, use_id, over_http.text)
        if over_http.status_code == 200:
            answer = tollgate.consume("tiny", feature, quantity, id=use_id)
            expected = {k: v for k, v in over_http.json().items() if k not in _CALL_FIELDS}
            assert answer.to_json() == expected, case
            continue
        assert over_http.status_code == 400, case
        with pytest.raises(InvalidRequest) as refused:
            tollgate.consume("tiny", feature, quantity, id=use_id)
        error = over_http.json()["error"]
        said = (refused.value.message, refused.value.param)
        assert said == (error["message"], error.get("param")), case
    assert used(api, "tiny") == 5


_CALL_FIELDS = ("id", "customer", "quantity")
_JSON_BODY = {"Content-Type": "application/json"}


def _json_text(body: dict[str, Any]) -> bytes:
    # The standard library's encoder: it writes a lone surrogate as an escape, as an app's would.
    return json.dumps(body).encode()


def test_32_concurrent_consumers_count_exactly_the_limit(api: TestClient, app: Container) -> None:
    offline_customer(api, "busy")  # Free: 1,000 runs a month, hard
    tollgate = LocalTollgate(app)
    ids = itertools.count()

    def worker(n: int) -> int:
        allowed = 0
        for _ in range(40):  # 32 x 40 = 1,280 attempts of one run each
            decision = tollgate.consume("busy", "runs", 1, id=f"w{n}-{next(ids)}")
            allowed += decision.allowed
            assert decision.allowed or decision.code is Code.LIMIT_EXCEEDED
        return allowed

    with ThreadPoolExecutor(32) as pool:
        allowed = sum(pool.map(worker, range(32)))
    assert allowed == 1000
    assert used(api, "busy") == 1000
    with app.db.transaction() as session:
        total = session.scalar(
            sa.select(sa.func.sum(UsageEvent.value)).where(UsageEvent.customer_id == "busy")
        )
        answers = session.scalar(sa.select(sa.func.count()).select_from(UsageConsumption))
    assert (total, answers) == (1000, 1280)


def test_the_http_client_consumes_and_the_dependency_counts_only_successful_requests(
    api: TestClient, app: Container
) -> None:
    offline_customer(api, "acme", plan="pro")
    key = api.headers["Authorization"].removeprefix("Bearer ")
    tollgate = Tollgate("http://testserver", key, decision_ttl=0)
    tollgate.backend.client = api  # TestClient is an httpx.Client over the app
    assert tollgate.consume("acme", "runs", 3, id="h-1").allowed
    assert tollgate.consume("acme", "runs", 3, id="h-1").used == 3  # replayed

    product = FastAPI()

    @product.post(
        "/orgs/{customer_id}/runs",
        dependencies=[Depends(consume_on_success(LocalTollgate(app), "runs", quantity=2))],
    )
    def run(customer_id: str, fail: bool = False) -> dict[str, bool]:
        if fail:
            raise HTTPException(500, "the run broke")
        return {"ok": True}

    with TestClient(product, raise_server_exceptions=False) as client:
        assert client.post("/orgs/acme/runs", headers={"Idempotency-Key": "r-1"}).is_success
        assert client.post("/orgs/acme/runs", headers={"Idempotency-Key": "r-1"}).is_success
        assert client.post("/orgs/acme/runs?fail=true").status_code == 500
        assert client.post("/orgs/acme/runs").is_success
    assert used(api, "acme") == 3 + 2 + 2


def test_calls_sharing_a_group_commit_are_each_decided_as_if_alone(
    api: TestClient, app: Container
) -> None:
    offline_customer(api, "tiny")  # Free: 1,000 runs a month, hard
    offline_customer(api, "acme", plan="pro")
    denied_before = consume(api, "tiny", 2000, "g-0")
    calls = [
        ConsumeCall("tiny", "runs", 300, "g-1"),
        ConsumeCall("acme", "runs", 7, "g-2"),
        ConsumeCall("tiny", "runs", 300, "g-3"),
        ConsumeCall("tiny", "runs", 300, "g-4"),
        ConsumeCall("tiny", "runs", 300, "g-5"),  # 1,200 would pass the limit
        ConsumeCall("tiny", "runs", 100, "g-6"),
        ConsumeCall("tiny", "runs", 300, "g-1"),  # the group's own first call, repeated
        ConsumeCall("tiny", "runs", 2000, "g-0"),  # a retry of a call denied before
        ConsumeCall("tiny", "runs", 5, "g-2"),  # acme's id, for another customer
        ConsumeCall("ghost", "runs", 1, "g-7"),
        ConsumeCall("tiny", "teleport", 1, "g-8"),
    ]
    outcomes = consume_many(
        db=app.db,
        catalog=app.catalog,
        clock=app.clock,
        calls=calls,
        grace=app.grace,
        counters=app.usage_counters,
    )
    answers = [o.decision if isinstance(o, Consumed) else type(o).__name__ for o in outcomes]
    allowed = [(a.allowed, a.used, a.remaining) for a in answers[:6] if not isinstance(a, str)]
    assert allowed == [
        (True, 300, 700),
        (True, 7, 99_993),
        (True, 600, 400),
        (True, 900, 100),
        (False, 900, 100),
        (True, 1000, 0),
    ]
    assert answers[4].reason == (  # type: ignore[union-attr]
        "Free plan: 1,000 runs a month, 900 used; upgrade to Pro for more."
    )
    replayed = [o for o in outcomes[6:8] if isinstance(o, Consumed)]
    assert [(o.replayed, o.decision.used) for o in replayed] == [(True, 300), (True, 0)]
    assert replayed[1].decision.to_json() == {
        k: v for k, v in denied_before.items() if k not in ("id", "customer", "quantity")
    }
    assert answers[8:] == ["Conflict", "NotFound", "InvalidRequest"]
    assert used(api, "tiny") == 1000 and used(api, "acme") == 7


def test_a_change_of_plan_or_deal_between_groups_decides_the_next_call(api: TestClient) -> None:
    offline_customer(api, "mover")  # Free: 1,000 runs a month, hard
    assert consume(api, "mover", 1, "m-1")["reason"] == "Free plan: 1,000 runs a month, 0 used."
    deal = api.put("/v1/customers/mover/overrides/runs", json={"limit": 5_000})
    assert deal.status_code == 200, deal.text
    assert consume(api, "mover", 1, "m-2")["reason"] == "Free plan: 5,000 runs a month, 1 used."
    assert api.delete("/v1/customers/mover/overrides/runs").status_code in (200, 204)
    denied = consume(api, "mover", 1_000, "m-3")
    assert not denied["allowed"] and denied["limit"] == 1_000
    moved = api.put("/v1/customers/mover/subscription", json={"plan": "pro", "interval": "month"})
    assert moved.status_code == 200, moved.text
    assert consume(api, "mover", 1_000, "m-4")["reason"].startswith("Pro plan: 100,000 runs")


def test_a_customer_held_to_the_default_plan_is_not_decided_by_another_on_its_plan(
    api: TestClient, app: Container
) -> None:
    # Two Pro customers with the same status, one held to the default (Free: 1,000 runs,
    # hard) while its first bank transfer is awaited: in one group, and kept from group to
    # group as a writer keeps them, each gets its own plan's limit.
    offline_customer(api, "a-paying", plan="pro")
    offline_customer(api, "b-awaiting", plan="pro")
    offline_customer(api, "c-disputed", plan="pro")
    with app.db.write_connection() as connection:
        billing.set_processing_access(connection, "b-awaiting", AWAITING_TRANSFER, app.clock.now())
    kept = Kept()

    def group(*calls: ConsumeCall) -> list[tuple[bool, int | None]]:
        outcomes = consume_many(
            db=app.db,
            catalog=app.catalog,
            clock=app.clock,
            calls=list(calls),
            grace=app.grace,
            counters=app.usage_counters,
            kept=kept,
        )
        return [(o.decision.allowed, o.decision.limit) for o in outcomes if isinstance(o, Consumed)]

    assert group(
        ConsumeCall("a-paying", "runs", 1_500, "h-1"),
        ConsumeCall("b-awaiting", "runs", 1_500, "h-2"),
        ConsumeCall("c-disputed", "runs", 1_500, "h-3"),
    ) == [(True, None), (False, 1_000), (True, None)]
    # Another process lifts the one hold and sets another: the next group decides by them.
    with app.db.write_connection() as connection:
        billing.set_processing_access(connection, "b-awaiting", None, app.clock.now())
        billing.set_processing_access(connection, "c-disputed", AWAITING_TRANSFER, app.clock.now())
    assert group(
        ConsumeCall("a-paying", "runs", 1_500, "h-4"),
        ConsumeCall("b-awaiting", "runs", 1_500, "h-5"),
        ConsumeCall("c-disputed", "runs", 1_500, "h-6"),
    ) == [(True, None), (True, None), (False, 1_000)]
    assert (used(api, "a-paying"), used(api, "b-awaiting"), used(api, "c-disputed")) == (
        3_000,
        1_500,
        1_500,
    )


def test_a_lone_in_process_caller_keeps_one_connection_and_gives_it_back_on_close(
    api: TestClient, app: Container
) -> None:
    offline_customer(api, "solo", plan="pro")
    tollgate = LocalTollgate(app)
    checkouts: list[object] = []
    sa.event.listen(app.db.engine, "checkout", lambda *_: checkouts.append(None))
    for n in range(5):
        assert tollgate.consume("solo", "runs", 1, id=f"solo-{n}").allowed
    assert len(checkouts) == 1  # taken once, not once a call
    assert used(api, "solo") == 5
    app.consume_writer.close()
    pool: Any = app.db.engine.pool
    assert pool.checkedout() == 0
    # After the writer stopped, a call still succeeds (and keeps nothing checked out).
    assert tollgate.consume("solo", "runs", 1, id="solo-after").allowed
    assert pool.checkedout() == 0
