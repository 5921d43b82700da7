"""Statements whose SQL differs between SQLite and PostgreSQL, built once per dialect."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Insert,
    Select,
    Table,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

DIALECTS = ("sqlite", "postgresql")


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


def upsert(
    connection: Connection,
    table: Table,
    *,
    index_elements: tuple[str, ...],
    update: tuple[str, ...],
) -> Insert:
    """`INSERT … ON CONFLICT (index_elements) DO UPDATE SET` the `update` columns to the new
    row's values: set-or-replace in one statement, which two requests made at once cannot both
    find missing (an update-else-insert or a delete-then-insert can, and then one fails on
    the unique key). Built once per dialect and table."""
    return _upsert(connection.dialect.name, table, index_elements, update)


@cache
def _upsert(
    dialect: str, table: Table, index_elements: tuple[str, ...], update: tuple[str, ...]
) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(index_elements),
        set_={name: statement.excluded[name] for name in update},
    )


def joined_to_json_array(
    dialect: str, table: FromClause, column: ColumnElement[Any], name: str
) -> tuple[FromClause, tuple[ColumnElement[bool], ...]]:
    """`table`'s rows whose `column` is among the strings of one parameter `name` (a JSON
    array, `json_array`): what to select from, and the terms to add to the WHERE clause.

    For the statements every usage batch and webhook group runs over its ids (hundreds of
    them): an expanding `IN` makes SQLAlchemy render and bind a parameter per id on each call,
    some 6,000 instructions an id, where the database reads the array in C.

    SQLite: the array's elements joined to `table` (an index lookup each), no WHERE term.
    `IN (SELECT value FROM json_each(...))` builds a throwaway b-tree of the list at each run
    (its pages allocated and zeroed): about 7 µs a statement here, more than the lookup. The
    join returns a row per element, so the array holds each string once (`json_array`).
    PostgreSQL: `table`, and `column = ANY(ARRAY(...))`, planned as an index scan like a
    literal list.
    """
    if dialect == "postgresql":
        array = text(f"(ARRAY(SELECT jsonb_array_elements_text(CAST(:{name} AS jsonb))))")
        return table, (column.op("= ANY", is_comparison=True)(array),)
    each = func.json_each(bindparam(name)).table_valued("value").alias(f"{name}_each")
    return each.join(table, column == each.c.value), ()


def select_among(
    dialect: str,
    statement: Select[Any],
    table: FromClause,
    column: ColumnElement[Any],
    name: str,
) -> Select[Any]:
    """`statement` over `table`'s rows whose `column` is among the strings of parameter `name`
    (`joined_to_json_array`), for one dialect."""
    source, terms = joined_to_json_array(dialect, table, column, name)
    return statement.select_from(source).where(*terms)


def among_json_array(
    statement: Select[Any], table: FromClause, column: ColumnElement[Any], name: str
) -> dict[str, Select[Any]]:
    """`select_among` for every dialect."""
    return {dialect: select_among(dialect, statement, table, column, name) for dialect in DIALECTS}


def json_array(values: Iterable[str]) -> str:
    """The parameter of `joined_to_json_array`: each string once."""
    return orjson.dumps(list(dict.fromkeys(values))).decode()
