"""Spend caps: the soft limit turns hard where overage would pass the cap, to the cent, for
usage, consume and reservations alike; set by the operator, or by the customer where the
catalog allows; on SQLite, PostgreSQL and PostgreSQL + Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from tests.integration.test_consume import api, app, consume, offline_customer
from tollgate.bootstrap import Container
from tollgate.catalog_file import load_catalog_file

__all__ = ["api", "app"]

EXAMPLE_CATALOG = Path(__file__).parents[2] / "catalog.example.yaml"


def use(api: TestClient, customer: str, meter: str, value: int, event_id: str) -> Any:
    event = {"id": event_id, "customer": customer, "meter": meter, "value": value}
    answer = api.post("/v1/usage", json={"events": [event]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def cap(api: TestClient, customer: str, amount: int | None, expect: int = 200, **body: Any) -> Any:
    answer = api.put(f"/v1/customers/{customer}/spend-cap", json={"amount": amount, **body})
    assert answer.status_code == expect, answer.text
    return answer.json()


def test_overage_stops_at_the_cap_to_the_cent(api: TestClient) -> None:
    offline_customer(api, "acme", plan="pro")  # CPU time: 1,000 included, then $0.01 a second
    assert cap(api, "acme", 1234)["spend_cap"] == {"amount": 1234, "currency": "usd"}
    assert use(api, "acme", "cpu_seconds", 2234, "e-1")["accepted"] == 1  # $12.34 of overage
    refused = use(api, "acme", "cpu_seconds", 1, "e-2")
    assert refused["accepted"] == 0
    assert "spend cap of $12.34" in refused["rejected"][0]["error"]["message"]
    check = api.get("/v1/customers/acme/entitlements/cpu_seconds").json()
    assert (check["allowed"], check["limit"], check["remaining"]) == (False, 2234, 0)
    assert "raise the spend cap" in check["reason"]
    usage = api.get("/v1/customers/acme/usage").json()["meters"]["cpu_seconds"]
    assert usage["estimated_overage"] == {"amount": 1234, "currency": "usd"}

    # Runs cost $0.50 a started 1,000: with $12.34 spent, nothing is left for them.
    denied = api.post(
        "/v1/customers/acme/consume", json={"feature": "runs", "quantity": 100_001, "id": "c-1"}
    ).json()
    assert (denied["allowed"], denied["code"]) == (False, "limit_exceeded")
    assert consume(api, "acme", 100_000, "c-2")["allowed"] is True  # within what is included

    # A higher cap: runs get the blocks that fit ($0.66 left: one block of 1,000, $0.50).
    cap(api, "acme", 1300)
    assert consume(api, "acme", 1000, "c-3")["allowed"] is True
    assert consume(api, "acme", 1, "c-4")["allowed"] is False
    cap(api, "acme", None)  # removed: soft again, overage billed
    assert consume(api, "acme", 5000, "c-5")["allowed"] is True


def test_a_cap_holds_reservations_too(api: TestClient) -> None:
    offline_customer(api, "acme", plan="pro")
    cap(api, "acme", 100)  # two blocks of 1,000 runs past the 100,000 included
    held = api.post(
        "/v1/customers/acme/reservations",
        json={"feature": "runs", "quantity": 102_001, "ttl_seconds": 60, "id": "r-1"},
    ).json()
    assert held["status"] == "denied"
    held = api.post(
        "/v1/customers/acme/reservations",
        json={"feature": "runs", "quantity": 102_000, "ttl_seconds": 60, "id": "r-2"},
    ).json()
    assert held["status"] == "held"
    assert consume(api, "acme", 1, "c-1")["allowed"] is False


def test_customers_set_their_own_cap_only_where_the_catalog_allows(
    api: TestClient, app: Container, tmp_path: Path
) -> None:
    offline_customer(api, "acme", plan="pro")
    refused = cap(api, "acme", 500, expect=403, by_customer=True)
    assert "customer_spend_caps" in refused["error"]["message"]
    assert cap(api, "acme", 500, expect=400, currency="eur")["error"]["param"] == "currency"
    assert cap(api, "acme", -1, expect=400)
    assert cap(api, "ghost", 5, expect=404)
    assert api.get("/v1/customers/acme/spend-cap").json()["spend_cap"] is None

    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["customer_spend_caps"] = True
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    app.catalog_override = load_catalog_file(path)  # the catalog this deployment now runs
    vars(app).pop("catalog", None)  # (read once per container)
    mine = cap(api, "acme", 500, by_customer=True)
    assert mine["set_by"] == "customer"
    assert api.get("/v1/customers/acme/spend-cap").json()["spend_cap"]["amount"] == 500
