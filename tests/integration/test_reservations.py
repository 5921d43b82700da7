"""Reservations: holds that count in every decision, commit over and under, release, expiry,
and races, on SQLite, PostgreSQL and PostgreSQL + Redis."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.integration.test_consume import api, app, consume, offline_customer, used
from tollgate.bootstrap import Container
from tollgate.clock import FrozenClock
from tollgate.services.usage.reservations import (
    Usage,
    commit_reservation,
    create_reservation,
    release_expired_reservations,
)

__all__ = ["api", "app"]  # the fixtures: counted in the database, or in Redis


def reserve(api: TestClient, customer: str, quantity: int, rid: str, ttl: int = 600) -> Any:
    answer = api.post(
        f"/v1/customers/{customer}/reservations",
        json={"feature": "runs", "quantity": quantity, "ttl_seconds": ttl, "id": rid},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def step(
    api: TestClient, customer: str, rid: str, action: str, expect: int = 200, **body: Any
) -> Any:
    answer = api.post(f"/v1/customers/{customer}/reservations/{rid}/{action}", json=body or None)
    assert answer.status_code == expect, answer.text
    return answer.json()


def runs_entitlement(api: TestClient, customer: str) -> Any:
    return api.get(f"/v1/customers/{customer}/entitlements").json()["features"]["runs"]


def test_a_hold_counts_against_the_limit_until_committed(api: TestClient) -> None:
    offline_customer(api, "tiny")  # Free: 1,000 runs a month, hard
    consume(api, "tiny", 900, "u-1")
    held = reserve(api, "tiny", 80, "r-1")
    assert (held["status"], held["allowed"], held["remaining"]) == ("held", True, 20)
    assert consume(api, "tiny", 30, "u-2")["allowed"] is False  # 900 + 80 held + 30 > 1,000
    check = api.get("/v1/customers/tiny/entitlements/runs", params={"quantity": 21}).json()
    assert check["allowed"] is False and "80 reserved" in check["reason"]
    assert consume(api, "tiny", 20, "u-3")["allowed"] is True
    entitlement = runs_entitlement(api, "tiny")
    assert (entitlement["used"], entitlement["held"], entitlement["remaining"]) == (920, 80, 0)
    # Too much for what is left: denied, stored under its id.
    denied = reserve(api, "tiny", 1, "r-2")
    assert (denied["status"], denied["allowed"], denied["code"]) == (
        "denied",
        False,
        "limit_exceeded",
    )
    assert reserve(api, "tiny", 1, "r-2")["status"] == "denied"  # a retry: as stored

    committed = step(api, "tiny", "r-1", "commit", quantity=50)  # under: the rest released
    assert (committed["status"], committed["committed"]) == ("committed", 50)
    assert step(api, "tiny", "r-1", "commit", quantity=50)["status"] == "committed"  # a retry
    entitlement = runs_entitlement(api, "tiny")
    assert (entitlement["used"], entitlement["held"], entitlement["remaining"]) == (970, 0, 30)
    assert consume(api, "tiny", 30, "u-4")["allowed"] is True
    assert used(api, "tiny") == 1000


def test_committing_more_than_held_is_allowed_only_where_it_fits(api: TestClient) -> None:
    offline_customer(api, "tiny")
    consume(api, "tiny", 980, "u-1")
    reserve(api, "tiny", 10, "r-1")
    over = step(api, "tiny", "r-1", "commit", quantity=25)  # 980 + 25 > 1,000
    assert (over["allowed"], over["status"], over["code"]) == (False, "held", "limit_exceeded")
    assert runs_entitlement(api, "tiny")["held"] == 10
    fits = step(api, "tiny", "r-1", "commit", quantity=20)  # 980 + 20 = 1,000
    assert (fits["allowed"], fits["status"], fits["committed"]) == (True, "committed", 20)
    assert used(api, "tiny") == 1000 and runs_entitlement(api, "tiny")["held"] == 0
    # A soft limit takes any overrun: Pro's runs are billed past what is included.
    offline_customer(api, "acme", plan="pro")
    reserve(api, "acme", 10, "r-2")
    assert step(api, "acme", "r-2", "commit", quantity=500)["committed"] == 500
    assert used(api, "acme") == 500


def test_release_and_expiry_give_the_hold_back_once(api: TestClient, app: Container) -> None:
    offline_customer(api, "tiny")
    reserve(api, "tiny", 600, "r-1")
    released = step(api, "tiny", "r-1", "release")
    assert released["status"] == "released" and "allowed" not in released
    assert step(api, "tiny", "r-1", "release") == released
    error = step(api, "tiny", "r-1", "commit", expect=409, quantity=1)["error"]
    assert "released" in error["message"]
    assert runs_entitlement(api, "tiny")["held"] == 0

    reserve(api, "tiny", 700, "r-2", ttl=60)
    later = FrozenClock(app.clock.now() + timedelta(seconds=61))
    usage = Usage(app.db, app.catalog, later, app.grace, app.usage_counters)
    assert release_expired_reservations(usage) == 1
    assert release_expired_reservations(usage) == 0
    app.entitlements.clear()
    assert runs_entitlement(api, "tiny")["held"] == 0
    assert step(api, "tiny", "r-2", "release")["status"] == "expired"
    assert step(api, "tiny", "r-2", "commit", expect=409, quantity=1)
    assert consume(api, "tiny", 1000, "u-1")["allowed"] is True


def test_bad_reservation_calls_are_refused_and_change_nothing(api: TestClient) -> None:
    offline_customer(api, "tiny")
    base = {"feature": "runs", "quantity": 5, "ttl_seconds": 60, "id": "r-1"}
    for change, words in [
        ({"feature": "storage_gb"}, "cannot be reserved"),
        ({"quantity": 0}, "quantity"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 10**7}, "ttl_seconds"),
        ({"id": ""}, "id"),
    ]:
        answer = api.post("/v1/customers/tiny/reservations", json=base | change)
        assert answer.status_code == 400 and words in answer.text, answer.text
    assert api.post("/v1/customers/ghost/reservations", json=base).status_code == 404
    assert step(api, "tiny", "nope", "release", expect=404)
    reserve(api, "tiny", 5, "r-1")
    clash = api.post("/v1/customers/tiny/reservations", json=base | {"quantity": 6})
    assert clash.status_code == 409
    assert runs_entitlement(api, "tiny")["held"] == 5


def test_concurrent_holds_commits_and_consumes_never_overshoot(
    app: Container, api: TestClient
) -> None:
    offline_customer(api, "busy")
    usage = Usage(app.db, app.catalog, app.clock, app.grace, app.usage_counters)
    ids = itertools.count()

    def worker(n: int) -> int:
        total = 0
        for _ in range(8):
            rid = f"w{n}-{next(ids)}"
            view = create_reservation(
                usage,
                customer_id="busy",
                feature="runs",
                quantity=10,
                ttl_seconds=60,
                reservation_id=rid,
            )
            if view.status != "held":
                continue
            quantity = (n % 3) * 6  # under, over (fits or not), or nothing
            done = commit_reservation(
                usage, customer_id="busy", reservation_id=rid, quantity=quantity
            )
            if done.status == "held":  # over the limit: give it back
                done = commit_reservation(usage, customer_id="busy", reservation_id=rid, quantity=0)
            total += done.committed or 0
        return total

    with ThreadPoolExecutor(32) as pool:
        committed = sum(pool.map(worker, range(32)))
    assert used(api, "busy") == committed <= 1000
    assert runs_entitlement(api, "busy")["held"] == 0
