"""Limits over fixed time windows (a plan's `rate: {limit, per: minute|hour|day}`), besides the
billing period's, in the one recorder: database and Redis counters alike."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.integration.test_consume import api, app, offline_customer
from tollgate.bootstrap import Container
from tollgate.catalog_file import load_catalog_file
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.domain.errors import CatalogError

__all__ = ["api", "app"]

EXAMPLE_CATALOG = Path(__file__).parents[2] / "catalog.example.yaml"


def with_rate(app: Container, tmp_path: Path) -> None:
    """Run the example catalog with Pro's runs limited to 5 a minute."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["pro"]["features"]["runs"]["rate"] = {"limit": 5, "per": "minute"}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    app.catalog_override = load_catalog_file(path)
    vars(app).pop("catalog", None)


def runs_at(api: TestClient, moment: datetime, ids: range, value: int = 1) -> Any:
    events = [
        {
            "id": f"e-{i}",
            "customer": "acme",
            "meter": "runs",
            "value": value,
            "timestamp": moment.isoformat(),
        }
        for i in ids
    ]
    answer = api.post("/v1/usage", json={"events": events})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_fixed_window_limits_usage_and_the_next_window_starts_afresh(
    api: TestClient, app: Container, tmp_path: Path
) -> None:
    with_rate(app, tmp_path)
    offline_customer(api, "acme", plan="pro")
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=2)  # within 5 min ahead
    first = runs_at(api, minute + timedelta(seconds=1), range(0, 6))
    assert first["accepted"] == 5
    assert first["rejected"][0]["error"]["message"] == (
        "Workflow runs: at most 5 runs a minute; try again in the next minute."
    )
    assert runs_at(api, minute + timedelta(seconds=59), range(6, 7))["accepted"] == 0
    later = runs_at(api, minute + timedelta(seconds=61), range(7, 13))
    assert later["accepted"] == 5  # a new window
    # A late event of an earlier window is counted in the period, not checked against it.
    assert runs_at(api, minute + timedelta(seconds=30), range(13, 14))["accepted"] == 1
    used = api.get("/v1/customers/acme/usage").json()["meters"]["runs"]["used"]
    assert used == 11
    # Consume counts in the window of now: five fit, the sixth waits for the next minute.
    offline_customer(api, "beta", plan="pro")
    if datetime.now(UTC).second > 50:  # not across a minute's end
        time.sleep(61 - datetime.now(UTC).second)
    answers = [
        api.post(
            "/v1/customers/beta/consume", json={"feature": "runs", "quantity": 1, "id": f"c-{n}"}
        ).json()
        for n in range(6)
    ]
    assert [answer["allowed"] for answer in answers] == [True] * 5 + [False]
    assert answers[-1]["code"] == "limit_exceeded" and "a minute" in answers[-1]["reason"]


def test_the_catalog_checks_a_rate() -> None:
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["pro"]["features"]["runs"]["rate"] = {"limit": 0, "per": "week"}
    with pytest.raises(CatalogError) as refused:
        parse_catalog(catalog)
    text = str(refused.value)
    assert "plans.pro.features.runs.rate.per" in text and "minute, hour, day" in text
