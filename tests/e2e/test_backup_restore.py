"""A backup restored as the README says: a dump, a restore, a reconciliation that finds nothing."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import EXAMPLE_CATALOG, POSTGRES_URL
from tests.e2e.conftest import World
from tests.replicas import process_env


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dump_restored_into_a_new_database_reconciles_with_stripe_without_drift(
    make_world: Callable[..., World], database_url: str, tmp_path: Path
) -> None:
    world = make_world()
    world.create_customer("acme")
    paid = world.pay(world.checkout("acme", plan="pro", interval="month", trial_days=0)["url"])
    assert paid.status_code == 303, paid.text
    world.settle()
    assert world.customer("acme")["status"] == "active"
    usage = [{"id": f"r{i}", "customer": "acme", "meter": "runs", "value": 10} for i in range(5)]
    world.call("POST", "/v1/usage", json={"events": usage})

    url = sa.make_url(database_url)
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    dump = f"{tmp_path}/tollgate.dump"
    server = ["-h", str(url.host), "-p", str(url.port or 5432), "-U", str(url.username)]
    # The backup: pg_dump's custom format (compressed; pg_restore can pick from it).
    subprocess.run(
        ["pg_dump", *server, "-d", str(url.database), "-n", schema, "-Fc", "-f", dump],
        check=True,
        timeout=120,
    )
    restored_name = f"tg_restore_{secrets.token_hex(5)}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{restored_name}"'))
    try:
        # This dump holds Tollgate's schema only (the tests share one database); the console's
        # search index needs pg_trgm, which lives in `public`. A whole-database dump brings it.
        restored_admin = sa.create_engine(
            url.set(database=restored_name, query={}), isolation_level="AUTOCOMMIT"
        )
        with restored_admin.connect() as connection:
            connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        restored_admin.dispose()
        subprocess.run(
            ["pg_restore", *server, "-d", restored_name, "--no-owner", "--exit-on-error", dump],
            check=True,
            timeout=120,
        )
        restored = url.set(database=restored_name).render_as_string(hide_password=False)
        env = process_env(
            {
                "TOLLGATE_ENV": "test",
                "TOLLGATE_DATABASE_URL": restored,
                "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
                "STRIPE_SECRET_KEY": "sk_test_restore",
                "STRIPE_API_BASE": world.sim.url,
            }
        )
        checked = subprocess.run(
            [sys.executable, "-m", "tollgate.cli", "db", "current"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert checked.returncode == 0, checked.stderr
        done = subprocess.run(
            [sys.executable, "-m", "tollgate.cli", "reconcile", "--since", "24h", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["status"] == "succeeded", report
        assert report["checked"] > 0
        assert report["drifts"] == [], report["drifts"]
        engine = sa.create_engine(restored)
        with engine.connect() as connection:
            runs = connection.execute(
                sa.text("SELECT coalesce(sum(value), 0) FROM usage_events")
            ).scalar_one()
        engine.dispose()
        assert runs == 50
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{restored_name}" WITH (FORCE)'))
        admin.dispose()
