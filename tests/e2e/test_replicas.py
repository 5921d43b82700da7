"""Two API replicas and two workers on one PostgreSQL and Redis, behind HAProxy, behave as one.

Everything goes through the balancer while one API replica is SIGKILLed and started again:
Stripe's signed events (stripesim delivers them, duplicated and shuffled, and retries a failed
delivery), usage from an app that retries a failed call, and entitlement checks. Afterwards the
state is compared with the simulator's: no event lost or applied twice, no hard limit overshot,
every email (aiosmtpd) received once.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from aiosmtpd.controller import Controller

from stripesim.testing import RunningSim, free_port
from tests.conftest import EXAMPLE_CATALOG
from tests.pgbouncer import fresh_database
from tests.redis_space import redis_space
from tests.replicas import Fleet, needs_haproxy, process_env
from tollgate.bootstrap import build_container
from tollgate.clock import FrozenClock
from tollgate.config import load_settings
from tollgate.db.migrate import upgrade
from tollgate.db.models import AuditLog, Notification, StripeEvent, UsageEvent
from tollgate.db.unit_of_work import Database
from tollgate.jobs.webhooks import retry_failed_webhooks
from tollgate.services.catalog import sync_catalog
from tollgate.services.webhooks.inbox import LEASE

pytestmark = [pytest.mark.postgres, pytest.mark.redis, needs_haproxy]

SECRET = "whsec_tollgate_replicas_0123456789"
API_KEY = "replicas-write-key-0123456789abcdef"
FREE_LIMIT = 1000  # the example catalog's free plan: 1,000 runs, a hard limit


class Inbox:
    """An aiosmtpd handler that keeps each message's Message-ID and recipients."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.message_ids.append(str(message["Message-ID"]))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


class App:
    """The SaaS app: calls Tollgate through the balancer, retrying what failed, as a client does."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )
        self.retries = 0

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for _ in range(60):
            try:
                answer = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code < 500:
                return answer
            self.retries += 1
            time.sleep(0.1)
        raise AssertionError(f"{method} {path} kept failing")


def _settle(sim: RunningSim, timeout: float = 60) -> None:
    assert sim.sim.webhooks is not None
    assert sim.webhooks.flush(timeout=timeout), "stripesim still had webhooks to deliver"


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_two_replicas_and_two_workers_behind_haproxy_survive_a_killed_replica(
    sim: RunningSim, client: stripe.StripeClient, smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, smtp_port = smtp
    with fresh_database() as database_url, redis_space() as redis_settings:
        upgrade(database_url)
        settings = {
            "TOLLGATE_ENV": "test",
            "TOLLGATE_DATABASE_URL": database_url,
            "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
            "TOLLGATE_API_KEYS": f"app:write:{API_KEY}",
            "TOLLGATE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "STRIPE_SECRET_KEY": "sk_test_replicas",
            "STRIPE_API_BASE": sim.url,
            "STRIPE_WEBHOOK_SECRETS": SECRET,
            **redis_settings,
        }
        setup = build_container(load_settings(**settings))
        sync_catalog(catalog=setup.catalog, gateway=setup.stripe)
        setup.close()
        fleet = Fleet(tmp_path, process_env(settings))
        db = Database(database_url)
        try:
            _run_story(fleet, sim, client, inbox, db, lambda: _retry_after_leases(settings))
        finally:
            fleet.close()
            db.dispose()


def _retry_after_leases(settings: dict[str, str]) -> None:
    """Run the workers' retry job as it runs once every lease taken now has run out."""
    worker = build_container(load_settings(**settings))
    try:
        retry_failed_webhooks(
            db=worker.db,
            gateway=worker.stripe,
            clock=FrozenClock(datetime.now(UTC) + LEASE + timedelta(seconds=1)),
            dunning=worker.dunning_policy,
        )
    finally:
        worker.close()


def _run_story(
    fleet: Fleet,
    sim: RunningSim,
    sdk: stripe.StripeClient,
    inbox: Inbox,
    db: Database,
    retry_after_leases: Callable[[], None],
) -> None:
    servers = [fleet.server("api-a"), fleet.server("api-b")]
    workers = [fleet.worker("worker-a"), fleet.worker("worker-b")]
    for process in (*servers, *workers):
        process.wait_ready()
    url = fleet.balance(servers)
    with sim.sim.lock:
        endpoint = sim.sim.add_webhook_endpoint(f"{url}/webhooks/stripe", secret=SECRET)
        sim.sim.webhooks.duplicate_rate = 0.3
        sim.sim.webhooks.shuffle = True
        sim.sim.webhooks.retry_base_seconds = 0.2
    app = App(url)
    try:
        _drive(fleet, servers, sim, sdk, inbox, db, app, endpoint["id"], retry_after_leases)
    finally:
        app.http.close()


def _drive(
    fleet: Fleet,
    servers: list[Any],
    sim: RunningSim,
    sdk: stripe.StripeClient,
    inbox: Inbox,
    db: Database,
    app: App,
    endpoint_id: str,
    retry_after_leases: Callable[[], None],
) -> None:
    pro_price = next(
        price.id
        for price in sdk.v1.prices.list(params={"limit": 100}).data
        if (tags := price.metadata.to_dict()).get("tollgate_plan") == "pro"
        and tags.get("tollgate_interval") == "month"
        and "tollgate_feature" not in tags
    )

    stripe_customers = [f"org-{i}" for i in range(12)]
    free_customers = [f"free-{i}" for i in range(3)]
    pro_customers = [f"pro-{i}" for i in range(3)]
    killed = threading.Event()
    accepted: Counter[str] = Counter()  # usage event id -> times answered "accepted"
    lock = threading.Lock()

    def stripe_side() -> None:
        # Customers made through Tollgate (it calls Stripe); then Stripe's own changes to
        # their subscriptions, each one an event delivered through the balancer.
        for customer in stripe_customers:
            body = {"id": customer, "email": f"billing@{customer}.example"}
            answer = app.call("POST", "/v1/customers", json=body)
            assert answer.status_code in (200, 201), answer.text
        for index, customer in enumerate(stripe_customers):
            cus_id = app.call("GET", f"/v1/customers/{customer}").json()["stripe_customer_id"]
            sub = sdk.v1.subscriptions.create(
                params={"customer": cus_id, "items": [{"price": pro_price}], "trial_period_days": 9}
            )
            item = sub["items"].data[0].id
            for seats in range(2, 2 + index % 4):
                sdk.v1.subscriptions.update(
                    sub.id, params={"items": [{"id": item, "quantity": seats}]}
                )
            if index % 3 == 0:
                sdk.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})

    def usage_side(customer: str, total: int, value: int) -> None:
        ids = [f"{customer}-{n}" for n in range(total)]
        for start in range(0, total, 50):
            batch = [
                {"id": event_id, "customer": customer, "meter": "runs", "value": value}
                for event_id in ids[start : start + 50]
            ]
            answer = app.call("POST", "/v1/usage", json={"events": batch})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            rejected = {row["index"] for row in body["rejected"]}
            with lock:
                for index, event in enumerate(batch):
                    if index not in rejected:
                        accepted[event["id"]] += 1
            check = app.call("GET", f"/v1/customers/{customer}/entitlements/runs?quantity=1")
            assert check.status_code == 200, check.text

    for customer in free_customers:
        body = {"id": customer, "email": f"b@{customer}.example", "offline": True}
        assert app.call("POST", "/v1/customers", json=body).status_code in (200, 201)
    for customer in pro_customers:
        body = {"id": customer, "email": f"b@{customer}.example", "offline": True, "plan": "pro"}
        assert app.call("POST", "/v1/customers", json=body).status_code in (200, 201)

    def chaos() -> None:
        # Kill one API replica mid-load, without warning, and start it again on its port.
        time.sleep(random.uniform(1.0, 2.0))
        servers[0].signal(signal.SIGKILL)
        servers[0].wait(timeout=10)
        killed.set()
        time.sleep(1.0)
        again = fleet.restart(servers[0])
        again.wait_ready()

    with ThreadPoolExecutor(max_workers=8) as pool:
        work = [pool.submit(stripe_side), pool.submit(chaos)]
        # Free: 1,500 runs offered against the 1,000 hard limit; pro: 120,000 of 100,000
        # included (80 % and 100 % emails).
        work += [pool.submit(usage_side, c, 1500, 1) for c in free_customers]
        work += [pool.submit(usage_side, c, 600, 200) for c in pro_customers]
        for future in work:
            future.result()
    assert killed.is_set()
    _settle(sim)
    # An event the killed replica held under its lease (asking Stripe for an object when it
    # died) is stored and was answered, but stays processing until the lease runs out; the
    # workers' retry job then applies it. Run that job as it runs then.
    with db.transaction() as session:
        leased = session.scalars(
            sa.select(StripeEvent.id).where(StripeEvent.status == "processing")
        ).all()
    if leased:
        retry_after_leases()

    # Stripe's state, read back through the balancer, is Tollgate's.
    for customer in stripe_customers:
        mine = app.call("GET", f"/v1/customers/{customer}/subscription").json()
        cus_id = app.call("GET", f"/v1/customers/{customer}").json()["stripe_customer_id"]
        theirs = sdk.v1.subscriptions.list(params={"customer": cus_id}).data[0]
        assert mine["plan"] == "pro", mine
        assert mine["seats"] == theirs["items"].data[0].quantity
        assert mine["cancel_at_period_end"] == theirs.cancel_at_period_end
        expected = "canceling" if theirs.cancel_at_period_end else theirs.status
        assert mine["status"] == expected

    # Every event stripesim sent to the endpoint is in the inbox once, applied once.
    with sim.sim.lock:  # this test's endpoint only (the simulator serves other tests too)
        sent = {event for to, event, _ in sim.webhooks.delivered if to == endpoint_id}
    with db.transaction() as session:
        inbox_rows = session.execute(sa.select(StripeEvent.id, StripeEvent.status)).all()
        audits = session.execute(
            sa.select(AuditLog.event_id, sa.func.count())
            .where(AuditLog.event_id.is_not(None))
            .group_by(AuditLog.event_id)
        ).all()
    assert {row.id for row in inbox_rows} == sent
    assert {row.status for row in inbox_rows} <= {"succeeded", "ignored"}
    assert all(count == 1 for _, count in audits)

    # Usage: exactly once per id, and no hard limit overshot.
    assert all(times == 1 for times in accepted.values()), "an event was counted twice"
    with db.transaction() as session:
        stored = Counter(session.scalars(sa.select(UsageEvent.customer_id)).all())
    for customer in free_customers:
        used = app.call("GET", f"/v1/customers/{customer}/usage").json()["meters"]["runs"]["used"]
        # Never past the limit. A batch in flight on the killed replica had reserved its runs in
        # Redis without committing: its retry finds them taken until the resync job gives them
        # back (a minute or two), so at most one batch (50) is held back, never over-granted.
        assert used == stored[customer]
        assert FREE_LIMIT - 50 <= used <= FREE_LIMIT
    for customer in pro_customers:
        used = app.call("GET", f"/v1/customers/{customer}/usage").json()["meters"]["runs"]["used"]
        assert used == 600 * 200 and stored[customer] == 600
    assert sum(accepted.values()) == sum(stored.values())

    # Every email once: each notification sent, each received once.
    def all_sent() -> bool:
        with db.transaction() as session:
            statuses = session.scalars(sa.select(Notification.status)).all()
        return bool(statuses) and set(statuses) == {"sent"}

    _until(all_sent, 45, "notifications were not all sent")
    with db.transaction() as session:
        notifications = session.scalars(sa.select(Notification.id)).all()
    expected_ids = {f"<tollgate-notification-{n}@tollgate>" for n in notifications}
    with inbox.lock:
        received = Counter(inbox.message_ids)
    assert set(received) == expected_ids
    assert set(received.values()) == {1}
    assert len(expected_ids) >= 2 * len(pro_customers)
