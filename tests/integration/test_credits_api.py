"""Credits through the API and the services, on SQLite and PostgreSQL: grants, expiry, burns.

Bad input answers a 4xx naming the field and writes nothing; a repeated grant is granted once;
expired credits leave by an entry; concurrent burns never take a wallet below its allowance; and
the ledger's own check finds nothing wrong afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.models import CreditEntry, CreditTransaction
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key
from tollgate.services.credit_ledger import burn_for_usage, credit_position, ledger_problems
from tollgate.services.credits import expire_credits

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def world(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Container, TestClient, FrozenClock]]:
    clock = FrozenClock(T0)
    container = build_container(
        make_settings(db.url, TOLLGATE_ONBOARD_CREDITS=100, TOLLGATE_CREDIT_OVERDRAFT_ALLOWANCE=20)
    )
    container.clock = clock
    key = create_api_key(db=container.db, clock=clock, name="support-desk", scope="write")
    with TestClient(create_app(container)) as api:
        api.headers["Authorization"] = f"Bearer {key.secret}"
        api.post("/v1/customers", json={"id": "acme", "email": "b@acme.example", "offline": True})
        yield container, api, clock
    container.close()


def credits(api: TestClient, customer: str = "acme") -> dict[str, Any]:
    answer = api.get(f"/v1/customers/{customer}/credits")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def count_rows(db: Database) -> tuple[int, int]:
    with db.transaction() as session:
        return (
            session.scalar(sa.select(sa.func.count()).select_from(CreditTransaction)) or 0,
            session.scalar(sa.select(sa.func.count()).select_from(CreditEntry)) or 0,
        )


def test_a_new_customer_has_its_onboarding_credits_and_the_allowance(world: Any) -> None:
    _, api, _ = world
    body = credits(api)
    assert (body["balance"], body["allowance"]) == (100, 20)
    [entry] = body["entries"]
    assert (entry["kind"], entry["amount"], entry["reason"], entry["actor"]) == (
        "grant",
        100,
        "onboarding",
        "system",
    )


def test_a_support_grant_is_made_once_per_idempotency_key(world: Any) -> None:
    container, api, _ = world
    grant = {"amount": 250, "reason": "sorry for the outage", "idempotency_key": "ticket-42"}
    first = api.post("/v1/customers/acme/credits", json=grant)
    assert first.status_code == 201, first.text
    assert first.json()["actor"] == "api:support-desk"
    again = api.post("/v1/customers/acme/credits", json=grant)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    other = api.post("/v1/customers/acme/credits", json={**grant, "amount": 300})
    assert (other.status_code, other.json()["error"]["param"]) == (409, "idempotency_key")
    assert credits(api)["balance"] == 350
    with container.db.transaction() as session:
        assert ledger_problems(session.connection()) == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"amount": 0, "reason": "x", "idempotency_key": "k"}, "amount"),
        ({"amount": -5, "reason": "x", "idempotency_key": "k"}, "amount"),
        ({"amount": "5", "reason": "x", "idempotency_key": "k"}, "amount"),
        ({"amount": 1.5, "reason": "x", "idempotency_key": "k"}, "amount"),
        ({"amount": 5, "reason": " ", "idempotency_key": "k"}, "reason"),
        ({"amount": 5, "reason": "x", "idempotency_key": "has space"}, "idempotency_key"),
        ({"amount": 5, "reason": "x"}, "idempotency_key"),
        ({"amount": 5, "reason": "x", "idempotency_key": "k", "expires_at": "2020-01-01T00:00:00Z"},
         "expires_at"),
        ({"amount": 5, "reason": "x", "idempotency_key": "k", "expires_at": "2030-01-01T00:00:00"},
         "expires_at"),
        ({"amount": 5, "reason": "x", "idempotency_key": "k", "extra": 1}, "extra"),
    ],
)  # fmt: skip
def test_bad_grants_answer_400_naming_the_field_and_write_nothing(
    world: Any, body: dict[str, Any], param: str
) -> None:
    container, api, _ = world
    before = count_rows(container.db)
    answer = api.post("/v1/customers/acme/credits", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert count_rows(container.db) == before


def test_grants_need_a_write_key_and_a_known_customer(world: Any) -> None:
    container, api, clock = world
    read = create_api_key(db=container.db, clock=clock, name="reader", scope="read").secret
    grant = {"amount": 5, "reason": "x", "idempotency_key": "k"}
    headers = {"Authorization": f"Bearer {read}"}
    assert api.post("/v1/customers/acme/credits", json=grant, headers=headers).status_code == 403
    assert api.get("/v1/customers/acme/credits", headers=headers).status_code == 200
    assert api.post("/v1/customers/nobody/credits", json=grant).status_code == 404
    assert api.get("/v1/customers/nobody/credits").status_code == 404


def test_promotional_credits_expire_by_an_entry(world: Any) -> None:
    container, api, clock = world
    expires = (T0 + timedelta(days=7)).isoformat()
    grant = {
        "amount": 50,
        "reason": "launch promo",
        "idempotency_key": "promo",
        "expires_at": expires,
    }
    assert api.post("/v1/customers/acme/credits", json=grant).status_code == 201
    # The promotion expires first, so it burns first.
    with container.db.write_connection() as connection:
        assert burn_for_usage(
            connection, customer_id="acme", feature="runs", units=30, credits_per_unit=1,
            usage_key="u1", now=clock.now(),
        )  # fmt: skip
    assert expire_credits(db=container.db, clock=clock) == 0
    clock.advance(timedelta(days=8))
    with container.db.transaction() as session:
        # Before the expiry job runs, the expired credits are no longer spendable.
        assert credit_position(session.connection(), "acme").balance == 120
        assert credit_position(session.connection(), "acme", now=clock.now()).balance == 100
    assert expire_credits(db=container.db, clock=clock) == 1
    assert expire_credits(db=container.db, clock=clock) == 0
    body = credits(api)
    assert body["balance"] == 100  # 150 granted, 30 burned, 20 expired
    assert [(e["kind"], e["amount"]) for e in body["entries"]] == [
        ("expiry", -20),
        ("burn", -30),
        ("grant", 50),
        ("grant", 100),
    ]
    with container.db.transaction() as session:
        assert ledger_problems(session.connection()) == []


def test_burns_are_refused_past_the_allowance_and_repeats_burn_once(world: Any) -> None:
    container, api, clock = world

    def burn(units: int, key: str) -> bool:
        with container.db.write_connection() as connection:
            return burn_for_usage(
                connection, customer_id="acme", feature="runs", units=units, credits_per_unit=2,
                usage_key=key, now=clock.now(),
            )  # fmt: skip

    assert burn(50, "a")  # 100 credits: to zero
    assert burn(50, "a")  # the same usage again burns nothing more
    assert burn(10, "b")  # 20 into the overdraft allowance
    assert not burn(1, "c")
    with container.db.transaction() as session:
        assert credit_position(session.connection(), "acme").balance == -20
    assert (
        api.put("/v1/customers/acme/credits/allowance", json={"allowance": 100}).status_code == 200
    )
    assert burn(1, "c")
    assert credits(api)["balance"] == -22


def test_concurrent_burns_never_take_the_balance_below_the_allowance(world: Any) -> None:
    # On PostgreSQL the wallet row's lock decides; on SQLite the writers take turns.
    container, _, clock = world

    def burn(index: int) -> bool:
        with container.db.write_connection() as connection:
            return burn_for_usage(
                connection, customer_id="acme", feature="runs", units=7, credits_per_unit=1,
                usage_key=f"race-{index}", now=clock.now(),
            )  # fmt: skip

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(burn, range(40)))
    # 100 credits and 20 of allowance: 17 burns of 7 fit (119), the 18th would reach -6 past it.
    assert results.count(True) == 17
    with container.db.transaction() as session:
        connection = session.connection()
        assert credit_position(connection, "acme").balance == 100 - 17 * 7
        assert ledger_problems(connection) == []
