"""Shared fixtures: real SQLite and PostgreSQL, a served stripesim, Tollgate wired to both."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from stripesim.testing import RunningSim, run_simulator
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings, load_settings
from tollgate.db.migrate import upgrade
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

POSTGRES_URL = os.environ.get(
    "TOLLGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CATALOG = REPO / "catalog.example.yaml"


# -- databases ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: a SQLite file, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tollgate.db'}"
        return
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def migrated_url(database_url: str) -> str:
    upgrade(database_url)
    return database_url


@pytest.fixture
def db(migrated_url: str) -> Iterator[Database]:
    database = Database(migrated_url)
    yield database
    database.dispose()


# -- the simulated Stripe -----------------------------------------------------------------


@pytest.fixture(scope="session")
def served_sim() -> Iterator[RunningSim]:
    with run_simulator() as running:
        yield running


@pytest.fixture
def sim(served_sim: RunningSim) -> RunningSim:
    """The running simulator, reset to an empty Stripe account for each test."""
    served_sim.webhooks.flush(timeout=5)
    served_sim.sim.reset()
    return served_sim


@pytest.fixture
def client(sim: RunningSim) -> stripe.StripeClient:
    """The official SDK, talking HTTP to the simulator."""
    return stripe.StripeClient(
        "sk_test_stripesim", base_addresses={"api": sim.url}, max_network_retries=0
    )


# -- Tollgate -----------------------------------------------------------------------------


@pytest.fixture
def make_settings(sim: RunningSim) -> Callable[..., Settings]:
    def make(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "TOLLGATE_ENV": "test",
            "TOLLGATE_DATABASE_URL": database_url,
            "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
            "STRIPE_SECRET_KEY": "sk_test_tollgate_tests",
            "STRIPE_API_BASE": sim.url,
            "STRIPE_MAX_RETRIES": 2,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def container(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = build_container(make_settings(db.url))
    yield built
    built.close()


@pytest.fixture
def api(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


@pytest.fixture
def write_key(container: Container) -> str:
    return create_api_key(
        db=container.db, clock=container.clock, name="tests", scope="write"
    ).secret


@pytest.fixture
def read_key(container: Container) -> str:
    return create_api_key(
        db=container.db, clock=container.clock, name="tests-read", scope="read"
    ).secret
