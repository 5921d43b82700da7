"""Replicas starting at once each run `tollgate db upgrade`: they take turns, and all succeed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLE_CATALOG
from tests.pgbouncer import fresh_database
from tollgate.db.migrate import current_revision, head_revision
from tollgate.db.unit_of_work import Database

pytestmark = pytest.mark.postgres


def test_several_upgrades_started_at_once_migrate_once_and_all_succeed() -> None:
    with fresh_database() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
        env.update(
            TOLLGATE_ENV="test", TOLLGATE_DATABASE_URL=url, TOLLGATE_CATALOG=str(EXAMPLE_CATALOG)
        )
        upgraders = [
            subprocess.Popen(
                [sys.executable, "-m", "tollgate.cli", "db", "upgrade"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            results = [(p.wait(timeout=120), *p.communicate()) for p in upgraders]
        finally:
            for process in upgraders:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for status, out, err in results:
            assert status == 0, err
            assert "database at head" in out
        database = Database(url)
        try:
            assert current_revision(database.engine) == head_revision(url)
        finally:
            database.dispose()
