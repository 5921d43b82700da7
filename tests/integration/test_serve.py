"""What `serve` checks and does before it listens."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import stripe

from tollgate.bootstrap import build_container
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
    db: Database, make_settings: Callable[..., Settings], tmp_path
) -> None:  # type: ignore[no-untyped-def]
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
