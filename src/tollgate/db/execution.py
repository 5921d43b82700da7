"""Run statements the fast way: on the driver's cursor, and on PostgreSQL several at once.

The webhook handlers and the credits ledger are hot write paths. Through SQLAlchemy's execution
layer each statement costs about 13 µs of CPU before the driver sees it (cache lookup, execution
context, parameter and result processing), more than SQLite takes to run it, and on PostgreSQL
each one waits for its own round trip. `run` sends queued writes and then reads together:

- On PostgreSQL in one round trip (psycopg's pipeline mode). The server still runs each
  statement after the one before it has finished, each with a snapshot of its own, so a read
  sent after a row lock sees what the lock's previous holder committed.
- Reads, and writes marked `on_driver`, run on the driver's cursor: compiled once per dialect
  and set of parameters, with the same type processing SQLAlchemy applies (the columns' own
  bind and result processors) and the same scalar column defaults (`default=False`). A write
  that leaves out a column whose default SQLAlchemy computes (`default=dict`), and every other
  write, goes through SQLAlchemy.
- Errors are raised as SQLAlchemy raises them (`driver_error`), so callers catch and retry them
  as any other, and tests see no difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

import orjson
from sqlalchemy import JSON, ClauseElement, Connection, DateTime, Executable, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError

from tollgate.db.types import UTCDateTime


@dataclass(frozen=True, eq=False)
class OnDriver:
    """A write that runs on the driver's cursor: one with no column defaults to fill in."""

    statement: ClauseElement


@dataclass(frozen=True, eq=False)
class DriverSQL:
    """A write given as the driver's own SQL, its parameters as the driver takes them: for a
    dialect's statement that SQLAlchemy does not build (PostgreSQL's `unnest` of arrays)."""

    sql: str


Statement = Executable | OnDriver | DriverSQL
# A write: a statement and one parameter set, or a list of sets with the same keys.
Write = tuple[Statement, Any]
# A read: a statement whose rows are wanted, and its parameters.
Read = tuple[ClauseElement, Mapping[str, Any]]
Rows = list[dict[str, Any]]


def on_driver(statement: ClauseElement) -> OnDriver:
    """Mark a write with no column defaults to fill in, to run on the driver's cursor."""
    return OnDriver(statement)


def run(
    connection: Connection,
    writes: Sequence[Write],
    reads: Sequence[Read] = (),
    *,
    commit: bool = False,
) -> list[Rows]:
    """Run the writes in order, then the reads; return each read's rows, as dicts.

    On PostgreSQL, with more than one statement, they go to the database in one round trip.
    With `commit` (and no reads), on PostgreSQL the transaction commits in that round trip too:
    a COMMIT sent after the writes, which the server skips when one of them failed (the error
    is raised, and the caller rolls back). Nothing may run on the connection after it but the
    caller's own commit, which then has nothing left to do (psycopg sends no COMMIT for a
    connection that is idle). On SQLite the caller commits, as without it.
    """
    dialect = connection.dialect
    driver: Any = connection.connection.driver_connection
    committing = commit and dialect.name == "postgresql"
    assert not (committing and reads), "a read's rows come before the commit"
    pipelined = dialect.name == "postgresql" and len(writes) + len(reads) + committing > 1
    # Outside a pipeline one cursor serves every statement, each read's rows fetched at once;
    # in a pipeline each read keeps a cursor of its own, read when the pipeline ended.
    kept = _kept_cursors(connection, driver) if dialect.name == "postgresql" else None
    taken: list[Any] = []  # this run's cursors, in order
    shared: Any = None  # the cursor of every write, and outside a pipeline of every read
    reading: list[tuple[Any, _Compiled]] = []
    found_rows: list[Rows] = []
    sent: tuple[str, Any] | None = None  # the driver statement that ran last, for errors
    try:
        with driver.pipeline() if pipelined else nullcontext():
            for statement, parameters in writes:
                if type(statement) is DriverSQL:
                    if shared is None:
                        shared = _take(driver, kept, taken)
                    sent = (statement.sql, parameters)
                    shared.execute(statement.sql, parameters)
                    continue
                single = _is_mapping(parameters)
                found = _on_driver(statement, parameters, dialect, single)
                if found is None:
                    plain = statement.statement if isinstance(statement, OnDriver) else statement
                    connection.execute(cast(Executable, plain), parameters)
                    continue
                if shared is None:
                    shared = _take(driver, kept, taken)
                arguments: Any
                if single:
                    sent = (found.sql, arguments := found.arguments(parameters))
                    shared.execute(found.sql, arguments)
                else:
                    sent = (found.sql, arguments := [found.arguments(row) for row in parameters])
                    shared.executemany(found.sql, arguments)
            for read, parameters in reads:
                compiled = _compiled(read, dialect, tuple(parameters))
                assert compiled is not None  # a read's parameters are all given
                arguments = compiled.arguments(parameters)
                sent = (compiled.sql, arguments)
                if pipelined:
                    cursor = _take(driver, kept, taken)
                    reading.append((cursor, compiled))
                    cursor.execute(compiled.sql, arguments)
                    continue
                if shared is None:
                    shared = _take(driver, kept, taken)
                shared.execute(compiled.sql, arguments)
                found_rows.append(_fetched(shared, compiled))
            if committing:
                if shared is None:
                    shared = _take(driver, kept, taken)
                sent = ("COMMIT", None)
                # Not `driver.commit()`: in a pipeline that syncs at once, and the pipeline's
                # end syncs again, a round trip more. Never prepared: nothing to gain from it.
                shared.execute("COMMIT", prepare=False)
        if pipelined:
            return [_fetched(cursor, compiled) for cursor, compiled in reading]
        return found_rows
    except DBAPIError:  # from a write run through SQLAlchemy: raised as it is
        raise
    except dialect.loaded_dbapi.Error as error:
        # In a pipeline the failing statement is not known.
        statement_sql, arguments = sent if sent and not pipelined else (None, None)
        raise driver_error(connection, error, statement_sql, arguments) from error
    finally:
        if kept is None:
            for cursor in taken:
                cursor.close()


def _kept_cursors(connection: Connection, driver: Any) -> list[Any]:
    """The PostgreSQL connection's cursors kept for `run`, in its pool `info` (which goes when
    the connection is replaced).

    A new psycopg cursor costs more in Python than running a statement on it (its adapters,
    and the type lookups of each parameter and column, made again for each cursor), and a lone
    event's transaction took four. Measured under callgrind: 1,800k instructions a lone event
    down to 1,692k. A kept cursor carries nothing from one run to the next (each execute
    starts afresh); a connection is used by one thread at a time, and a run takes its cursors
    in order (`_take`), so no two statements in flight share one.
    """
    info = connection.connection.info
    found = info.get(_KEPT_CURSORS)
    if found is None or found[0] is not driver:
        found = info[_KEPT_CURSORS] = (driver, [])
    kept: list[Any] = found[1]
    return kept


def _take(driver: Any, kept: list[Any] | None, taken: list[Any]) -> Any:
    """The run's next cursor: a kept one (made and kept the first time), or a new one to close
    after the run (`kept` None: SQLite, where one costs little)."""
    if kept is None:
        cursor = driver.cursor()
    elif len(taken) < len(kept):
        cursor = kept[len(taken)]
    else:
        kept.append(cursor := driver.cursor())
    taken.append(cursor)
    return cursor


# The key, in a connection's pool `info`, of its kept cursors (see `_kept_cursors`).
_KEPT_CURSORS = "tollgate.kept_cursors"


def _is_mapping(parameters: Any) -> bool:
    """Whether parameters are one set (a mapping), not a list of sets: a dict's exact type is
    checked first, as an ABC's isinstance costs several times more."""
    return type(parameters) is dict or isinstance(parameters, Mapping)


def _on_driver(
    statement: Statement, parameters: Any, dialect: Dialect, single: bool
) -> _Compiled | None:
    """Return the write compiled for the driver's cursor, or None to run it through SQLAlchemy.

    `single`: the parameters are one set (a mapping), not a list of sets."""
    if not isinstance(statement, OnDriver):
        return None
    if single:
        return _compiled(statement.statement, dialect, tuple(parameters))
    if not _same_keys(parameters):
        return None
    return _compiled(statement.statement, dialect, tuple(parameters[0]))


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


def on_cursor(connection: Connection, sql: str, parameters: Any) -> list[Any]:
    """Run a statement on the driver's cursor, in the connection's transaction; return its rows.

    For statements every usage batch and consume group runs (counters locked, events and
    answers inserted, counters updated): SQLAlchemy's execution layer around one costs more
    than SQLite takes to run it (about 30 µs on a lock of 20 counters, most in making a Row of
    each). Errors are raised as SQLAlchemy raises them (`driver_error`), so callers retry them
    as before.
    """
    driver: Any = connection.connection.driver_connection
    cursor = driver.cursor()
    try:
        cursor.execute(sql, parameters)
        return cursor.fetchall() if cursor.description is not None else []
    except connection.dialect.loaded_dbapi.Error as error:
        raise driver_error(connection, error, sql, parameters) from error
    finally:
        cursor.close()


# A named tuple of a row's values (a `read_rows` row, or a slice of one), made in C:
# `named_row(AlertRow, row)`. A Row's attribute costs a failed lookup on its class first.
named_row = tuple.__new__


def read_rows(
    connection: Connection, statement: ClauseElement, parameters: Mapping[str, Any]
) -> list[Any]:
    """Run a read built once (by db.queries, at import) on the driver's cursor, in the
    connection's transaction; return its rows as tuples, each column processed as SQLAlchemy
    processes it (`run`'s reads, as tuples rather than dicts).

    For the reads every usage batch and consume group makes (its customers, subscriptions,
    deals and alerts): SQLAlchemy's execution layer and its Row cost more than SQLite takes to
    run one (a group of one consume paid it four times).
    """
    compiled = _compiled(statement, connection.dialect, tuple(parameters))
    assert compiled is not None  # a read's parameters are all given
    arguments = compiled.arguments(parameters)
    driver: Any = connection.connection.driver_connection
    cursor = driver.cursor()
    try:
        cursor.execute(compiled.sql, arguments)
        return _processed_rows(cursor, compiled)
    except connection.dialect.loaded_dbapi.Error as error:
        raise driver_error(connection, error, compiled.sql, arguments) from error
    finally:
        cursor.close()


def on_cursor_many(connection: Connection, sql: str, rows: Sequence[Any]) -> None:
    """`on_cursor` for a statement run once per row (`executemany`)."""
    driver: Any = connection.connection.driver_connection
    cursor = driver.cursor()
    try:
        cursor.executemany(sql, rows)
    except connection.dialect.loaded_dbapi.Error as error:
        raise driver_error(connection, error, sql, rows) from error
    finally:
        cursor.close()


def json_rows(
    table: Table, names: Sequence[str], rows: Sequence[Mapping[str, Any]], dialect: Dialect
) -> str:
    """The rows as one JSON array of arrays (each row's values in `names`' order), each value
    as SQLAlchemy binds it to its column of `table`: a UTC datetime converted (then written in
    ISO 8601), a JSON column's value as the text its bind would send (None as `null`). For a
    PostgreSQL statement taking many rows in one text parameter (`json_array_elements`)."""
    binds = _column_binds(table, tuple(names), dialect)
    return orjson.dumps(
        [
            [
                row[name] if bind is None else bind(row[name])
                for name, bind in zip(names, binds, strict=True)
            ]
            for row in rows
        ]
    ).decode()


_COLUMN_BINDS: dict[tuple[Any, ...], tuple[Callable[[Any], Any] | None, ...]] = {}


def _column_binds(
    table: Table, names: tuple[str, ...], dialect: Dialect
) -> tuple[Callable[[Any], Any] | None, ...]:
    key = (table, names, dialect.name)
    found = _COLUMN_BINDS.get(key)
    if found is None:
        found = _COLUMN_BINDS[key] = tuple(
            _column_bind(table.c[name].type, dialect) for name in names
        )
    return found


def _column_bind(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(column_type, JSON):
        return _json_text_bind(column_type, dialect)
    return _bind_processor(column_type, dialect)


def _json_text_bind(column_type: JSON[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """A JSON column's value as the text its bind sends (SQLAlchemy's JSON bind, less the
    driver's wrapper): the dialect's serializer, None as `null` unless `none_as_null`."""
    serialize = getattr(dialect, "_json_serializer", None) or json.dumps
    none_as_null = column_type.none_as_null

    def bind(value: Any) -> Any:
        if value is None and none_as_null:
            return None
        return serialize(None if value is JSON.NULL else value)

    return bind


# -- statements compiled once per dialect ------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the driver takes them
    # The parameters given by the caller (the others are fixed), and their bind processors by
    # position among the names.
    given: tuple[str, ...]
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]
    take: Callable[[Mapping[str, Any]], Sequence[Any]]  # the given values, in order
    # Per parameter: _GIVEN, or a value the statement carries (a literal such as the 1 of
    # `state_version + 1`, or a column's scalar default), already processed.
    fixed: tuple[Any, ...]
    positional: bool
    keys: tuple[str, ...]  # the result's columns
    results: tuple[tuple[int, Callable[[Any], Any]], ...]  # result processors by position
    partial: bool  # whether some parameters are fixed (not all are given)

    def arguments(self, parameters: Mapping[str, Any]) -> Any:
        # The given values in order (an itemgetter), then only those that need processing;
        # the fixed ones (rare) put in their places.
        values = list(self.take(parameters))
        if self.partial:
            taken = iter(values)
            values = [next(taken) if fixed is _GIVEN else fixed for fixed in self.fixed]
        for index, process in self.processed:
            values[index] = process(values[index])
        return values if self.positional else dict(zip(self.names, values, strict=True))


# Keyed by the statement object itself (statements are built once, at import, by db.queries)
# and the parameters' names in the order given; None: the statement needs SQLAlchemy.
_COMPILED: dict[tuple[Any, ...], _Compiled | None] = {}
_GIVEN = object()


def _compiled(
    statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...]
) -> _Compiled | None:
    cache_key = (statement, dialect.name, keys)
    try:
        return _COMPILED[cache_key]
    except KeyError:
        made = _COMPILED[cache_key] = _compile(statement, dialect, frozenset(keys))
        return made


def _compile(statement: ClauseElement, dialect: Dialect, keys: frozenset[str]) -> _Compiled | None:
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    binds = tuple(_bind_processor(compiled.binds[name].type, dialect) for name in names)
    # Columns left out whose default SQLAlchemy would fill in: a constant is fixed here, one it
    # computes (a callable, SQL) leaves the statement to SQLAlchemy.
    defaults = {
        **{column.key: column.default for column in compiled.insert_prefetch},
        **{column.key: column.onupdate for column in compiled.update_prefetch},
    }
    if any(not default.is_scalar for default in defaults.values()):
        return None
    fixed = tuple(
        _GIVEN
        if name in keys
        else _processed(
            defaults[name].arg if name in defaults else compiled.binds[name].value, process
        )
        for name, process in zip(names, binds, strict=True)
    )
    columns = list(getattr(statement, "exported_columns", ()))
    results = (result_processor(column.type, dialect) for column in columns)
    given = tuple(name for name, value in zip(names, fixed, strict=True) if value is _GIVEN)
    return _Compiled(
        sql=compiled.string,
        names=names,
        given=given,
        take=_taker(given),
        processed=tuple(
            (index, process)
            for index, (process, value) in enumerate(zip(binds, fixed, strict=True))
            if process is not None and value is _GIVEN
        ),
        fixed=fixed,
        positional=bool(compiled.positional),
        keys=tuple(column.key for column in columns),
        results=tuple((index, found) for index, found in enumerate(results) if found is not None),
        partial=len(given) < len(names),
    )


def _taker(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    """Return what reads these names' values from parameters, as a sequence (in C for two or
    more: an itemgetter)."""
    if len(names) > 1:
        return itemgetter(*names)
    return lambda parameters: [parameters[name] for name in names]


def _processed(value: Any, process: Callable[[Any], Any] | None) -> Any:
    return value if process is None else process(value)


def _bind_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if not isinstance(column_type, UTCDateTime):
        return column_type.dialect_impl(dialect).bind_processor(dialect)
    # A group of events writes the same instant many times (its `now` in every audit, feed and
    # inbox row; a subscription's periods): on SQLite each is formatted as text, so each value
    # is converted once, and once for every UTC column of every statement, which all convert
    # alike. (Only UTC columns: equal instants in other zones convert alike there.)
    found = _UTC_BINDS.get(dialect.name)
    if found is None:
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        assert process is not None  # a TypeDecorator's: process_bind_param
        found = _UTC_BINDS[dialect.name] = _remembered(process)
    return found


_UTC_BINDS: dict[str, Callable[[Any], Any]] = {}


def result_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column type's result processor for `dialect` (None: values come as the driver
    gives them), a datetime's remembering what it parsed."""
    process = column_type.dialect_impl(dialect).result_processor(dialect, None)
    if process is None or not isinstance(column_type, UTCDateTime | DateTime):
        return process
    # The same few instants (a subscription's periods, trial) are read again and again; an
    # aware datetime is immutable, so one parse of each stored value serves every later read.
    return _remembered(process)


def _remembered(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Return `process` remembering its answers: for immutable values seen again and again.

    A remembered answer is a dict lookup made in C (the dict's own `__getitem__`), a fifth of a
    Python function's call: a subscription event's read and writes convert some 16 values."""
    return _Answers(process).__getitem__


class _Answers(dict[Any, Any]):
    """`process`'s answers by the value given, each worked out the first time it is asked."""

    __slots__ = ("process",)

    def __init__(self, process: Callable[[Any], Any]) -> None:
        super().__init__()
        self.process = process

    def __missing__(self, value: Any) -> Any:
        if len(self) >= 4096:
            self.clear()
        found = self[value] = self.process(value)
        return found


def _fetched(cursor: Any, compiled: _Compiled) -> Rows:
    keys = compiled.keys
    if not keys:
        return []
    return [dict(zip(keys, row, strict=True)) for row in _processed_rows(cursor, compiled)]


def _processed_rows(cursor: Any, compiled: _Compiled) -> list[Any]:
    """The cursor's rows, each column through its result processor (rows needing none as the
    driver made them). A NULL stays None without a call: every processor returns None for it
    (SQLAlchemy's, and UTCDateTime's), and an outer join's missing side is all NULLs."""
    processors = compiled.results
    if not processors:
        return cursor.fetchall() if cursor.description is not None else []
    rows = []
    for row in cursor.fetchall():
        values = list(row)
        for index, process in processors:
            value = values[index]
            if value is not None:
                values[index] = process(value)
        rows.append(tuple(values))
    return rows


def _same_keys(sets: Any) -> bool:
    """Whether parameter sets share their keys (one compiled statement serves them all)."""
    if not isinstance(sets, list) or not sets or not _is_mapping(sets[0]):
        return False
    keys = sets[0].keys()
    return all(row.keys() == keys for row in sets)
