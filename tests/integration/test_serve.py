"""What `serve` checks and does before it listens."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
import stripe
import yaml

from tests.conftest import EXAMPLE_CATALOG
from tollgate.bootstrap import Container, build_container
from tollgate.config import ConfigError, Settings
from tollgate.db.unit_of_work import Database
from tollgate.server import prepare


def test_serve_can_sync_the_catalog_on_start(
    db: Database, make_settings: Callable[..., Settings], client: stripe.StripeClient
) -> None:
    container = build_container(make_settings(db.url, TOLLGATE_SYNC_CATALOG_ON_START="true"))
    try:
        prepare(container)
    finally:
        container.close()
    assert client.v1.products.retrieve("tg_plan_pro").name == "Pro"


def test_serve_refuses_a_missing_catalog(
    db: Database, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    container = build_container(make_settings(db.url, TOLLGATE_CATALOG=str(tmp_path / "nope.yaml")))
    try:
        with pytest.raises(ConfigError, match=r"^TOLLGATE_CATALOG: .*nope.yaml does not exist"):
            prepare(container)
    finally:
        container.close()


def test_serve_makes_the_stripe_client_before_it_listens_and_starts_without_a_key(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    with_key = build_container(make_settings(db.url))
    without_key = build_container(make_settings(db.url, STRIPE_SECRET_KEY=None))
    try:
        prepare(with_key)
        prepare(without_key)  # events that need no Stripe call are still taken
        assert "stripe" in with_key.__dict__  # made once, before the first event needs it
        assert without_key.optional_stripe() is None
    finally:
        with_key.close()
        without_key.close()


def _start_at_once(make: Callable[[], Settings], replicas: int = 4) -> list[BaseException | None]:
    """Build `replicas` containers (each its own pool, as replica processes have) and run their
    start (`prepare`) at the same moment; return each one's error, None where it started."""
    containers = [build_container(make()) for _ in range(replicas)]
    barrier = threading.Barrier(replicas)

    def start(container: Container) -> BaseException | None:
        barrier.wait()
        try:
            prepare(container)
        except BaseException as error:  # each replica's error is the test's to report
            return error
        return None

    try:
        with ThreadPoolExecutor(replicas) as pool:
            return list(pool.map(start, containers))
    finally:
        for container in containers:
            container.close()


def test_replicas_started_at_once_sync_the_catalog_once(
    db: Database,
    make_settings: Callable[..., Settings],
    client: stripe.StripeClient,
    tmp_path: Path,
) -> None:
    # Replicas started together with TOLLGATE_SYNC_CATALOG_ON_START (deploy/compose.yaml does)
    # each sync the catalog before they listen: the first store it, then a dearer Pro (a new
    # plan version) brought by a rolling restart.
    catalog = tmp_path / "plans.yaml"
    data = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog.write_text(yaml.safe_dump(data))
    settings = functools.partial(
        make_settings, db.url, TOLLGATE_CATALOG=str(catalog), TOLLGATE_SYNC_CATALOG_ON_START="true"
    )
    assert _start_at_once(settings) == [None] * 4
    data["plans"]["pro"]["prices"][0]["amount"] = "39.00"
    catalog.write_text(yaml.safe_dump(data))
    assert _start_at_once(settings) == [None] * 4
    with db.engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT count(*) FROM catalog_versions")).scalar()
        pro = connection.execute(
            sa.text("SELECT version FROM plan_versions WHERE plan = 'pro' ORDER BY version")
        ).all()
    assert versions == 2
    assert [row.version for row in pro] == [1, 2]
    keys = ["tollgate_pro_month_usd", "tollgate_pro_v2_month_usd"]
    prices = client.v1.prices.list(params={"lookup_keys": keys}).data
    assert sorted((price.lookup_key, price.unit_amount) for price in prices) == [
        ("tollgate_pro_month_usd", 2900),  # v1's subscribers keep their price
        ("tollgate_pro_v2_month_usd", 3900),
    ]
