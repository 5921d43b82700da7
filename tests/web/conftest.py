"""Tollgate with its pages, the catalog synced into the simulator, and a write key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key
from tollgate.services.catalog import sync_catalog


@pytest.fixture
def pages(
    db: Database, sim: Any, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., tuple[Container, TestClient, dict[str, str]]]]:
    """Make Tollgate (settings overridable): its container, a client, the write key header."""
    opened: list[tuple[Container, TestClient]] = []

    def make(**overrides: Any) -> tuple[Container, TestClient, dict[str, str]]:
        container = build_container(make_settings(db.url, **overrides))
        if not opened:
            sync_catalog(catalog=container.catalog, gateway=container.stripe)
        key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
        client = TestClient(create_app(container))
        client.__enter__()
        opened.append((container, client))
        return container, client, {"Authorization": f"Bearer {key.secret}"}

    yield make
    for container, client in opened:
        client.__exit__(None, None, None)
        container.close()
