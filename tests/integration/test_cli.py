"""The CLI: one-line errors naming what is wrong, and the commands doing their job."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stripesim.testing import RunningSim
from tollgate.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.yaml"


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: RunningSim):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("TOLLGATE_CATALOG", str(EXAMPLE))
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli")
    monkeypatch.setenv("STRIPE_API_BASE", sim.url)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args))

    return invoke


def test_validate_accepts_the_example(run) -> None:  # type: ignore[no-untyped-def]
    result = run("catalog", "validate")
    assert result.exit_code == 0, result.output
    assert "ok (4 plans, 7 features)" in result.output


def test_validate_lists_every_problem_with_its_path(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        EXAMPLE.read_text()
        .replace('currency: usd, amount: "29.00"', 'currency: usdd, amount: "29.00"')
        .replace("runs: {included: 1000}", "runz: {included: 1000}")
    )
    result = run("catalog", "validate", str(bad))
    assert result.exit_code == 2
    assert "plans.pro.prices[0].currency: 'usdd' is not an ISO 4217 currency code" in result.output
    assert "plans.free.features.runz: unknown feature 'runz'" in result.output


def test_bad_setting_is_one_line_naming_the_variable(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TOLLGATE_DEFAULT_CURRENCY", "dollars")
    result = run("catalog", "validate")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: TOLLGATE_DEFAULT_CURRENCY: 'dollars' is not an ISO 4217 currency code"
    )


def test_serve_refuses_an_unmigrated_database(run) -> None:  # type: ignore[no-untyped-def]
    result = run("serve", "--port", "1")
    assert result.exit_code == 2
    assert "the database is empty" in result.output
    assert "run `tollgate db upgrade` first" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_db_upgrade_then_apikeys_create(run) -> None:  # type: ignore[no-untyped-def]
    assert run("db", "upgrade").exit_code == 0
    created = run("apikeys", "create", "--name", "web", "--scope", "read")
    assert created.exit_code == 0
    assert "created key 'web' (read): tg_read_" in created.output
    refused = run("apikeys", "create", "--name", "web", "--scope", "admin")
    assert refused.exit_code == 2
    assert refused.output.strip() == "error: scope must be one of read, write"
    assert "newest: " in run("db", "current").output


def test_sync_twice_then_diff_shows_a_changed_price(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = run("catalog", "sync")
    assert first.exit_code == 0, first.output
    assert "29 change(s) made" in first.output
    assert "nothing to do" in run("catalog", "sync").output
    dearer = tmp_path / "dearer.yaml"
    dearer.write_text(EXAMPLE.read_text().replace('amount: "29.00"', 'amount: "39.00"'))
    diff = run("catalog", "diff", str(dearer))
    assert diff.exit_code == 0
    assert "~ price tollgate_pro_month_usd: $29.00/month -> $39.00/month" in diff.output
    assert "1 change(s)" in diff.output


def test_missing_stripe_key_is_one_line(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    result = run("catalog", "diff")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: STRIPE_SECRET_KEY: required")


def test_dev_refuses_a_live_key(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_realmoney123")
    result = run("dev", "--port", "1", "--stripe-port", "2")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: STRIPE_SECRET_KEY: a live key cannot be used with `tollgate dev`"
    )


def test_db_prune_usage_says_what_it_pruned_and_refuses_an_empty_database(run) -> None:  # type: ignore[no-untyped-def]
    refused = run("db", "prune-usage")
    assert refused.exit_code == 2 and "run `tollgate db upgrade` first" in refused.output
    assert run("db", "upgrade").exit_code == 0
    pruned = run("db", "prune-usage")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith("pruned 0 raw usage events from before ")
    assert "(0 monthly partitions dropped, 0 made ahead)" in pruned.output
