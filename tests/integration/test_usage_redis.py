"""Usage counted in Redis (TOLLGATE_REDIS_URL), on SQLite and PostgreSQL: the limit check and
the increment in Redis, the database the record; keys rebuilt when Redis loses them, increments
given back when a transaction fails, counters a crash left over-counted corrected by the resync.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError

from tests.integration.test_usage_and_entitlements import runs_priced_in_credits
from tests.redis_space import REDIS_URL, drop_keys, redis_space
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.client.local import LocalTollgate
from tollgate.config import Settings
from tollgate.db.models import Notification, UsageCounter, UsageEvent, UsagePending, UsageThreshold
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Aggregation
from tollgate.services.api_keys import create_api_key
from tollgate.services.usage import (
    CounterKey,
    RedisCounters,
    Stored,
    UsageReport,
    flush_usage,
    record_usage,
    resync_usage,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def app(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    with redis_space() as settings:
        container = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", **settings))
        yield container
        container.close()


@pytest.fixture
def api(app: Container) -> Iterator[TestClient]:
    key = create_api_key(db=app.db, clock=app.clock, name="app", scope="write")
    with TestClient(create_app(app)) as client:
        client.headers["Authorization"] = f"Bearer {key.secret}"
        yield client


def redis_of(app: Container) -> RedisCounters:
    assert app.usage_counters is not None
    return app.usage_counters


def customer(api: TestClient, customer_id: str, plan: str | None = None) -> None:
    body: dict[str, Any] = {"id": customer_id, "email": f"b@{customer_id}.example", "offline": True}
    if plan:
        body["plan"] = plan
    assert api.post("/v1/customers", json=body).status_code == 201


def runs(customer_id: str, ids: range, value: int = 1, meter: str = "runs") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{customer_id}-{meter}-{i}",
            "customer": customer_id,
            "meter": meter,
            "value": value,
        }
        for i in ids
    ]


def post(api: TestClient, events: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    answer = api.post("/v1/usage", json={"events": events, **body})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def used(api: TestClient, customer_id: str, meter: str = "runs") -> int:
    return int(api.get(f"/v1/customers/{customer_id}/usage").json()["meters"][meter]["used"])


def in_redis(app: Container, customer_id: str, meter: str = "runs") -> int | None:
    counters = redis_of(app)
    keys = [key for key in counters.scan() if key.endswith(f":{meter}:{customer_id}")]
    assert len(keys) <= 1
    if not keys:
        return None
    value = counters.client.hget(keys[0], "v")
    return None if value is None else int(value)


def table_sum(db: Database, column: Any) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.coalesce(sa.func.sum(column), 0))).scalar())


def count_rows(db: Database, table: Any) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar())


def test_the_counters_live_in_redis_and_the_flush_folds_them_into_the_database(
    api: TestClient, app: Container, db: Database
) -> None:
    customer(api, "acme", plan="pro")
    first = post(api, runs("acme", range(300), value=2))
    again = post(api, runs("acme", range(250, 400), value=2))  # 50 of these were counted
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (300, 100, 50)
    assert in_redis(app, "acme") == 800
    # Not folded yet: one pending row per batch; readers add them to the counters.
    assert count_rows(db, UsagePending) == 2 and table_sum(db, UsageCounter.value) == 0
    assert used(api, "acme") == 800

    folded = flush_usage(db=app.db, catalog=app.catalog, clock=app.clock, grace=app.grace)
    assert (folded.rows, folded.counters) == (2, 1)
    assert count_rows(db, UsagePending) == 0
    assert table_sum(db, UsageCounter.value) == table_sum(db, UsageEvent.value) == 800
    assert used(api, "acme") == 800 and in_redis(app, "acme") == 800
    assert flush_usage(db=app.db, catalog=app.catalog, clock=app.clock).rows == 0


def test_the_free_hard_limit_holds_in_redis_unless_told_to_record(api: TestClient) -> None:
    customer(api, "tiny")
    assert post(api, runs("tiny", range(995)))["accepted"] == 995
    over = post(api, runs("tiny", range(995, 1003)))
    assert over["accepted"] == 5
    assert [r["error"]["code"] for r in over["rejected"]] == ["limit_exceeded"] * 3
    assert over["rejected"][0]["error"]["message"] == (
        "Free plan: 1,000 runs a month, 1,000 used; upgrade to Pro for more."
    )
    check = api.get("/v1/customers/tiny/entitlements/runs").json()
    assert (check["allowed"], check["code"]) == (False, "limit_exceeded")
    recorded = post(api, runs("tiny", range(1000, 1003)), enforce_limits=False)
    assert recorded["accepted"] == 3 and used(api, "tiny") == 1003


def test_a_lost_redis_key_is_rebuilt_from_the_database_before_use(
    api: TestClient, app: Container
) -> None:
    customer(api, "tiny")
    customer(api, "disk", plan="pro")
    assert post(api, runs("tiny", range(600)))["accepted"] == 600
    flush_usage(db=app.db, catalog=app.catalog, clock=app.clock)
    assert post(api, runs("tiny", range(600, 900)))["accepted"] == 300  # pending, not folded
    post(api, runs("disk", range(3), value=7, meter="storage_gb"))  # max: 7
    builds = redis_of(app).builds

    assert drop_keys(redis_of(app).prefix) == 2  # Redis restarted empty (or evicted the keys)
    assert in_redis(app, "tiny") is None
    # Rebuilt from the counter (600) plus what is pending (300): the limit still holds exactly.
    after = post(api, runs("tiny", range(900, 1200)))
    assert after["accepted"] == 100 and len(after["rejected"]) == 200
    assert in_redis(app, "tiny") == 1000 and used(api, "tiny") == 1000
    assert post(api, runs("disk", range(3, 5), value=4, meter="storage_gb"))["accepted"] == 2
    assert in_redis(app, "disk", "storage_gb") == 7 == used(api, "disk", "storage_gb")
    assert redis_of(app).builds == builds + 2


def test_a_failed_transaction_gives_the_increment_back(
    api: TestClient, app: Container, db: Database
) -> None:
    customer(api, "acme", plan="pro")
    customer(api, "tiny")
    assert post(api, runs("acme", range(10), value=5))["accepted"] == 10
    assert post(api, runs("tiny", range(990)))["accepted"] == 990
    with db.engine.begin() as connection:
        _fail_pending_inserts(connection)
    batch = runs("acme", range(10, 20), value=5) + runs("tiny", range(990, 1000))
    with pytest.raises(DBAPIError, match="disk on fire"):
        record_usage(
            db=app.db, catalog=app.catalog, clock=app.clock, events=batch, counters=redis_of(app)
        )
    # Counted in Redis, then the transaction failed: Redis holds what the database holds.
    assert (in_redis(app, "acme"), in_redis(app, "tiny")) == (50, 990)
    assert (used(api, "acme"), used(api, "tiny")) == (50, 990)

    with db.engine.begin() as connection:
        connection.execute(sa.text("DROP TRIGGER fail_pending" + _ON_TABLE[db.dialect]))
    again = post(api, batch)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (20, 0, [])
    assert (in_redis(app, "acme"), in_redis(app, "tiny")) == (100, 1000)
    assert (used(api, "acme"), used(api, "tiny")) == (100, 1000)


_ON_TABLE = {"sqlite": "", "postgresql": " ON usage_pending"}


def _fail_pending_inserts(connection: sa.Connection) -> None:
    # A real failure inside the transaction, after the Lua script has counted the batch.
    if connection.dialect.name == "sqlite":
        connection.execute(
            sa.text(
                "CREATE TRIGGER fail_pending BEFORE INSERT ON usage_pending"
                " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        )
        return
    connection.execute(
        sa.text(
            "CREATE FUNCTION fail_pending() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
        )
    )
    connection.execute(
        sa.text(
            "CREATE TRIGGER fail_pending BEFORE INSERT ON usage_pending"
            " FOR EACH ROW EXECUTE FUNCTION fail_pending()"
        )
    )


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_sent_again_while_the_first_commits_is_duplicate_not_rejected_at_the_limit(
    api: TestClient, app: Container, db: Database
) -> None:
    # A client that timed out (or a proxy whose server died) sends a batch again while its
    # first send is still committing: the first counted the events in Redis, so at the hard
    # limit the retry finds no room for them; it waits for the first to commit and answers
    # them as duplicates, not as rejected events that the first then counts.
    customer(api, "tiny")  # free: a hard limit of 1,000 runs
    assert post(api, runs("tiny", range(950)))["accepted"] == 950
    batch = runs("tiny", range(950, 1000))
    inside, go_on = threading.Event(), threading.Event()
    first_backend: list[int] = []

    def hold(connection: sa.Connection, *_: Any) -> None:
        # In the first send's transaction, its events written, before its commit.
        first_backend.append(int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()))
        inside.set()
        assert go_on.wait(30)

    def send(decided: Any = None) -> UsageReport:
        return record_usage(
            db=app.db,
            catalog=app.catalog,
            clock=app.clock,
            events=batch,
            counters=redis_of(app),
            decided=decided,
        )

    with ThreadPoolExecutor(2) as threads:
        try:
            first = threads.submit(send, hold)
            assert inside.wait(30)
            again = threads.submit(send)
            # The retry answers at once (as it did: "rejected"), or waits for the first.
            deadline = time.monotonic() + 30
            while not again.done() and not _blocked_by(db, first_backend[0]):
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            go_on.set()
        first_report, again_report = first.result(30), again.result(30)
    assert first_report.accepted == 50
    assert (again_report.accepted, again_report.duplicates) == (0, 50)
    assert again_report.rejected == []
    # Counted once: in Redis, in the database, and a third send is all duplicates.
    assert in_redis(app, "tiny") == 1000 == used(api, "tiny") == table_sum(db, UsageEvent.value)
    assert send().duplicates == 50
    assert in_redis(app, "tiny") == 1000


def _blocked_by(db: Database, backend: int) -> bool:
    """Return whether some PostgreSQL backend waits for a lock `backend` holds."""
    with db.engine.connect() as connection:
        waiting = connection.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
            ),
            {"pid": backend},
        ).scalar()
    return bool(waiting)


def test_a_counter_left_over_counted_by_a_crash_is_corrected_by_the_resync(
    api: TestClient, app: Container
) -> None:
    customer(api, "tiny")
    assert post(api, runs("tiny", range(900)))["accepted"] == 900
    counters = redis_of(app)
    # A process counts 80 runs in Redis and dies before its transaction commits.
    period = api.get("/v1/customers/tiny/usage").json()["meters"]["runs"]
    key = CounterKey(
        "tiny",
        "runs",
        datetime.fromisoformat(period["period_start"]),
        datetime.fromisoformat(period["period_end"]),
    )
    counters.count(
        [(key, Aggregation.SUM, 1000)],
        [(0, 1, app.clock.now(), f"lost-{i}", 0) for i in range(80)],
        lambda keys: {key: Stored(0) for key in keys},
        app.clock.now(),
    )
    assert in_redis(app, "tiny") == 980 and used(api, "tiny") == 900
    # Over-counted: only 20 more fit where 100 should.
    assert post(api, runs("tiny", range(900, 920)))["accepted"] == 20

    first = resync_usage(db=app.db, counters=counters)  # notes the difference
    assert (first.checked, first.corrected) == (1, 0)
    post(api, runs("tiny", range(920, 921)))  # a batch in between: the look starts again
    assert resync_usage(db=app.db, counters=counters).corrected == 0
    assert in_redis(app, "tiny") == 1000  # still over: 920 recorded, 80 lost
    second = resync_usage(db=app.db, counters=counters)  # the same difference, untouched
    assert second.corrected == 1
    assert in_redis(app, "tiny") == used(api, "tiny") == 920
    assert post(api, runs("tiny", range(1000, 1100)))["accepted"] == 80
    assert resync_usage(db=app.db, counters=counters).matching == 1


def test_an_event_refused_for_credits_is_given_back_to_the_redis_counter(
    db: Database, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # The script checks and counts the whole batch before any credits are burned: the event
    # after one refused for its credits was checked with it counted, and the refused event's
    # count is given back before the batch commits.
    catalog = runs_priced_in_credits(tmp_path)
    with redis_space() as space:
        app = build_container(
            make_settings(
                db.url,
                STRIPE_SECRET_KEY="",
                TOLLGATE_CATALOG=catalog,
                TOLLGATE_ONBOARD_CREDITS=10,
                **space,
            )
        )
        key = create_api_key(db=app.db, clock=app.clock, name="app", scope="write")
        try:
            with TestClient(create_app(app)) as api:
                api.headers["Authorization"] = f"Bearer {key.secret}"
                customer(api, "tiny")  # 10 credits: 2 runs
                report = post(api, runs("tiny", range(1), value=999) + runs("tiny", range(1, 2), 2))
                assert report["accepted"] == 0
                assert [(r["index"], r["error"]["code"]) for r in report["rejected"]] == [
                    (0, "insufficient_credits"),
                    (1, "limit_exceeded"),
                ]
                assert in_redis(app, "tiny") == 0 and used(api, "tiny") == 0
                assert post(api, runs("tiny", range(2, 3), value=2))["accepted"] == 1
                assert in_redis(app, "tiny") == 2 == used(api, "tiny")
        finally:
            app.close()


def test_thresholds_are_recorded_once_a_period_with_redis_counters(
    api: TestClient, db: Database
) -> None:
    customer(api, "acme", plan="pro")
    post(api, runs("acme", range(8), value=10_000))  # 80,000 of 100,000 included
    post(api, runs("acme", range(8, 9), value=5_000))
    post(api, runs("acme", range(9, 12), value=10_000))  # 115,000: past 100 %
    post(api, runs("acme", range(12, 13), value=10_000))
    with db.transaction() as session:
        crossed = session.execute(
            sa.select(UsageThreshold.percent, UsageThreshold.used).order_by(UsageThreshold.percent)
        ).all()
        mails = session.execute(sa.select(Notification.template).order_by(Notification.id)).all()
    assert [tuple(row) for row in crossed] == [(80, 80_000), (100, 115_000)]
    assert [mail.template for mail in mails] == ["usage_warning", "usage_exceeded"]
    usage = api.get("/v1/customers/acme/usage").json()["meters"]["runs"]
    assert usage["overage"] == 25_000 and usage["estimated_overage"]["amount"] == 1250


def test_a_batch_is_refused_whole_with_a_clear_error_when_redis_does_not_answer(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        db.url, STRIPE_SECRET_KEY="", TOLLGATE_REDIS_URL="redis://:s3cret@127.0.0.1:9/0"
    )
    down = build_container(settings)
    key = create_api_key(db=down.db, clock=down.clock, name="app", scope="write")
    try:
        with TestClient(create_app(down)) as client:
            client.headers["Authorization"] = f"Bearer {key.secret}"
            customer(client, "acme", plan="pro")
            answer = client.post("/v1/usage", json={"events": runs("acme", range(5))})
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert error["type"] == "service_unavailable"
            assert "send it again" in error["message"] and "s3cret" not in error["message"]
    finally:
        down.close()
    assert count_rows(db, UsageEvent) == 0 and count_rows(db, UsagePending) == 0


def _named_connections(name: str) -> list[int]:
    """The ids of the Redis connections named `name` (the test's own, by its client_name)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [int(c["id"]) for c in client.client_list() if c.get("name") == name]
    finally:
        client.close()


def test_a_counting_connection_the_server_closed_is_opened_anew_and_counts_once(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    name = f"tollgate-test-{secrets.token_hex(4)}"
    with redis_space() as settings:
        settings["TOLLGATE_REDIS_URL"] += f"?client_name={name}"
        app = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", **settings))
        try:
            tollgate = LocalTollgate(app)
            tollgate.create_customer("acme", email="b@acme.example", offline=True, plan="pro")
            assert tollgate.consume("acme", "runs", 1, id="k-1").allowed
            opened = _named_connections(name)
            assert opened  # the counting script's connection, at least
            killer = redis.Redis.from_url(REDIS_URL)
            for connection_id in opened:  # as a Redis restart or its idle timeout would
                killer.client_kill_filter(_id=connection_id)
            killer.close()

            # Counted once each: the closed connection is seen before the script is sent.
            assert tollgate.consume("acme", "runs", 2, id="k-2").used == 3
            assert tollgate.consume("acme", "runs", 2, id="k-2").used == 3  # replayed
            assert in_redis(app, "acme") == 3
            assert table_sum(db, UsageEvent.value) == 3
            before = len(_named_connections(name))  # this thread's line, the pool's one
            threads = ThreadPoolExecutor(4)
            ids = [f"k-t{n}" for n in range(40)]
            answers = list(threads.map(lambda i: tollgate.consume("acme", "runs", 1, id=i), ids))
            threads.shutdown()  # its threads end: each one's connection closes with it
            assert all(answer.allowed for answer in answers)
            assert in_redis(app, "acme") == 43 == table_sum(db, UsageEvent.value)
            deadline = time.monotonic() + 30  # generous: a loaded machine closes them late
            while len(_named_connections(name)) > before and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(_named_connections(name)) == before
        finally:
            app.close()
    assert _named_connections(name) == []  # every thread's connection closed with the app
