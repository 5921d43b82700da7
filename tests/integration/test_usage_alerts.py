"""Usage alerts: units, percent of included, or money; each fires once a period as the app
webhook `usage.alert` and an email, at once when set below usage, and once under concurrent
crossings; on SQLite, PostgreSQL and PostgreSQL + Redis."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.integration.test_consume import api, app, consume, offline_customer
from tollgate.bootstrap import Container
from tollgate.client.local import LocalTollgate
from tollgate.db.models import AppEvent, Notification

__all__ = ["api", "app"]


def alert(api: TestClient, customer: str, expect: int = 201, **body: Any) -> Any:
    answer = api.post(f"/v1/customers/{customer}/alerts", json=body)
    assert answer.status_code == expect, answer.text
    return answer.json()


def fired(app: Container) -> list[dict[str, Any]]:
    with app.db.transaction() as session:
        events = session.scalars(sa.select(AppEvent).where(AppEvent.type == "usage.alert")).all()
        mails = session.scalars(
            sa.select(Notification).where(Notification.template == "usage_alert")
        ).all()
        assert len(mails) == len(events)
        return sorted((dict(event.data) for event in events), key=lambda data: data["alert"])


def test_each_kind_of_alert_fires_once_a_period(api: TestClient, app: Container) -> None:
    offline_customer(api, "acme", plan="pro")  # runs: 100,000 included, $0.50 a started 1,000
    alert(api, "acme", feature="runs", kind="units", threshold=500, id="a-units")
    alert(api, "acme", feature="runs", kind="percent", threshold=50, id="a-percent")
    alert(api, "acme", feature="runs", kind="money", threshold=100, id="a-money")
    assert [a["id"] for a in api.get("/v1/customers/acme/alerts").json()["alerts"]] == [
        "a-units",
        "a-percent",
        "a-money",
    ]
    consume(api, "acme", 499, "c-1")
    assert fired(app) == []
    consume(api, "acme", 1, "c-2")
    assert [data["alert"] for data in fired(app)] == ["a-units"]
    consume(api, "acme", 49_500, "c-3")  # 50,000: half of what is included
    consume(api, "acme", 51_000, "c-4")  # 101,000: one block of overage, $0.50
    assert [data["alert"] for data in fired(app)] == ["a-percent", "a-units"]
    consume(api, "acme", 1, "c-5")  # 101,001: a second block started, $1.00
    money = next(data for data in fired(app) if data["alert"] == "a-money")
    assert (money["used"], money["threshold_text"]) == (101_001, "$1.00 of overage")
    consume(api, "acme", 5_000, "c-6")
    assert len(fired(app)) == 3  # once a period each


def test_an_alert_set_below_usage_fires_at_once(api: TestClient, app: Container) -> None:
    offline_customer(api, "acme", plan="pro")
    consume(api, "acme", 800, "c-1")
    made = alert(api, "acme", feature="runs", kind="units", threshold=700)
    assert made["fired"] is True and fired(app)[0]["used"] == 800
    assert alert(api, "acme", feature="runs", kind="units", threshold=900)["fired"] is False


def test_bad_alerts_are_refused(api: TestClient) -> None:
    offline_customer(api, "tiny")  # Free: no priced overage
    for body, words in [
        ({"feature": "nope", "kind": "units", "threshold": 1}, "feature"),
        ({"feature": "runs", "kind": "euros", "threshold": 1}, "kind"),
        ({"feature": "runs", "kind": "units", "threshold": 0}, "threshold"),
        ({"feature": "runs", "kind": "money", "threshold": 100}, "could never fire"),
    ]:
        assert words in alert(api, "tiny", expect=400, **body)["error"]["message"]
    assert alert(api, "ghost", expect=404, feature="runs", kind="units", threshold=1)
    made = alert(api, "tiny", feature="runs", kind="units", threshold=5, id="a-1")
    assert alert(api, "tiny", feature="runs", kind="units", threshold=5, id="a-1")["id"] == "a-1"
    assert alert(api, "tiny", expect=409, feature="runs", kind="units", threshold=6, id="a-1")
    assert api.delete(f"/v1/customers/tiny/alerts/{made['id']}").status_code == 204
    assert api.get("/v1/customers/tiny/alerts").json() == {"alerts": []}


def test_concurrent_crossings_fire_an_alert_once(api: TestClient, app: Container) -> None:
    offline_customer(api, "busy", plan="pro")
    alert(api, "busy", feature="runs", kind="units", threshold=100, id="a-1")
    tollgate = LocalTollgate(app)
    ids = itertools.count()

    def worker(n: int) -> None:
        for _ in range(10):
            tollgate.consume("busy", "runs", 1, id=f"w{n}-{next(ids)}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, range(16)))
    events = fired(app)
    assert len(events) == 1 and events[0]["used"] >= 100
