"""Alembic environment: one metadata, type comparison on, batch mode for SQLite."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool, text

from tollgate.db.models import Base
from tollgate.db.unit_of_work import pooler_connect_args

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Any fixed 64-bit number, the same in every process: the advisory lock upgraders queue on.
MIGRATION_LOCK_KEY = 0x746F6C6C67617465  # "tollgate"


def wait_for_other_upgraders(connection: Connection) -> None:
    """On PostgreSQL, take the migration lock for this transaction (it ends with it).

    Several replicas starting at once each run `tollgate db upgrade`: the first migrates, the
    others wait here, then read the version it committed and find nothing left to do. A
    transaction-scoped lock, so it works behind a pooler in transaction mode too.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection") or engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        connect_args=pooler_connect_args(config.attributes.get("pooler", "none")),
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            wait_for_other_upgraders(connection)
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
