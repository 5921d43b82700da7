"""Migrations upgrade and downgrade on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tollgate.db.migrate import current_revision, downgrade, head_revision, upgrade
from tollgate.db.models import Base
from tollgate.db.queries.usage_storage import is_postgres_storage
from tollgate.db.unit_of_work import Database


def _tables(database: Database) -> set[str]:
    # PostgreSQL's usage event partitions and id index have no model (migration 0020).
    names = set(sa.inspect(database.engine).get_table_names()) - {"alembic_version"}
    return {name for name in names if not is_postgres_storage(name)}


def test_upgrade_then_downgrade_then_upgrade(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database_url)
        assert current_revision(database.engine) == head_revision(database_url)
        assert _tables(database) == set(Base.metadata.tables)
        downgrade(database_url, "base")
        assert current_revision(database.engine) is None
        assert _tables(database) == set()
        upgrade(database_url)
        assert _tables(database) == set(Base.metadata.tables)
    finally:
        database.dispose()


def test_migrations_match_the_models(migrated_url: str) -> None:
    database = Database(migrated_url)
    try:
        with database.engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                # PostgreSQL's trigram search index (migration 0010) has no model: it exists
                # only where pg_trgm does.
                opts={"compare_type": True, "include_name": _not_trigram},
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        database.dispose()


def _not_trigram(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table" and name is not None and is_postgres_storage(name):
        return False  # usage event partitions and ids (migration 0020): no model
    return not (type_ == "index" and name is not None and name.endswith("_trgm"))


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    with database.engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    database.dispose()
