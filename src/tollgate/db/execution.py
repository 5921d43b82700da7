"""Run statements the fast way: on the driver's cursor, and on PostgreSQL several at once.

The webhook handlers and the credits ledger are hot write paths. Through SQLAlchemy's execution
layer each statement costs about 13 µs of CPU before the driver sees it (cache lookup, execution
context, parameter and result processing), more than SQLite takes to run it, and on PostgreSQL
each one waits for its own round trip. `run` sends queued writes and then reads together:

- On PostgreSQL in one round trip (psycopg's pipeline mode). The server still runs each
  statement after the one before it has finished, each with a snapshot of its own, so a read
  sent after a row lock sees what the lock's previous holder committed.
- Reads, and writes marked `on_driver`, run on the driver's cursor: compiled once per dialect,
  with the same type processing SQLAlchemy applies (the columns' own bind and result
  processors). Other writes go through SQLAlchemy, which fills in column defaults.
- Errors are raised as SQLAlchemy raises them (`driver_error`), so callers catch and retry them
  as any other, and tests see no difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ClauseElement, Connection, DateTime, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError

from tollgate.db.types import UTCDateTime


@dataclass(frozen=True, eq=False)
class OnDriver:
    """A write that runs on the driver's cursor: one with no column defaults to fill in."""

    statement: ClauseElement


Statement = Executable | OnDriver
# A write: a statement and one parameter set, or a list of sets with the same keys.
Write = tuple[Statement, Any]
# A read: a statement whose rows are wanted, and its parameters.
Read = tuple[ClauseElement, Mapping[str, Any]]
Rows = list[dict[str, Any]]


def on_driver(statement: ClauseElement) -> OnDriver:
    """Mark a write with no column defaults to fill in, to run on the driver's cursor."""
    return OnDriver(statement)


def run(connection: Connection, writes: Sequence[Write], reads: Sequence[Read] = ()) -> list[Rows]:
    """Run the writes in order, then the reads; return each read's rows, as dicts.

    On PostgreSQL, with more than one statement, they go to the database in one round trip.
    """
    dialect = connection.dialect
    driver: Any = connection.connection.driver_connection
    pipelined = dialect.name == "postgresql" and len(writes) + len(reads) > 1
    cursors: list[Any] = []
    reading: list[tuple[Any, _Compiled]] = []
    sent: tuple[str, Any] | None = None  # the driver statement that ran last, for errors
    try:
        with driver.pipeline() if pipelined else nullcontext():
            for statement, parameters in writes:
                sets = [parameters] if isinstance(parameters, Mapping) else parameters
                if isinstance(statement, OnDriver) and _same_keys(sets):
                    compiled = _compiled(statement.statement, dialect, frozenset(sets[0]))
                    arguments: Any = [compiled.arguments(row) for row in sets]
                    sent = (compiled.sql, arguments)
                    cursors.append(cursor := driver.cursor())
                    cursor.executemany(compiled.sql, arguments)
                else:
                    plain = statement.statement if isinstance(statement, OnDriver) else statement
                    connection.execute(cast(Executable, plain), parameters)
            for read, parameters in reads:
                compiled = _compiled(read, dialect, frozenset(parameters))
                arguments = compiled.arguments(parameters)
                sent = (compiled.sql, arguments)
                cursors.append(cursor := driver.cursor())
                reading.append((cursor, compiled))
                cursor.execute(compiled.sql, arguments)
        # Each cursor keeps its own rows (in a pipeline, read when it ended).
        return [_fetched(cursor, compiled) for cursor, compiled in reading]
    except DBAPIError:  # from a write run through SQLAlchemy: raised as it is
        raise
    except dialect.loaded_dbapi.Error as error:
        # In a pipeline the failing statement is not known.
        statement_sql, arguments = sent if sent and not pipelined else (None, None)
        raise driver_error(connection, error, statement_sql, arguments) from error
    finally:
        for cursor in cursors:
            cursor.close()


def driver_error(
    connection: Connection, error: Any, statement: str | None = None, parameters: Any = None
) -> StatementError:
    """Return a driver's error as SQLAlchemy raises it, and drop the connection if it died.

    For errors raised by the driver outside SQLAlchemy (driver cursors, psycopg's pipeline), so
    callers catch and retry them as any other.
    """
    dialect = connection.dialect
    gone = dialect.is_disconnect(error, connection.connection.dbapi_connection, None)
    if gone:
        connection.invalidate(error)
    return DBAPIError.instance(
        statement,
        parameters,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=gone,
        dialect=dialect,
    )


# -- statements compiled once per dialect ------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the driver takes them
    binds: tuple[Callable[[Any], Any] | None, ...]
    # Per parameter: _GIVEN, or the value of a literal the statement carries (e.g. the 1 of
    # `state_version + 1`), already processed.
    fixed: tuple[Any, ...]
    positional: bool
    keys: tuple[str, ...]  # the result's columns
    results: tuple[Callable[[Any], Any] | None, ...]

    def arguments(self, parameters: Mapping[str, Any]) -> Any:
        values = [
            fixed
            if fixed is not _GIVEN
            else parameters[name]
            if process is None
            else process(parameters[name])
            for name, process, fixed in zip(self.names, self.binds, self.fixed, strict=True)
        ]
        return values if self.positional else dict(zip(self.names, values, strict=True))


# Keyed by the statement object itself: statements are built once, at import, by db.queries.
_COMPILED: dict[tuple[Any, ...], _Compiled] = {}
_GIVEN = object()


def _compiled(statement: ClauseElement, dialect: Dialect, keys: frozenset[str]) -> _Compiled:
    cache_key = (statement, dialect.name, keys)
    found = _COMPILED.get(cache_key)
    if found is not None:
        return found
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    binds = tuple(_bind_processor(compiled.binds[name].type, dialect) for name in names)
    fixed = tuple(
        _GIVEN
        if name in keys
        else compiled.binds[name].value
        if process is None
        else process(compiled.binds[name].value)
        for name, process in zip(names, binds, strict=True)
    )
    columns = list(getattr(statement, "exported_columns", ()))
    made = _Compiled(
        sql=compiled.string,
        names=names,
        binds=binds,
        fixed=fixed,
        positional=bool(compiled.positional),
        keys=tuple(column.key for column in columns),
        results=tuple(_result_processor(column.type, dialect) for column in columns),
    )
    _COMPILED[cache_key] = made
    return made


def _bind_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    if process is None or not isinstance(column_type, UTCDateTime):
        return process
    # A group of events writes the same instant many times (its `now` in every audit, feed and
    # inbox row; a subscription's periods): on SQLite each is formatted as text, so each value
    # is converted once. (Only UTC columns: equal instants in other zones convert alike there.)
    return _remembered(process)


def _result_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    process = column_type.dialect_impl(dialect).result_processor(dialect, None)
    if process is None or not isinstance(column_type, UTCDateTime | DateTime):
        return process
    # The same few instants (a subscription's periods, trial) are read again and again; an
    # aware datetime is immutable, so one parse of each stored value serves every later read.
    return _remembered(process)


def _remembered(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Return `process` remembering its answers: for immutable values seen again and again."""
    done: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        found = done.get(value)
        if found is None:
            if len(done) >= 4096:
                done.clear()
            found = done[value] = process(value)
        return found

    return remembered


def _fetched(cursor: Any, compiled: _Compiled) -> Rows:
    keys, processors = compiled.keys, compiled.results
    return [
        {
            key: value if process is None else process(value)
            for key, process, value in zip(keys, processors, row, strict=True)
        }
        for row in (cursor.fetchall() if keys else ())
    ]


def _same_keys(sets: Any) -> bool:
    """Whether parameter sets share their keys (one compiled statement serves them all)."""
    if not isinstance(sets, list) or not sets or not isinstance(sets[0], Mapping):
        return False
    keys = sets[0].keys()
    return all(row.keys() == keys for row in sets)
