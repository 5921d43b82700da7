"""Issue 20 in the console: support overrides a feature for one customer (with an end date),
grants usage for this period and removes the override, as `operator:<name>`; entitlements follow
at once; bad input changes nothing. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.console.conftest import Desk
from tests.console.test_console_pages import _csrf, _post, _sign_in
from tollgate.db.tables import AUDIT_LOG


def _runs(desk: Desk, customer_id: str) -> dict[str, Any]:
    return dict(desk.get(f"/v1/customers/{customer_id}/entitlements")["features"]["runs"])


def test_support_overrides_a_feature_grants_usage_and_removes_the_override(desk: Desk) -> None:
    made = desk.call(
        "POST",
        "/v1/customers",
        json={"id": "big-co", "email": "b@big.example", "offline": True, "plan": "pro"},
    )
    assert made.status_code == 201, made.text
    assert _runs(desk, "big-co")["included"] == 100_000
    _sign_in(desk, "sam", "support")
    here = "/console/customers/big-co"
    page = desk.api.get(here).text
    assert "No override: the plan decides." in page

    bad = _post(desk, f"{here}/actions/set-override", page, feature="runs", limit="lots")
    assert bad.status_code == 400 and "limit must be a whole number" in bad.text
    late = _post(
        desk, f"{here}/actions/set-override", page, feature="runs", limit="1", ends_at="soon"
    )
    assert late.status_code == 400 and "ends must be a date" in late.text
    assert desk.get("/v1/customers/big-co/overrides")["overrides"] == []  # nothing changed

    saved = _post(
        desk,
        f"{here}/actions/set-override",
        page,
        feature="runs",
        access="",
        limit="5,000,000",
        ends_at="2099-01-01",
    )
    assert saved.status_code == 303, saved.text
    shown = desk.api.get(saved.headers["location"]).text
    assert "The override was saved" in shown and "5,000,000" in shown
    assert _runs(desk, "big-co")["included"] == 5_000_000
    (override,) = desk.get("/v1/customers/big-co/overrides")["overrides"]
    assert (override["limit"], override["ends_at"]) == (5_000_000, "2099-01-01T00:00:00Z")

    _post(desk, f"{here}/actions/remove-override", shown, feature="runs")
    assert _runs(desk, "big-co")["included"] == 100_000
    granted = _post(
        desk,
        f"{here}/actions/grant-usage",
        desk.api.get(here).text,
        feature="runs",
        quantity="10000",
        reason="sorry for the outage",
        key="g1",
    )
    assert granted.status_code == 303, granted.text
    assert _runs(desk, "big-co")["included"] == 110_000
    with desk.db.engine.connect() as connection:
        actions = connection.execute(
            sa.select(AUDIT_LOG.c.action, AUDIT_LOG.c.object_type)
            .where(AUDIT_LOG.c.actor == "operator:sam")
            .order_by(AUDIT_LOG.c.id)
        ).all()
    assert [tuple(row) for row in actions] == [
        ("created", "customer_override"),
        ("set_override", "customer"),
        ("deleted", "customer_override"),
        ("remove_override", "customer"),
        ("created", "usage_grant"),
        ("grant_usage", "customer"),
    ]
    assert _csrf(desk.api.get(here).text)  # the page still renders with its forms
