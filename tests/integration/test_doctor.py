"""`tollgate doctor`: one line per check, failing ones named with the fix, and an exit status."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from stripesim.testing import RunningSim
from tests.conftest import EXAMPLE_CATALOG
from tests.redis_space import redis_space
from tollgate.bootstrap import build_container
from tollgate.cli import app
from tollgate.config import load_settings
from tollgate.services.catalog import sync_catalog

SECRET = "whsec_doctor_0123456789abcdef"


@pytest.fixture
def doctor(
    monkeypatch: pytest.MonkeyPatch, migrated_url: str, sim: RunningSim
) -> Callable[..., Result]:
    values = {
        "TOLLGATE_ENV": "production",
        "TOLLGATE_DATABASE_URL": migrated_url,
        "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
        "STRIPE_SECRET_KEY": "sk_test_doctor",
        "STRIPE_API_BASE": sim.url,
        "STRIPE_WEBHOOK_SECRETS": SECRET,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["doctor", *args])

    return run


def _lines(result: Result) -> dict[str, tuple[str, str]]:
    found = {}
    for line in result.output.splitlines():
        status, name, detail = re.split(r"\s+", line, maxsplit=2)
        found[name] = (status, detail)
    return found


def test_a_deployment_that_works_passes_every_check_in_one_line_each(
    doctor: Callable[..., Result], sim: RunningSim
) -> None:
    settings = load_settings()
    container = build_container(settings)
    sync_catalog(catalog=container.catalog, gateway=container.stripe)
    container.close()
    with sim.sim.lock:
        sim.sim.add_webhook_endpoint("https://billing.example.com/webhooks/stripe", secret=SECRET)
    with redis_space() as redis_settings, pytest.MonkeyPatch.context() as patch:
        for name, value in redis_settings.items():
            patch.setenv(name, value)
        result = doctor("--public-url", "https://billing.example.com")
    lines = _lines(result)
    assert list(lines) == [
        "configuration",
        "database",
        "migrations",
        "redis",
        "stripe",
        "webhooks",
        "catalog",
    ], result.output
    assert result.exit_code == 0, result.output
    assert lines["configuration"][0] == "ok"
    assert lines["database"][0] == "ok" and re.match(
        r"(PostgreSQL|SQLite) \d", lines["database"][1]
    )
    assert lines["migrations"] == ("ok", lines["migrations"][1])
    assert lines["redis"][0] == "ok" and lines["redis"][1].startswith("Redis ")
    # A test key in production is worth a warning, not a failure.
    assert lines["stripe"][0] == "warn" and "test-mode secret key" in lines["stripe"][1]
    assert lines["webhooks"][0] == "ok"
    assert (
        "https://billing.example.com/webhooks/stripe enabled, 1 secret(s)" in lines["webhooks"][1]
    )
    assert "last signed event never" in lines["webhooks"][1]
    assert lines["catalog"] == ("ok", "Stripe matches the catalog")
    assert "sk_test_doctor" not in result.output and SECRET not in result.output


def test_what_is_missing_fails_with_its_fix_and_exit_status_1(
    doctor: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLGATE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    result = doctor()
    lines = _lines(result)
    assert result.exit_code == 1
    assert lines["redis"][0] == "fail" and "ConnectionError" in lines["redis"][1]
    assert lines["webhooks"] == (
        "fail",
        "no endpoint for …/webhooks/stripe is registered at Stripe",
    )
    assert lines["catalog"][0] == "warn" and "run `tollgate catalog sync`" in lines["catalog"][1]


def test_an_unmigrated_database_and_a_bad_setting_are_named(
    doctor: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    lines = _lines(doctor())
    # Looking creates no database file: only `tollgate db upgrade` makes one.
    assert lines["database"] == (
        "fail",
        f"no file at {tmp_path / 'empty.db'}: run `tollgate db upgrade`",
    )
    assert lines["migrations"] == ("skip", "the database is unreachable")
    assert not (tmp_path / "empty.db").exists()
    monkeypatch.setenv("TOLLGATE_DEFAULT_CURRENCY", "dollars")
    result = doctor()
    assert result.exit_code == 1
    assert result.output.startswith("fail  configuration  TOLLGATE_DEFAULT_CURRENCY:")
