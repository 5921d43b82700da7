"""Issue 20: `tollgate plans migrate` moves every subscriber exactly once, even when killed.

Subscribers are made directly in the simulated Stripe (invoiced, so no card is needed) and reach
Tollgate's mirror through the simulator's webhooks. The migration runs as the real command in a
subprocess, is killed (SIGKILL) half-way, and is run again: the simulator's own log of
subscription updates must show one update per subscriber. The count is
TOLLGATE_TEST_MIGRATION_SUBSCRIBERS (1,000 by default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.conftest import DAY, SECRET, World
from tests.e2e.test_plan_versions import EXAMPLE, dearer_catalog, sync
from tollgate.db.queries import plan_migrations as queries
from tollgate.services.plan_migrations import (
    MigrationRequest,
    preview_plan_migration,
    run_plan_migration,
    start_plan_migration,
)

SUBSCRIBERS = int(os.environ.get("TOLLGATE_TEST_MIGRATION_SUBSCRIBERS", "1000"))
T0 = 1_790_000_000


def make_subscribers(world: World, count: int, *, clock: str | None = None) -> list[str]:
    """Make `count` Pro v1 monthly subscribers in Stripe; return their subscription ids."""
    price = world.stripe.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data[0]

    def one(index: int) -> str:
        params: dict[str, Any] = {
            "email": f"c{index}@example.com",
            "metadata": {"tollgate_customer_id": f"cust-{index:05d}"},
        }
        if clock:
            params["test_clock"] = clock
        customer = world.stripe.v1.customers.create(params=params)
        subscription = world.stripe.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id}],
                "collection_method": "send_invoice",
                "days_until_due": 30,
            }
        )
        return str(subscription.id)

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(one, range(count)))
    # Thousands of events reach the mirror: give a busy machine longer than settle()'s 30 s.
    assert world.sim.webhooks.flush(timeout=60 + count * 0.3), "webhooks were still pending"
    return ids


@contextmanager
def counting_updates(world: World) -> Iterator[Counter[str]]:
    """Count the simulator's successful updates of each subscription while the block runs."""
    updates: Counter[str] = Counter()

    def on_exchange(method: str, path: str, status: int, payload: bytes) -> None:
        one_subscription = path.startswith("/v1/subscriptions/{") and path.count("/") == 3
        if method == "POST" and status == 200 and one_subscription:
            updates[json.loads(payload)["id"]] += 1

    listeners = world.sim.sim.exchange_listeners
    listeners.append(on_exchange)
    try:
        yield updates
    finally:
        listeners.remove(on_exchange)


def pro_subscribers_and_v2(make_world: Callable[..., World], tmp_path: Path, count: int) -> World:
    """A world with `count` Pro v1 subscribers and a dearer Pro v2 in the catalog it reads."""
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    sync(world, EXAMPLE)
    make_subscribers(world, count)
    sync(world, dearer_catalog(tmp_path))
    world.container.live_catalog.refresh()
    return world


def migrate_command(world: World, *args: str) -> list[str]:
    return [sys.executable, "-m", "tollgate.cli", "plans", "migrate", "pro", *args]


def command_env(world: World) -> dict[str, str]:
    return {
        **os.environ,
        "TOLLGATE_ENV": "test",
        "TOLLGATE_DATABASE_URL": world.db.url,
        "TOLLGATE_CATALOG": str(EXAMPLE),
        "STRIPE_SECRET_KEY": "sk_test_tollgate_tests",
        "STRIPE_API_BASE": world.sim.url,
        "STRIPE_WEBHOOK_SECRETS": SECRET,
    }


def done_count(world: World) -> int:
    with world.db.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT count(*) FROM plan_migration_customers WHERE status = 'done'"
        ).scalar()
        connection.rollback()
    return int(rows or 0)


def test_a_migration_killed_half_way_and_resumed_moves_each_subscriber_exactly_once(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    sync(world, EXAMPLE)
    subscriptions = make_subscribers(world, SUBSCRIBERS)
    sync(world, dearer_catalog(tmp_path))
    env = command_env(world)

    preview = subprocess.run(
        migrate_command(world, "--from", "1", "--to", "2", "--at", "now", "--dry-run"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert preview.returncode == 0, preview.stderr
    assert "$29.00" in preview.stdout and "$39.00" in preview.stdout
    assert (
        f"{SUBSCRIBERS:,} of {SUBSCRIBERS:,} subscriber(s) of pro v1 move to v2" in preview.stdout
    )

    command = migrate_command(world, "--from", "1", "--to", "2", "--at", "now", "--yes")
    with counting_updates(world) as updates:
        assert not updates  # the preview changed nothing
        output = tmp_path / "first-run.txt"
        with output.open("w") as sink:
            first = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            while done_count(world) < SUBSCRIBERS // 2:
                assert first.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the migration did not get half-way"
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        halfway = done_count(world)
        assert SUBSCRIBERS // 2 <= halfway < SUBSCRIBERS

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"done ({SUBSCRIBERS:,} done)" in resumed.stdout
        assert world.sim.webhooks.flush(timeout=60 + SUBSCRIBERS * 0.3)
    # Exactly one Stripe update per subscriber: none twice, none missed.
    assert set(updates) == set(subscriptions)
    assert set(updates.values()) == {1}

    dearer_price = world.stripe.v1.prices.list(
        params={"lookup_keys": ["tollgate_pro_v2_month_usd"]}
    ).data[0]
    sample = world.stripe.v1.subscriptions.retrieve(subscriptions[0])
    assert sample["items"].data[0].price.id == dearer_price.id
    with world.db.engine.connect() as connection:
        versions = connection.exec_driver_sql(
            "SELECT plan_version, count(*) FROM subscriptions GROUP BY plan_version"
        ).all()
        migration = queries.unfinished_migration(connection, "pro", 1, 2)
        audit = connection.exec_driver_sql(
            "SELECT action FROM audit_log WHERE object_type = 'plan_migration' ORDER BY id"
        ).all()
        connection.rollback()
    assert [tuple(row) for row in versions] == [(2, SUBSCRIBERS)]
    assert migration is None  # finished
    assert [row[0] for row in audit] == ["started", "done"]
    assert world.customer("cust-00000")["plan_version"] == 2


def test_a_migration_at_renewal_keeps_the_period_then_bills_the_new_price_and_emails_first(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    container = world.container
    sync(world, EXAMPLE)
    clock = world.test_clock(T0)
    subscriptions = make_subscribers(world, 3, clock=clock)
    sync(world, dearer_catalog(tmp_path))
    container.live_catalog.refresh()
    request = MigrationRequest("pro", 1, 2, at="renewal", notify=True)
    lines = preview_plan_migration(
        db=container.db, catalog=container.catalog, clock=container.clock, request=request
    )
    assert [(line.old_amount_minor, line.new_amount_minor) for line in lines] == [(2900, 3900)] * 3
    started = start_plan_migration(
        db=container.db,
        catalog=container.catalog,
        clock=container.clock,
        request=request,
        actor="test",
    )
    finished = run_plan_migration(
        db=container.db,
        catalog=container.catalog,
        gateway=container.stripe,
        clock=container.clock,
        migration_id=started.id,
    )
    assert finished.counts == {"done": 3}
    world.settle()
    # Nothing changes before the renewal: still v1, still $29.
    assert world.subscription("cust-00000")["plan_version"] == 1
    with container.db.engine.connect() as connection:
        mails = connection.exec_driver_sql(
            "SELECT count(*) FROM notifications WHERE template = 'price_change'"
        ).scalar()
        connection.rollback()
    assert mails == 3
    world.advance(clock, T0 + 30 * DAY + 7200)
    assert world.subscription("cust-00000")["plan_version"] == 2
    customer = world.customer("cust-00000")
    renewal = [
        invoice.total
        for invoice in world.invoices(customer["stripe_customer_id"])
        if invoice.billing_reason == "subscription_cycle"
    ]
    assert renewal == [3900]
    assert len(subscriptions) == 3


def test_the_api_previews_starts_and_reports_a_migration(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = pro_subscribers_and_v2(make_world, tmp_path, 4)
    path = "/v1/plans/pro/migrations"

    unknown = world.call("POST", path, 400, json={"from_version": 1, "to_version": 3})
    assert unknown["error"]["param"] == "to"
    assert "its versions: 1, 2" in unknown["error"]["message"]
    same = world.call("POST", path, 400, json={"from_version": 2, "to_version": 2})
    assert same["error"]["param"] == "to"
    stranger = world.call(
        "POST", path, 400, json={"from_version": 1, "to_version": 2, "customers": ["nobody"]}
    )
    assert stranger["error"]["param"] == "customers"
    preview = world.call(
        "POST", path, json={"from_version": 1, "to_version": 2, "at": "now", "dry_run": True}
    )
    assert [line["new_price"] for line in preview["customers"]] == [
        {"amount": 3900, "currency": "usd"}
    ] * 4
    with world.db.engine.connect() as connection:
        assert queries.unfinished_migration(connection, "pro", 1, 2) is None  # nothing stored
        connection.rollback()

    started = world.call(
        "POST",
        path,
        202,
        json={"from_version": 1, "to_version": 2, "at": "now", "customers": ["cust-00001"]},
    )
    assert started["counts"] == {"pending": 1}
    deadline = time.monotonic() + 30
    while (found := world.call("GET", f"{path}/{started['id']}"))["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert found["counts"] == {"done": 1}
    assert found["customers"][0]["customer"] == "cust-00001"
    world.settle()
    assert world.subscription("cust-00001")["plan_version"] == 2
    assert world.subscription("cust-00002")["plan_version"] == 1
    world.call("GET", f"/v1/plans/team/migrations/{started['id']}", 404)


def test_the_same_migration_sent_again_after_it_finished_moves_and_emails_nobody_twice(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = pro_subscribers_and_v2(make_world, tmp_path, 2)
    world.settle()
    # Stripe's webhooks of the move are late: Tollgate's rows still show v1 when the repeat comes.
    endpoints = world.stripe.v1.webhook_endpoints.list().data
    for endpoint in endpoints:
        world.stripe.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    path = "/v1/plans/pro/migrations"
    body = {"from_version": 1, "to_version": 2, "at": "now", "customers": ["cust-00001"]}
    started = world.call("POST", path, 202, json={**body, "notify": True})
    deadline = time.monotonic() + 30
    while world.call("GET", f"{path}/{started['id']}")["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert world.subscription("cust-00001")["plan_version"] == 1  # the row has not heard yet

    again = world.call("POST", path, 200, json={**body, "notify": True})
    assert (again["id"], again["status"]) == (started["id"], "done")
    # cust-00000 was not moved: a migration of every subscriber takes only them.
    every = {key: value for key, value in body.items() if key != "customers"}
    everyone = world.call("POST", path, 202, json=every)
    assert everyone["id"] != started["id"] and everyone["counts"] == {"pending": 1}
    with world.db.engine.connect() as connection:
        migrated = (
            connection.exec_driver_sql(
                "SELECT customer_id FROM plan_migration_customers ORDER BY customer_id"
            )
            .scalars()
            .all()
        )
        mails = connection.exec_driver_sql(
            "SELECT count(*) FROM notifications WHERE template = 'price_change'"
        ).scalar()
        connection.rollback()
    assert migrated == ["cust-00000", "cust-00001"]
    assert mails == 1
    for endpoint in endpoints:
        world.stripe.v1.webhook_endpoints.update(endpoint.id, params={"disabled": False})
