"""Tollgate behind PgBouncer in transaction pooling mode, as managed PostgreSQL offerings run it.

Each transaction may run on another server connection. Without TOLLGATE_DATABASE_POOLER the
driver's server-side prepared statements break (the first test shows the two errors users saw);
with `transaction` every PostgreSQL path works: webhook intake, usage and checks, the change
feed the entitlement caches follow, job locks, and migrations (direct, or through the pooler).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from tests.conftest import EXAMPLE_CATALOG
from tests.e2e.conftest import serve
from tests.integration.test_webhooks import (
    SECRET,
    T0,
    customer_obj,
    event_obj,
    new_id,
    subscription_obj,
)
from tests.pgbouncer import Pooled, fresh_database, needs_pgbouncer, run_pgbouncer
from tests.redis_space import redis_space
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.migrate import current_revision, downgrade, head_revision, upgrade
from tollgate.db.models import AuditLog, Customer, StripeEvent, Subscription, UsageEvent
from tollgate.db.unit_of_work import Database
from tollgate.jobs.schedule import SKIPPED, Job, Worker
from tollgate.services.api_keys import create_api_key

pytestmark = [pytest.mark.postgres, needs_pgbouncer]


@pytest.fixture
def pooled() -> Iterator[Pooled]:
    """A migrated database of this test's own, and PgBouncer (2 server connections) before it."""
    with fresh_database() as direct_url:
        upgrade(direct_url)
        with run_pgbouncer(direct_url, pool_size=2) as running:
            yield running


@pytest.fixture
def make_pooled_container(
    pooled: Pooled, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Container]]:
    """Containers (each one as a replica) reaching the database through PgBouncer."""
    built: list[Container] = []

    def make(**overrides: Any) -> Container:
        settings = make_settings(
            pooled.pooled_url,
            TOLLGATE_DATABASE_POOLER="transaction",
            TOLLGATE_DATABASE_DIRECT_URL=pooled.direct_url,
            STRIPE_WEBHOOK_SECRETS=SECRET,
            **overrides,
        )
        built.append(container := build_container(settings))
        return container

    yield make
    for container in built:
        container.close()


def _same_query_on_two_connections(database: Database) -> None:
    """Run one statement six times on one client connection, then on another."""
    query = sa.text("SELECT count(*) FROM customers WHERE id = :id")
    with database.engine.connect() as first, database.engine.connect() as second:
        for connection in (first, second):
            for _ in range(6):  # psycopg prepares on the server from the fifth run
                with connection.begin():
                    connection.execute(query, {"id": "acme"})


def test_without_the_setting_server_side_prepares_break_behind_the_pooler(
    pooled: Pooled,
) -> None:
    # Two client connections share PgBouncer's server connections: the second one's prepare
    # meets the first one's statement of the same name on the same server connection.
    database = Database(pooled.pooled_url)
    try:
        with pytest.raises(sa.exc.ProgrammingError) as raised:
            _same_query_on_two_connections(database)
        assert type(raised.value.orig).__name__ in (
            "DuplicatePreparedStatement",
            "InvalidSqlStatementName",
        )
    finally:
        database.dispose()
    fixed = Database(pooled.pooled_url, pooler="transaction")
    try:
        _same_query_on_two_connections(fixed)
    finally:
        fixed.dispose()


def _post(url: str, bodies: list[bytes]) -> list[int]:
    def post(body: bytes) -> int:
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
        with httpx.Client(timeout=60) as http:
            answer = http.post(
                url,
                content=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            )
            return answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(post, bodies))


def test_webhooks_through_the_pooler_apply_each_event_once(
    make_pooled_container: Callable[..., Container],
) -> None:
    replicas = [make_pooled_container(), make_pooled_container()]
    customers = [new_id("cus") for _ in range(6)]
    created = [event_obj("customer.created", customer_obj(c, app_id=f"app-{c}")) for c in customers]
    subs = {c: new_id("sub") for c in customers}
    seats = [
        event_obj(
            "customer.subscription.updated",
            subscription_obj(subs[c], c, seats=seats),
            created=T0 + seats,
        )
        for c in customers
        for seats in (2, 3, 4)
    ]
    with serve(replicas[0]) as first, serve(replicas[1]) as second:
        urls = [f"{first}/webhooks/stripe", f"{second}/webhooks/stripe"]
        for batch in ([orjson.dumps(e) for e in created], [orjson.dumps(e) for e in seats]):
            copies = batch * 4  # every event four times, half to each replica
            statuses = _post(urls[0], copies[::2]) + _post(urls[1], copies[1::2])
            assert statuses == [200] * len(copies)
    database = replicas[0].db
    with database.transaction() as session:
        for customer in customers:
            row = session.get(Subscription, subs[customer])
            assert row is not None and row.seats == 4
        events = session.scalars(sa.select(StripeEvent)).all()
        assert len(events) == len(created) + len(seats)
        assert {(event.status, event.attempts) for event in events} == {("succeeded", 1)}
        # An event older than one applied before it changes nothing; none applies twice.
        audits = session.execute(
            sa.select(AuditLog.event_id, sa.func.count()).group_by(AuditLog.event_id)
        ).all()
        assert audits and max(count for _, count in audits) == 1


@pytest.mark.parametrize("counting", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_usage_checks_and_cache_invalidation_through_the_pooler(
    make_pooled_container: Callable[..., Container], counting: str
) -> None:
    with ExitStack() as stack:
        counters = stack.enter_context(redis_space()) if counting == "redis" else {}
        _usage_checks_and_cache(make_pooled_container, counters)


def _usage_checks_and_cache(
    make_pooled_container: Callable[..., Container], counters: dict[str, str]
) -> None:
    first_app = make_pooled_container(STRIPE_SECRET_KEY="", **counters)
    second_app = make_pooled_container(STRIPE_SECRET_KEY="", **counters)
    key = create_api_key(db=first_app.db, clock=first_app.clock, name="app", scope="write")
    headers = {"Authorization": f"Bearer {key.secret}"}
    with (
        TestClient(create_app(first_app), headers=headers) as first,
        TestClient(create_app(second_app), headers=headers) as second,
    ):
        body = {"id": "acme", "email": "b@acme.example", "offline": True}
        assert first.post("/v1/customers", json=body).status_code == 201
        for batch in range(12):  # more than psycopg's five runs before it would prepare
            api = (first, second)[batch % 2]
            events = [
                {"id": f"run-{batch}-{i}", "customer": "acme", "meter": "runs", "value": 1}
                for i in range(10)
            ]
            answer = api.post("/v1/usage", json={"events": events + events[:3]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == 10
            assert answer.json()["duplicates"] == 3
            check = api.get("/v1/customers/acme/entitlements/runs?quantity=1")
            assert check.status_code == 200 and check.json()["allowed"] is True
        assert second.get("/v1/customers/acme/usage").json()["meters"]["runs"]["used"] == 120

        # One replica's cached decision learns of a change the other committed.
        assert first.get("/v1/customers/acme/entitlements/marketplace").json()["allowed"] is False
        upgraded = second.put(
            "/v1/customers/acme/subscription", json={"plan": "pro", "interval": "month"}
        )
        assert upgraded.status_code == 200, upgraded.text
        deadline = time.monotonic() + 30  # generous: loaded machines stall; it must learn
        while not first.get("/v1/customers/acme/entitlements/marketplace").json()["allowed"]:
            assert time.monotonic() < deadline, "the cached decision never learned of the change"
            time.sleep(0.01)
    with first_app.db.transaction() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(UsageEvent)) == 120
        assert session.get(Customer, "acme") is not None


def test_jobs_through_the_pooler_run_once_per_interval_across_workers(
    make_pooled_container: Callable[..., Container],
) -> None:
    clock = FrozenClock(datetime(2026, 11, 20, 2, tzinfo=UTC))
    replicas = [make_pooled_container(), make_pooled_container()]
    for replica in replicas:
        replica.clock = clock
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def job(name: str) -> Callable[[Container], str]:
        def run(_: Container) -> str:
            with lock:
                runs[name] += 1
            time.sleep(0.05)  # the other worker tries meanwhile
            return "done"

        return run

    schedule = tuple(Job(name, timedelta(minutes=1), job(name)) for name in ("a", "b", "c"))
    workers = [Worker(app, schedule) for app in replicas]
    outcomes: Counter[object] = Counter()
    for _ in range(7):  # more ticks than psycopg's five runs before it would prepare
        start = threading.Barrier(2)

        def tick(worker: Worker, start: threading.Barrier = start) -> None:
            start.wait()
            reports = worker.run_due()
            with lock:
                outcomes.update(str(report) for report in reports.values())

        threads = [threading.Thread(target=tick, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clock.advance(timedelta(minutes=1))
    assert runs == {"a": 7, "b": 7, "c": 7}
    assert outcomes == {"done": 21, SKIPPED: 21}


def test_turns_of_one_name_never_overlap_across_replicas_through_the_pooler(
    pooled: Pooled,
) -> None:
    # Two replicas, three holders each, PgBouncer with two server connections: a turn (a
    # tax-ID change's Stripe calls) runs alone, and a waiter never needs a second connection.
    replicas = [Database(pooled.pooled_url, pooler="transaction") for _ in range(2)]
    inside: list[int] = []
    most = 0
    lock = threading.Lock()

    def take_turn(db: Database) -> None:
        nonlocal most
        with db.taking_turns("tax-ids:acme") as turn:
            with turn.transaction() as session:
                session.execute(sa.text("SELECT 1"))
            with lock:
                inside.append(1)
                most = max(most, len(inside))
            time.sleep(0.05)  # the Stripe calls: the others try meanwhile
            with lock:
                inside.pop()
            with turn.write_transaction() as session:
                session.execute(sa.text("SELECT 1"))

    try:
        with ThreadPoolExecutor(6) as pool:
            for _ in range(2):  # more turns than psycopg's five runs before it would prepare
                list(pool.map(take_turn, replicas * 3))
    finally:
        for db in replicas:
            db.dispose()
    assert most == 1


def test_migrations_run_directly_or_through_the_pooler(pooled: Pooled) -> None:
    database = Database(pooled.pooled_url, pooler="transaction")
    try:
        head = head_revision(pooled.direct_url)
        assert current_revision(database.engine) == head
        downgrade(pooled.pooled_url, "base", pooler="transaction")
        assert current_revision(database.engine) is None
        upgrade(pooled.pooled_url, pooler="transaction")
        assert current_revision(database.engine) == head
    finally:
        database.dispose()

    # The CLI: migrations on TOLLGATE_DATABASE_DIRECT_URL, the rest through the pooler.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    env.update(
        TOLLGATE_ENV="test",
        TOLLGATE_DATABASE_URL=pooled.pooled_url,
        TOLLGATE_DATABASE_POOLER="transaction",
        TOLLGATE_DATABASE_DIRECT_URL=pooled.direct_url,
        TOLLGATE_CATALOG=str(EXAMPLE_CATALOG),
    )
    for command in (["db", "downgrade", "base"], ["db", "upgrade"], ["db", "current"]):
        done = subprocess.run(
            [sys.executable, "-m", "tollgate.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert f"current: {head}" in done.stdout
