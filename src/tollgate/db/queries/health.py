"""What `tollgate doctor` and readiness ask the database: is it there, and what has it seen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select, text

from tollgate.db.tables import STRIPE_EVENTS


def server_version(connection: Connection) -> str:
    """The database server's version ("PostgreSQL 15.20", "SQLite 3.40.1")."""
    if connection.dialect.name == "sqlite":
        return f"SQLite {connection.execute(text('SELECT sqlite_version()')).scalar_one()}"
    version = str(connection.execute(text("SHOW server_version")).scalar_one())
    return f"PostgreSQL {version.split()[0]}"


def last_stripe_event_received(connection: Connection) -> datetime | None:
    """When the newest Stripe event reached the inbox (only signed deliveries are stored)."""
    return connection.execute(select(func.max(STRIPE_EVENTS.c.received_at))).scalar_one()
