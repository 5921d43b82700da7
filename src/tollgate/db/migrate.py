"""Alembic, driven from code: upgrade, downgrade, and "is this database current?"."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config(url: str, *, pooler: str = "none") -> Config:
    config = Config()
    config.attributes["pooler"] = pooler
    config.set_main_option("script_location", str(resources.files("tollgate.db") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head", *, pooler: str = "none") -> None:
    """Migrate up to `revision`; several at once on PostgreSQL take turns (see env.py)."""
    command.upgrade(alembic_config(url, pooler=pooler), revision)


def downgrade(url: str, revision: str = "base", *, pooler: str = "none") -> None:
    command.downgrade(alembic_config(url, pooler=pooler), revision)


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def pending_migrations(engine: Engine, url: str) -> bool:
    """True when the database is not at the newest migration."""
    return current_revision(engine) != head_revision(url)
