"""Usage ingestion and entitlement checks through the HTTP API, on SQLite and PostgreSQL.

Customers here are offline (no Stripe): their plan is Tollgate's own, so the rules are seen
without webhooks; the stories with Stripe subscriptions, meters and renewals are in
tests/e2e/test_metering.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.models import Notification, UsageCounter, UsageEvent, UsageThreshold
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

EXAMPLE_CATALOG = Path(__file__).parents[2] / "catalog.example.yaml"


@pytest.fixture
def make_api(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., tuple[TestClient, Container]]]:
    opened: list[tuple[Container, TestClient]] = []

    def make(scope: str = "write", **overrides: Any) -> tuple[TestClient, Container]:
        container = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", **overrides))
        key = create_api_key(db=container.db, clock=container.clock, name="app", scope=scope)
        client = TestClient(create_app(container))
        client.__enter__()
        client.headers["Authorization"] = f"Bearer {key.secret}"
        opened.append((container, client))
        return client, container

    yield make
    for container, client in opened:
        client.__exit__(None, None, None)
        container.close()


@pytest.fixture
def api(make_api: Callable[..., tuple[TestClient, Container]]) -> TestClient:
    return make_api()[0]


def offline_customer(api: TestClient, customer_id: str, plan: str | None = None) -> None:
    body: dict[str, Any] = {"id": customer_id, "email": f"b@{customer_id}.example", "offline": True}
    if plan:
        body["plan"] = plan
    answer = api.post("/v1/customers", json=body)
    assert answer.status_code == 201, answer.text


def runs(
    customer: str, ids: range | list[int], value: int = 1, **extra: Any
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{customer}-run-{i}",
            "customer": customer,
            "meter": "runs",
            "value": value,
            **extra,
        }
        for i in ids
    ]


def post_usage(api: TestClient, events: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    answer = api.post("/v1/usage", json={"events": events, **body})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def count(db: Database, model: Any) -> int:
    with db.transaction() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def used(api: TestClient, customer: str, meter: str = "runs") -> int:
    answer = api.get(f"/v1/customers/{customer}/usage")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["meters"][meter]["used"])


def test_a_batch_counts_new_events_and_rejects_the_bad_ones_with_reasons(
    api: TestClient, db: Database
) -> None:
    offline_customer(api, "acme", plan="pro")
    events: list[dict[str, Any]] = [
        *runs("acme", range(3), value=10),
        {"id": "bad-meter", "customer": "acme", "meter": "rides", "value": 1},
        {"id": "bad-customer", "customer": "nobody", "meter": "runs", "value": 1},
        {
            "id": "future",
            "customer": "acme",
            "meter": "runs",
            "value": 1,
            "timestamp": "2099-01-01T00:00:00Z",
        },
        {
            "id": "ancient",
            "customer": "acme",
            "meter": "runs",
            "value": 1,
            "timestamp": 1_000_000_000,
        },
        {"id": "negative", "customer": "acme", "meter": "runs", "value": -4},
        {"id": "fraction", "customer": "acme", "meter": "runs", "value": 1.5},
        {"customer": "acme", "meter": "runs", "value": 1},
        {"id": "gb", "customer": "acme", "meter": "storage_gb", "value": 7},
    ]
    report = post_usage(api, events)
    assert (report["accepted"], report["duplicates"]) == (4, 0)
    codes = {item["index"]: item["error"]["code"] for item in report["rejected"]}
    assert codes == {
        3: "unknown_meter",
        4: "unknown_customer",
        5: "invalid_timestamp",
        6: "invalid_timestamp",
        7: "invalid_value",
        8: "invalid_value",
        9: "invalid_id",
    }
    messages = {item["index"]: item["error"]["message"] for item in report["rejected"]}
    assert "more than 5 minutes in the future" in messages[5]
    assert "before the open billing period" in messages[6]
    assert "runs" in messages[3] and "rides" in messages[3]
    assert used(api, "acme") == 30 and used(api, "acme", "storage_gb") == 7
    assert count(db, UsageEvent) == 4


def test_retrying_a_batch_or_part_of_it_counts_nothing_twice(api: TestClient, db: Database) -> None:
    offline_customer(api, "acme", plan="pro")
    first = post_usage(api, runs("acme", range(100), value=3))
    assert (first["accepted"], first["duplicates"]) == (100, 0)
    again = post_usage(api, runs("acme", range(100), value=3))
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 100, [])
    overlap = post_usage(api, runs("acme", range(90, 110), value=3))
    assert (overlap["accepted"], overlap["duplicates"]) == (10, 10)
    twice_in_one = post_usage(api, runs("acme", [500, 500, 500]))
    assert (twice_in_one["accepted"], twice_in_one["duplicates"]) == (1, 2)
    assert used(api, "acme") == 110 * 3 + 1
    assert count(db, UsageEvent) == 111


def test_a_malformed_call_is_refused_whole_and_changes_nothing(
    api: TestClient, db: Database, make_api: Callable[..., tuple[TestClient, Container]]
) -> None:
    offline_customer(api, "acme")
    too_many = runs("acme", range(1001))
    cases = [
        (
            api.post(
                "/v1/usage", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            400,
        ),
        (api.post("/v1/usage", json={"events": "runs"}), 400),
        (api.post("/v1/usage", json={"events": []}), 400),
        (api.post("/v1/usage", json={"usage": []}), 400),
        (api.post("/v1/usage", json={"events": too_many}), 400),
        (api.post("/v1/usage", json={"events": runs("acme", [1]), "enforce_limits": "no"}), 400),
        (make_api("read")[0].post("/v1/usage", json={"events": runs("acme", [1])}), 403),
    ]
    for answer, status in cases:
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["message"]
    assert "at most 1,000" in cases[4][0].json()["error"]["message"]
    assert count(db, UsageEvent) == 0 and count(db, UsageCounter) == 0


def test_the_free_hard_limit_refuses_past_1000_unless_told_to_record(
    api: TestClient, db: Database
) -> None:
    offline_customer(api, "tiny")
    report = post_usage(api, runs("tiny", range(1005)[:1000]))
    assert report["accepted"] == 1000
    over = post_usage(api, runs("tiny", range(1000, 1003)))
    assert over["accepted"] == 0
    assert [item["error"]["code"] for item in over["rejected"]] == ["limit_exceeded"] * 3
    assert over["rejected"][0]["error"]["message"] == (
        "Free plan: 1,000 runs a month, 1,000 used; upgrade to Pro for more."
    )
    check = api.get("/v1/customers/tiny/entitlements/runs").json()
    assert (check["allowed"], check["code"], check["remaining"]) == (False, "limit_exceeded", 0)

    recorded = post_usage(api, runs("tiny", range(1000, 1003)), enforce_limits=False)
    assert recorded["accepted"] == 3 and used(api, "tiny") == 1003


def runs_priced_in_credits(tmp_path: Path) -> str:
    """The example catalog with each run costing 5 credits (Free still stops at 1,000 runs)."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["features"]["runs"]["credits_per_unit"] = 5
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


def test_an_event_refused_for_credits_leaves_room_under_the_limit_for_the_next(
    make_api: Callable[..., tuple[TestClient, Container]], tmp_path: Path
) -> None:
    # Counted in the database, each event is decided in turn: one refused for its credits never
    # counted, so the next one is checked against the limit without it.
    api, _ = make_api(
        TOLLGATE_CATALOG=runs_priced_in_credits(tmp_path), TOLLGATE_ONBOARD_CREDITS=10
    )
    offline_customer(api, "tiny")  # 10 credits: 2 runs
    report = post_usage(api, [*runs("tiny", [0], value=999), *runs("tiny", [1], value=2)])
    assert report["accepted"] == 1
    assert [(r["index"], r["error"]["code"]) for r in report["rejected"]] == [
        (0, "insufficient_credits")
    ]
    assert used(api, "tiny") == 2


def test_thresholds_are_recorded_once_a_period_with_their_notifications(
    api: TestClient, db: Database
) -> None:
    offline_customer(api, "acme", plan="pro")
    post_usage(api, runs("acme", range(8), value=10_000))  # 80,000 of 100,000 included
    post_usage(api, runs("acme", range(8, 9), value=5_000))
    post_usage(api, runs("acme", range(9, 12), value=10_000))  # 115,000: past 100 %
    post_usage(api, runs("acme", range(12, 13), value=10_000))
    with db.transaction() as session:
        crossed = session.execute(
            sa.select(UsageThreshold.percent, UsageThreshold.used).order_by(UsageThreshold.percent)
        ).all()
        mails = session.execute(
            sa.select(Notification.template, Notification.facts).order_by(Notification.id)
        ).all()
    assert [tuple(row) for row in crossed] == [(80, 80_000), (100, 115_000)]
    assert [mail.template for mail in mails] == ["usage_warning", "usage_exceeded"]
    assert mails[1].facts["percent"] == 100 and mails[1].facts["included"] == 100_000
    assert mails[1].facts["overage_rate_text"] == "$0.50 per 1,000 runs"
    usage = api.get("/v1/customers/acme/usage").json()["meters"]["runs"]
    assert usage["overage"] == 25_000 and usage["percentage"] == 125.0
    assert usage["estimated_overage"] == {"amount": 1250, "currency": "usd"}


def test_entitlements_answer_every_feature_and_refuse_bad_questions(
    api: TestClient, make_api: Callable[..., tuple[TestClient, Container]]
) -> None:
    offline_customer(api, "acme", plan="pro")
    reader = make_api("read")[0]
    everything = reader.get("/v1/customers/acme/entitlements")
    assert everything.status_code == 200
    body = everything.json()
    assert (body["plan"], body["status"], body["access"]) == ("pro", "active", "full")
    assert body["features"]["marketplace"]["enabled"] is True
    assert body["features"]["runs"] == {
        "type": "metered",
        "enabled": True,
        "limit": None,
        "used": 0,
        "held": 0,
        "remaining": 100_000,
        "hard": False,
        "included": 100_000,
        "overage": True,
        "percent": 0.0,
    }
    single = reader.get("/v1/customers/acme/entitlements/sso").json()
    assert single["allowed"] is False and "upgrade" not in single["reason"]
    assert reader.get("/v1/customers/nobody/entitlements/sso").status_code == 404
    unknown = reader.get("/v1/customers/acme/entitlements/teleport")
    assert unknown.status_code == 404 and "marketplace" in unknown.json()["error"]["message"]
    assert reader.get("/v1/customers/acme/entitlements/runs?quantity=-1").status_code == 400
    anonymous = TestClient(api.app).get("/v1/customers/acme/entitlements")
    assert anonymous.status_code == 401


def test_a_change_committed_by_another_process_reaches_the_cached_decision(
    make_api: Callable[..., tuple[TestClient, Container]],
) -> None:
    first, first_app = make_api()
    second, _ = make_api()  # another "process": its own engine and cache
    offline_customer(first, "acme")
    assert first.get("/v1/customers/acme/entitlements/marketplace").json()["allowed"] is False
    assert first_app.entitlements.cached("acme") is not None

    changes = first.get("/v1/changes").json()
    upgraded = second.put(
        "/v1/customers/acme/subscription", json={"plan": "pro", "interval": "month"}
    )
    assert upgraded.status_code == 200, upgraded.text

    deadline = time.monotonic() + 30  # generous: a loaded machine stalls; the point is it learns
    while not first.get("/v1/customers/acme/entitlements/marketplace").json()["allowed"]:
        assert time.monotonic() < deadline, "the cached decision never learned of the change"
        time.sleep(0.005)
    feed = first.get(f"/v1/changes?after={changes['last']}&wait=1").json()
    assert [change["customer"] for change in feed["changes"]] == ["acme"]
    assert feed["last"] > changes["last"]


def test_the_short_way_for_checks_answers_as_the_full_app_does(
    make_api: Callable[..., tuple[TestClient, Container]],
) -> None:
    # A query parameter the routes don't know sends a request past the short way, through
    # FastAPI's routing and validation: both must give the same answer.
    api, _ = make_api()
    offline_customer(api, "acme")
    post_usage(api, runs("acme", range(30)))
    for path in (
        "/v1/customers/acme/entitlements",
        "/v1/customers/acme/entitlements/runs",
        "/v1/customers/acme/entitlements/runs?quantity=971",
        "/v1/customers/acme/entitlements/runs?quantity=0",
        "/v1/customers/acme/entitlements/workflows?in_use=1&quantity=2",
        "/v1/customers/acme/entitlements/sso",
    ):
        short = api.get(path)
        full = api.get(f"{path}{'&' if '?' in path else '?'}via=app")
        assert (short.status_code, short.json()) == (full.status_code, full.json()), path
    # What the short way leaves to the app is answered as every route answers it.
    for path, status in (
        ("/v1/customers/acme/entitlements/runs?quantity=-1", 400),
        ("/v1/customers/acme/entitlements/runs?quantity=many", 400),
        ("/v1/customers/acme/entitlements/teleport", 404),
        ("/v1/customers/nobody/entitlements/runs", 404),
        ("/v1/customers/nobody/entitlements", 404),
    ):
        answer = api.get(path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["error"]["message"], path
    for header in ("Bearer not-a-key", "Basic abc", ""):
        answer = api.get("/v1/customers/acme/entitlements/runs", headers={"Authorization": header})
        assert (
            answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
        )
    metrics = api.get("/metrics").text
    check_route = "/v1/customers/{customer_id}/entitlements/{feature}"
    assert f'route="{check_route}",status="200"' in metrics


def test_with_the_background_refresher_the_cache_follows_changes_without_requests(
    make_api: Callable[..., tuple[TestClient, Container]],
) -> None:
    first, first_app = make_api(TOLLGATE_ENTITLEMENT_CACHE_TTL=0.2)
    second, _ = make_api()
    cache = first_app.entitlements
    cache.start_background()
    offline_customer(first, "acme")
    assert first.get("/v1/customers/acme/entitlements/runs").json()["used"] == 0

    # Usage through another process: the entry that was read is renewed in the background
    # before its TTL runs out, so no request has to wait for the database.
    post_usage(second, runs("acme", range(40)))
    deadline = time.monotonic() + 10  # generous: the machine may be loaded; the point is no request
    while (entry := cache.cached("acme")) is None or entry.features["runs"].used != 40:
        assert time.monotonic() < deadline, "the background never renewed the entry"
        time.sleep(0.01)
    # A change in the feed drops the entry without any request looking at the feed.
    upgraded = second.put(
        "/v1/customers/acme/subscription", json={"plan": "pro", "interval": "month"}
    )
    assert upgraded.status_code == 200, upgraded.text
    deadline = time.monotonic() + 10
    while (entry := cache.cached("acme")) is not None and entry.plan != "pro":
        assert time.monotonic() < deadline, "the background never read the change feed"
        time.sleep(0.01)
    assert first.get("/v1/customers/acme/entitlements/marketplace").json()["allowed"] is True
    cache.stop_background()


def test_usage_recorded_through_another_process_is_seen_within_the_cache_ttl(
    make_api: Callable[..., tuple[TestClient, Container]],
) -> None:
    first, _ = make_api(TOLLGATE_ENTITLEMENT_CACHE_TTL=0.2)
    second, _ = make_api()
    offline_customer(first, "acme")
    assert first.get("/v1/customers/acme/entitlements/runs").json()["used"] == 0
    post_usage(second, runs("acme", range(40)))
    time.sleep(0.25)
    assert first.get("/v1/customers/acme/entitlements/runs").json()["used"] == 40
    # Usage recorded through this process is seen at once.
    post_usage(first, runs("acme", range(40, 50)))
    assert first.get("/v1/customers/acme/entitlements/runs").json()["used"] == 50


def test_the_open_period_of_a_customer_without_stripe_is_the_calendar_month(
    make_api: Callable[..., tuple[TestClient, Container]],
) -> None:
    from datetime import UTC, datetime

    from tollgate.clock import FrozenClock

    api, app = make_api()
    clock = FrozenClock(datetime(2026, 11, 30, 23, 0, tzinfo=UTC))
    app.clock = clock
    app.entitlements.clock = clock
    offline_customer(api, "acme")
    post_usage(api, runs("acme", range(900)))
    clock.advance(timedelta(hours=2))  # December: a new period from zero
    assert used(api, "acme") == 0
    december = api.get("/v1/customers/acme/usage").json()
    assert december["period_start"].startswith("2026-12-01")
    assert post_usage(api, runs("acme", range(900, 1800)))["accepted"] == 900
    late = post_usage(api, runs("acme", [5000], timestamp="2026-11-30T23:30:00Z"))
    assert late["rejected"][0]["error"]["code"] == "invalid_timestamp"
