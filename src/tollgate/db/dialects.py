"""Statements whose SQL differs between SQLite and PostgreSQL, built once per dialect."""

from __future__ import annotations

from functools import cache

from sqlalchemy import Connection, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_if_new(
    connection: Connection,
    table: Table,
    *,
    index_elements: tuple[str, ...] | None = None,
    returning: tuple[str, ...] = (),
) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING` into `table` (with RETURNING `returning`).

    RETURNING, not the row count, tells whether a row was new: psycopg reports no row count
    for such an insert. Built once: the values come as parameters, so it compiles once too.
    """
    return _insert_if_new(connection.dialect.name, table, index_elements, returning)


@cache
def _insert_if_new(
    dialect: str,
    table: Table,
    index_elements: tuple[str, ...] | None,
    returning: tuple[str, ...],
) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).on_conflict_do_nothing(
        index_elements=list(index_elements) if index_elements else None
    )
    if returning:
        return statement.returning(*(table.c[name] for name in returning))
    return statement
