"""`tollgate customers list` and `tollgate outbox list`: tables with headers, filters, --json,
on SQLite and PostgreSQL, over the same services as the console's lists."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from stripesim.testing import RunningSim
from tollgate.bootstrap import Container
from tollgate.cli import app as cli_app
from tollgate.services.outbox import queue_email

Cli = Callable[..., object]


@pytest.fixture
def cli(container: Container, sim: RunningSim, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", container.db.url)
    monkeypatch.setenv("TOLLGATE_CATALOG", str(container.settings.catalog_path))
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli_lists")
    monkeypatch.setenv("STRIPE_API_BASE", sim.url)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli_app, list(args))


def test_customers_list_is_a_table_with_filters_and_json(
    api: TestClient, write_key: str, cli: Cli
) -> None:
    headers = {"Authorization": f"Bearer {write_key}"}
    for org, email in (("acme", "billing@acme.example"), ("globex", "ap@globex.example")):
        made = api.post("/v1/customers", headers=headers, json={"id": org, "email": email})
        assert made.status_code in (200, 201), made.text
    listed = cli("customers", "list")
    assert listed.exit_code == 0, listed.output  # type: ignore[attr-defined]
    header, _, *rows = listed.output.splitlines()  # type: ignore[attr-defined]
    assert header.split()[:5] == ["id", "email", "plan", "status", "currency"]
    assert [row.split()[0] for row in rows] == ["globex", "acme"]  # newest first
    found = cli("customers", "list", "--search", "acme.example")
    assert [row.split()[0] for row in found.output.splitlines()[2:]] == ["acme"]  # type: ignore[attr-defined]
    as_json = [json.loads(line) for line in cli("customers", "list", "--json").output.splitlines()]  # type: ignore[attr-defined]
    assert [(row["id"], row["email"], row["plan"]) for row in as_json] == [
        ("globex", "ap@globex.example", "free"),
        ("acme", "billing@acme.example", "free"),
    ]
    bad = cli("customers", "list", "--plan", "platinum")
    assert bad.exit_code == 2  # type: ignore[attr-defined]
    assert bad.output.strip() == "error: no plan 'platinum' in the catalog"  # type: ignore[attr-defined]


def test_outbox_list_shows_queued_emails_with_status_and_json(
    api: TestClient, write_key: str, container: Container, cli: Cli
) -> None:
    headers = {"Authorization": f"Bearer {write_key}"}
    api.post("/v1/customers", headers=headers, json={"id": "acme", "email": "b@acme.example"})
    assert "the outbox is empty" in cli("outbox", "list", "--kind", "email").output  # type: ignore[attr-defined]
    with container.db.write_connection() as connection:
        queue_email(
            connection,
            customer_id="acme",
            template="trial_ending",
            cause="test",
            facts={"plan": "pro"},
            now=container.clock.now(),
        )
    listed = cli("outbox", "list", "--kind", "email")
    assert listed.exit_code == 0, listed.output  # type: ignore[attr-defined]
    header, _, *rows = listed.output.splitlines()  # type: ignore[attr-defined]
    assert header.split()[:4] == ["created", "(UTC)", "kind", "name"]
    assert len(rows) == 1 and rows[0].split()[2:6] == ["email", "trial_ending", "acme", "pending"]
    item = json.loads(cli("outbox", "list", "--json", "--customer", "acme").output.splitlines()[0])  # type: ignore[attr-defined]
    assert (item["kind"], item["name"], item["status"], item["attempts"]) == (
        "email",
        "trial_ending",
        "pending",
        0,
    )
    assert cli("outbox", "list", "--status", "lost").exit_code == 2  # type: ignore[attr-defined]
