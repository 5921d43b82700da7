"""Usage metering's statements: events, counters, pending rows, thresholds and meter outbox rows.

Recording usage is the hottest write path (a batch of 1,000 events per call, tens of thousands
of events a second), so its batch statements go to the driver directly, each dialect in the form
its driver reads fastest: PostgreSQL takes a batch's rows as one JSON array of arrays (orjson
writes it in C, where psycopg would adapt each element of several arrays in Python); SQLite
takes `executemany` with times already in the text SQLAlchemy stores (see `tollgate.db.types`),
cached because periods and batch times repeat. Times read back come out as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, insert, literal, select, union_all
from sqlalchemy.dialects import postgresql, sqlite

from tollgate.db.dialects import json_array, select_among
from tollgate.db.execution import driver_error, on_cursor, on_cursor_many, read_rows
from tollgate.db.tables import (
    METER_OUTBOX,
    USAGE_COUNTERS,
    USAGE_EVENT_IDS,
    USAGE_EVENTS,
    USAGE_PENDING,
    USAGE_THRESHOLDS,
)

# (customer id, meter, period start): one counter.
CounterId = tuple[str, str, datetime]
# An accepted event: (id, customer id, meter, value, occurred at).
EventRow = tuple[str, str, str, int, datetime]
# A counter as a batch leaves it: (customer id, meter, period start, value, last at, last event
# id, overage units reported, units held by reservations, rate window start and value).
CounterUpdate = tuple[
    str, str, datetime, int, datetime | None, str | None, int, int, datetime | None, int
]
# Usage counted in Redis, one row per counter per batch: (customer id, meter, period start,
# period end, aggregation, value, last at, last event id, recorded at, change in held units).
NewPending = tuple[str, str, datetime, datetime, str, int, datetime, str, datetime, int]


# A counter as locked for a transaction: (value, last at, last event id, overage units already
# written to the meter outbox this period, units held by reservations, rate window start and
# value, whether its customer has a usage alert on its meter).
LockedCounter = tuple[int, datetime | None, str | None, int, int, datetime | None, int, bool]


class PendingRow(NamedTuple):
    """Usage counted in Redis and committed, not yet folded into its counter."""

    id: int
    customer_id: str
    meter: str
    period_start: datetime
    period_end: datetime
    aggregation: str
    value: int
    last_at: datetime | None
    last_event_id: str | None
    held: int = 0


# -- events ----------------------------------------------------------------------------------


def recorded_ids(connection: Connection, ids: Sequence[str]) -> set[str]:
    """Return which of `ids` were recorded before (on the driver's cursor: every batch counted
    in Redis, and every `POST /v1/usage` batch, looks)."""
    statement = _RECORDED_IDS[connection.dialect.name]
    return {row[0] for row in read_rows(connection, statement, {"ids": json_array(ids)})}


# Ids are unique through usage_event_ids on PostgreSQL (events are partitioned by month), through
# the primary key of usage_events on SQLite; the batch's ids are one JSON parameter.
_RECORDED_IDS = {
    dialect: select_among(dialect, select(table.c.id), table, table.c.id, "ids")
    for dialect, table in (("postgresql", USAGE_EVENT_IDS), ("sqlite", USAGE_EVENTS))
}


def recorded_ids_awaited(connection: Connection, ids: Sequence[str]) -> set[str]:
    """Return which of `ids` were recorded, once every transaction recording one has ended.

    `recorded_ids` sees what committed before it: an id another transaction has inserted and
    not yet committed is not there, and the read does not wait for it. On PostgreSQL the ids
    are claimed in `usage_event_ids` instead, in a savepoint rolled back at once (nothing is
    kept): the primary key makes a claim wait for a transaction inserting the same id and, if
    that one commits, conflict, so an id not claimed was recorded. Claimed in id order, as
    `insert_events` claims them, so two transactions wait for each other and do not deadlock;
    the four statements go in one round trip (psycopg's pipeline). Each claim rolled back
    leaves a dead row and index entry for vacuum. On SQLite a write transaction holds the
    database from its start (`hold_database`), so none is in flight: the plain read.
    """
    if not _postgres(connection):
        return recorded_ids(connection, ids)
    driver: Any = connection.connection.driver_connection
    parameters = {"ids": _json(sorted(set(ids)))}
    try:
        with driver.pipeline():
            control = driver.cursor()
            control.execute("SAVEPOINT recorded_ids_awaited", prepare=False)
            claim = driver.cursor()
            claim.execute(_PG_CLAIM_IDS, parameters)
            control.execute("ROLLBACK TO SAVEPOINT recorded_ids_awaited", prepare=False)
            control.execute("RELEASE SAVEPOINT recorded_ids_awaited", prepare=False)
        claimed = {row[0] for row in claim.fetchall()}
    except connection.dialect.loaded_dbapi.Error as error:
        raise driver_error(connection, error) from error  # which statement: not known
    return set(ids) - claimed


# The ids (a JSON array, sorted), each claimed as `_PG_INSERT_EVENTS` claims it; the time is
# never kept (the claim is rolled back).
_PG_CLAIM_IDS = (
    "INSERT INTO usage_event_ids (id, occurred_at)"
    " SELECT e.id, now() FROM jsonb_array_elements_text(%(ids)s::jsonb) WITH ORDINALITY"
    " AS e(id, n) ORDER BY e.n ON CONFLICT (id) DO NOTHING RETURNING id"
)


def insert_events(
    connection: Connection,
    rows: Sequence[EventRow],
    now: datetime,
    counters: Sequence[CounterUpdate] = (),
) -> int:
    """Insert accepted events, recorded at `now`, in id order, add them to their hours in
    `usage_hourly` and set `counters` as `update_counters` does; return how many events were
    new. On PostgreSQL all of it is one statement (a round trip, and psycopg's work for one
    execute, less on every usage batch and consume group).

    On PostgreSQL an id another transaction holds (recorded, or about to be) is skipped after
    that transaction ends, not raised: the caller sees fewer rows than it sent and decides the
    batch again. The id order makes every batch claim its ids in the same order, so batches
    with the same ids in different orders wait for each other instead of deadlocking; the hours
    are added in key order for the same reason.
    """
    ordered = sorted(rows, key=itemgetter(0))
    if _postgres(connection):
        parameters = {"rows": _json(ordered), "now": now}
        if counters:
            parameters["counters"] = _json(counters)
        sql = _PG_INSERT_EVENTS_AND_COUNTERS if counters else _PG_INSERT_EVENTS
        (inserted,) = on_cursor(connection, sql, parameters)
        return int(inserted[0])
    recorded = _sqlite_time(now)
    # Each event's time as stored and its hour: most events of a batch share a time, or a few.
    times = {now: (recorded, _sqlite_time(_hour(now)))}
    stored: list[tuple[str, str, str, int, str, str]] = []
    hours: dict[tuple[str, str, str], list[int]] = {}  # (customer, meter, hour): sum, count, max
    for event_id, customer, meter, value, occurred_at in ordered:
        time = times.get(occurred_at)
        if time is None:
            time = times[occurred_at] = (
                _sqlite_time(occurred_at),
                _sqlite_time(_hour(occurred_at)),
            )
        stored.append((event_id, customer, meter, value, time[0], recorded))
        key = (customer, meter, time[1])
        found = hours.get(key)
        if found is None:
            hours[key] = [value, 1, value]
        else:
            found[0] += value
            found[1] += 1
            if value > found[2]:
                found[2] = value
    sqlite_values(
        connection,
        "INSERT INTO usage_events (id, customer_id, meter, value, occurred_at, recorded_at)",
        stored,
    )
    sqlite_values(
        connection,
        "INSERT INTO usage_hourly (customer_id, meter, hour, quantity, events, peak)",
        [(*key, *totals) for key, totals in sorted(hours.items())],
        " ON CONFLICT (customer_id, meter, hour) DO UPDATE SET"
        " quantity = quantity + excluded.quantity, events = events + excluded.events,"
        " peak = max(peak, excluded.peak)",
    )
    if counters:
        update_counters(connection, counters, now)
    return len(ordered)


# One statement, one round trip: the ids claimed (`usage_event_ids` is what makes an id unique
# across the monthly partitions of `usage_events`), the new events stored in their partitions,
# and their hours added up; it answers how many ids were new.
_PG_INSERT_EVENTS = (
    "WITH batch AS (SELECT r->>0 AS id, r->>1 AS customer_id, r->>2 AS meter,"
    " (r->>3)::bigint AS value, (r->>4)::timestamptz AS occurred_at, n"
    " FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(r, n)),"
    " fresh AS (INSERT INTO usage_event_ids (id, occurred_at)"
    " SELECT id, occurred_at FROM batch ORDER BY n ON CONFLICT (id) DO NOTHING RETURNING id),"
    " stored AS (INSERT INTO usage_events (id, customer_id, meter, value, occurred_at,"
    " recorded_at) SELECT b.id, b.customer_id, b.meter, b.value, b.occurred_at, %(now)s"
    " FROM batch AS b JOIN fresh USING (id) RETURNING customer_id, meter, occurred_at, value),"
    " hourly AS (INSERT INTO usage_hourly AS h (customer_id, meter, hour, quantity, events, peak)"
    " SELECT customer_id, meter, date_trunc('hour', occurred_at AT TIME ZONE 'UTC')"
    " AT TIME ZONE 'UTC', sum(value), count(*), max(value) FROM stored GROUP BY 1, 2, 3"
    " ORDER BY 1, 2, 3 ON CONFLICT (customer_id, meter, hour) DO UPDATE SET"
    " quantity = h.quantity + excluded.quantity, events = h.events + excluded.events,"
    " peak = greatest(h.peak, excluded.peak))"
    " SELECT count(*) FROM fresh"
)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# -- counters --------------------------------------------------------------------------------


def lock_counters(
    connection: Connection,
    counters: Sequence[tuple[str, str, datetime, datetime]],
    now: datetime,
) -> list[LockedCounter]:
    """Return counters (customer id, meter, period start, period end each, distinct) locked for
    this transaction, in the order asked, creating missing ones at zero.

    The counters there are read (and locked) first, and only missing ones are then created
    and read: a counter is made once a period, and read by every batch that moves it, so most
    batches make one statement, not two. PostgreSQL locks the rows in key order (`FOR UPDATE`)
    in each of the two steps, so batches over the same counters take turns instead of
    deadlocking (a batch waits for a counter another creates only after taking its own locks);
    on SQLite the write transaction holds the database.
    """
    found: list[Any] = [None] * len(counters)
    asked: dict[tuple[str, str, Any], int]  # where each is asked, by its key as read back
    if _postgres(connection):
        asked = {
            (customer, meter, start): i for i, (customer, meter, start, _) in enumerate(counters)
        }

        def create(wanted: Sequence[int]) -> None:
            rows = _json([counters[i] for i in wanted])
            connection.exec_driver_sql(_PG_INSERT_COUNTERS, {"rows": rows, "now": now})

        def lock(wanted: Sequence[int]) -> None:
            rows = _json([counters[i] for i in wanted])
            selected = on_cursor(connection, _PG_LOCK_COUNTERS, {"rows": rows})
            _place_locked(found, selected, asked, pg=True)

    else:
        starts = [_sqlite_time(start) for _, _, start, _ in counters]
        asked = {
            (customer, meter, start): i
            for i, ((customer, meter, _, _), start) in enumerate(zip(counters, starts, strict=True))
        }

        def create(wanted: Sequence[int]) -> None:
            stamp = _sqlite_time(now)
            connection.exec_driver_sql(
                "INSERT INTO usage_counters (customer_id, meter, period_start, period_end,"
                " value, reported, updated_at) VALUES (?, ?, ?, ?, 0, 0, ?) ON CONFLICT DO NOTHING",
                [
                    (counters[i][0], counters[i][1], starts[i], _sqlite_time(counters[i][3]), stamp)
                    for i in wanted
                ],
            )

        def lock(wanted: Sequence[int]) -> None:
            for first in range(0, len(wanted), 300):
                chunk = wanted[first : first + 300]
                marks = _value_marks(3, len(chunk))
                selected = on_cursor(
                    connection,
                    _SQLITE_LOCK_COUNTERS.format(marks),  # placeholders only
                    tuple(
                        part for i in chunk for part in (counters[i][0], counters[i][1], starts[i])
                    ),
                )
                _place_locked(found, selected, asked, pg=False)

    every = range(len(counters))
    lock(every)
    missing = [i for i in every if found[i] is None]
    if missing:
        create(missing)
        lock(missing)
    return found


def _place_locked(
    found: list[Any], rows: Iterable[Any], index: Mapping[tuple[Any, ...], int], *, pg: bool
) -> None:
    """Put each locked counter where it was asked (both dialects select the same columns;
    PostgreSQL's period start is a datetime to make UTC, SQLite's the text it was asked by).
    One call per statement, not per row: this runs for every counter of every usage batch."""
    for row in rows:
        start = row[2].astimezone(UTC) if pg else row[2]
        found[index[(row[0], row[1], start)]] = (
            int(row[3]),
            _aware(row[4]),
            row[5],
            int(row[6]),
            int(row[7]),
            _aware(row[8]),
            int(row[9]),
            bool(row[10]),
        )


# The keys asked are joined to the counters, each found by the primary key: SQLite plans
# `(customer_id, meter, period_start) IN (VALUES …)` as a scan of every counter (EXPLAIN QUERY
# PLAN: "SCAN usage_counters"), a cost that grew with the table on every batch. CROSS JOIN
# keeps the asked keys outside.
# Each counter comes with whether its customer has an alert on its meter: a batch looks for
# the alerts it may fire (usage_controls.alerts_of) only then, and most customers have none.
_SQLITE_LOCK_COUNTERS = (
    "SELECT c.customer_id, c.meter, c.period_start, c.value, c.last_at, c.last_event_id,"
    " c.reported, c.held, c.window_start, c.window_value, EXISTS (SELECT 1 FROM usage_alerts"
    " AS a WHERE a.customer_id = c.customer_id AND a.feature = c.meter) FROM (VALUES {}) AS k"
    " CROSS JOIN usage_counters AS c ON c.customer_id = k.column1 AND c.meter = k.column2"
    " AND c.period_start = k.column3"
)
_PG_INSERT_COUNTERS = (
    "INSERT INTO usage_counters (customer_id, meter, period_start, period_end, value, reported,"
    " updated_at) SELECT r->>0, r->>1, (r->>2)::timestamptz, (r->>3)::timestamptz, 0, 0,"
    " %(now)s FROM jsonb_array_elements(%(rows)s::jsonb) AS r ON CONFLICT DO NOTHING"
)
_PG_LOCK_COUNTERS = (
    "SELECT customer_id, meter, period_start, value, last_at, last_event_id, reported, held,"
    " window_start, window_value, EXISTS (SELECT 1 FROM usage_alerts AS a"
    " WHERE a.customer_id = c.customer_id AND a.feature = c.meter)"
    " FROM usage_counters AS c WHERE (customer_id, meter, period_start) IN (SELECT r->>0, r->>1,"
    " (r->>2)::timestamptz FROM jsonb_array_elements(%(rows)s::jsonb) AS r)"
    " ORDER BY customer_id, meter, period_start FOR UPDATE"
)


def update_counters(
    connection: Connection, updates: Sequence[CounterUpdate], now: datetime
) -> None:
    """Set counters' value, latest reading and reported overage."""
    if _postgres(connection):
        on_cursor(connection, _PG_UPDATE_COUNTERS, {"rows": _json(updates), "now": now})
        return
    stamp = _sqlite_time(now)
    # No time or id is empty: '' stands for NULL, which the driver binds only after looking
    # for an adapter of None (failed attribute lookups, some 2,500 instructions each).
    on_cursor_many(
        connection,
        "UPDATE usage_counters SET value = ?, last_at = NULLIF(?, ''),"
        " last_event_id = NULLIF(?, ''), reported = ?, held = ?, window_start = NULLIF(?, ''),"
        " window_value = ?, updated_at = ?"
        " WHERE customer_id = ? AND meter = ? AND period_start = ?",
        [
            (
                value,
                _sqlite_time(last_at) if last_at is not None else "",
                last_id or "",
                reported,
                held,
                _sqlite_time(window) if window is not None else "",
                window_value,
                stamp,
                customer_id,
                meter,
                _sqlite_time(start),
            )
            for (
                customer_id,
                meter,
                start,
                value,
                last_at,
                last_id,
                reported,
                held,
                window,
                window_value,
            ) in updates
        ],
    )


_COUNTERS_SET = (
    "UPDATE usage_counters AS c SET value = (r->>3)::bigint, last_at = (r->>4)::timestamptz,"
    " last_event_id = r->>5, reported = (r->>6)::bigint, held = (r->>7)::bigint,"
    " window_start = (r->>8)::timestamptz, window_value = (r->>9)::bigint, updated_at = %(now)s"
    " FROM jsonb_array_elements(%({})s::jsonb) AS r"
    " WHERE c.customer_id = r->>0 AND c.meter = r->>1 AND c.period_start = (r->>2)::timestamptz"
)
_PG_UPDATE_COUNTERS = _COUNTERS_SET.format("rows")
# The events' statement with the counters set too: a data-modifying WITH runs whether or not
# the query reads it. The counters were locked before (lock_counters), so it waits on nothing
# more; a batch that finds an id taken is rolled back whole, the counters with it.
_PG_INSERT_EVENTS_AND_COUNTERS = _PG_INSERT_EVENTS.replace(
    " SELECT count(*) FROM fresh",
    ", counters AS (" + _COUNTERS_SET.format("counters") + ") SELECT count(*) FROM fresh",  # noqa: S608
)


def counters_of(connection: Connection, customer_ids: Sequence[str]) -> Sequence[Any]:
    """Return the customers' counters: customer_id, meter, period_start, value, last_at,
    last_event_id, held each."""
    return connection.execute(
        select(
            USAGE_COUNTERS.c.customer_id,
            USAGE_COUNTERS.c.meter,
            USAGE_COUNTERS.c.period_start,
            USAGE_COUNTERS.c.value,
            USAGE_COUNTERS.c.last_at,
            USAGE_COUNTERS.c.last_event_id,
            USAGE_COUNTERS.c.held,
        ).where(USAGE_COUNTERS.c.customer_id.in_(customer_ids))
    ).all()


def period_usage_rows(
    connection: Connection, customer_id: str, period_start: datetime
) -> Sequence[Any]:
    """Return a customer's counters of a period and its pending rows, oldest first: meter,
    value, last_at, last_event_id, aggregation (empty for a counter), held each."""
    return connection.execute(_PERIOD_USAGE, {"customer": customer_id, "start": period_start}).all()


# The counters, and the usage counted in Redis not yet folded into them (usage_pending).
_PERIOD_USAGE = union_all(
    select(
        USAGE_COUNTERS.c.meter,
        USAGE_COUNTERS.c.value,
        USAGE_COUNTERS.c.last_at,
        USAGE_COUNTERS.c.last_event_id,
        literal("").label("aggregation"),
        USAGE_COUNTERS.c.held,
    ).where(
        USAGE_COUNTERS.c.customer_id == bindparam("customer"),
        USAGE_COUNTERS.c.period_start == bindparam("start"),
    ),
    select(
        USAGE_PENDING.c.meter,
        USAGE_PENDING.c.value,
        USAGE_PENDING.c.last_at,
        USAGE_PENDING.c.last_event_id,
        USAGE_PENDING.c.aggregation,
        USAGE_PENDING.c.held,
    ).where(
        USAGE_PENDING.c.customer_id == bindparam("customer"),
        USAGE_PENDING.c.period_start == bindparam("start"),
    ),
)


# -- pending rows (usage counted in Redis) ----------------------------------------------------


def insert_pending(connection: Connection, rows: Sequence[NewPending]) -> None:
    """Insert usage_pending rows."""
    if _postgres(connection):
        connection.exec_driver_sql(
            "INSERT INTO usage_pending (customer_id, meter, period_start, period_end,"
            " aggregation, value, last_at, last_event_id, recorded_at, held)"
            " SELECT r->>0, r->>1, (r->>2)::timestamptz, (r->>3)::timestamptz, r->>4,"
            " (r->>5)::bigint, (r->>6)::timestamptz, r->>7, (r->>8)::timestamptz, (r->>9)::bigint"
            " FROM jsonb_array_elements(%(rows)s::jsonb) AS r",
            {"rows": _json(rows)},
        )
        return
    times: dict[datetime, str] = {}  # a batch's rows share their periods and times

    def text(moment: datetime) -> str:
        found = times.get(moment)
        if found is None:
            found = times[moment] = _sqlite_time(moment)
        return found

    connection.exec_driver_sql(
        "INSERT INTO usage_pending (customer_id, meter, period_start, period_end, aggregation,"
        " value, last_at, last_event_id, recorded_at, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (c, m, text(s), text(e), a, v, text(la), li, text(at), h)
            for c, m, s, e, a, v, la, li, at, h in rows
        ],
    )


def pending_of(connection: Connection, customer_ids: Sequence[str]) -> Sequence[Any]:
    """Return the customers' pending rows, oldest first: customer_id, meter, period_start,
    aggregation, value, last_at, last_event_id, held each."""
    return connection.execute(
        select(
            USAGE_PENDING.c.customer_id,
            USAGE_PENDING.c.meter,
            USAGE_PENDING.c.period_start,
            USAGE_PENDING.c.aggregation,
            USAGE_PENDING.c.value,
            USAGE_PENDING.c.last_at,
            USAGE_PENDING.c.last_event_id,
            USAGE_PENDING.c.held,
        )
        .where(USAGE_PENDING.c.customer_id.in_(customer_ids))
        .order_by(USAGE_PENDING.c.id)
    ).all()


def oldest_pending(connection: Connection, limit: int) -> list[PendingRow]:
    """Return up to `limit` pending rows, oldest first, for this transaction to fold.

    On PostgreSQL the rows are locked and rows another flush holds are skipped, so flushes on
    several replicas fold different rows; on SQLite the write transaction holds the database.
    """
    if _postgres(connection):
        rows = connection.exec_driver_sql(_PG_OLDEST_PENDING, {"limit": limit})
    else:
        rows = connection.exec_driver_sql(_SQLITE_OLDEST_PENDING, (limit,))
    return [
        PendingRow(
            int(row[0]),
            row[1],
            row[2],
            _aware(row[3]),
            _aware(row[4]),
            row[5],
            int(row[6]),
            _aware(row[7]),
            row[8],
            int(row[9]),
        )
        for row in rows
    ]


_PENDING_COLUMNS = (
    "id, customer_id, meter, period_start, period_end, aggregation, value, last_at, last_event_id,"
    " held"
)
_PG_OLDEST_PENDING = (
    f"SELECT {_PENDING_COLUMNS} FROM usage_pending ORDER BY id LIMIT %(limit)s"  # noqa: S608
    " FOR UPDATE SKIP LOCKED"
)
_SQLITE_OLDEST_PENDING = f"SELECT {_PENDING_COLUMNS} FROM usage_pending ORDER BY id LIMIT ?"  # noqa: S608


def delete_pending(connection: Connection, ids: Sequence[int]) -> None:
    """Delete pending rows this transaction read with `oldest_pending` (ids ascending)."""
    if _postgres(connection):
        connection.exec_driver_sql(
            "DELETE FROM usage_pending WHERE id = ANY(%(ids)s)", {"ids": list(ids)}
        )
    else:  # one writer at a time: the rows read are every row up to the last id
        connection.exec_driver_sql("DELETE FROM usage_pending WHERE id <= ?", (ids[-1],))


# -- thresholds and overage ------------------------------------------------------------------


def insert_threshold(
    connection: Connection,
    *,
    customer_id: str,
    meter: str,
    period_start: datetime,
    percent: int,
    used: int,
    crossed_at: datetime,
) -> bool:
    """Record that usage crossed a warning level in a period; False if it was recorded before."""
    # RETURNING tells whether the row is new (PostgreSQL's rowcount does not, here).
    inserted = connection.execute(
        _INSERT_THRESHOLD[_postgres(connection)],
        {
            "customer_id": customer_id,
            "meter": meter,
            "period_start": period_start,
            "percent": percent,
            "used": used,
            "crossed_at": crossed_at,
        },
    ).first()
    return inserted is not None


_INSERT_THRESHOLD = {
    True: postgresql.insert(USAGE_THRESHOLDS)
    .on_conflict_do_nothing()
    .returning(USAGE_THRESHOLDS.c.percent),
    False: sqlite.insert(USAGE_THRESHOLDS)
    .on_conflict_do_nothing()
    .returning(USAGE_THRESHOLDS.c.percent),
}


def queue_meter_events(connection: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write overage for the meter sync job to send to Stripe (meter_outbox rows)."""
    connection.execute(insert(METER_OUTBOX), list(rows))


# -- the dialects ----------------------------------------------------------------------------


def sqlite_values(
    connection: Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> list[Any]:
    """Run `head VALUES (?, …), … tail` on SQLite for `rows` (of one width), as few statements
    as the driver's limit on parameters allows; return the rows they return (RETURNING).

    One multi-row statement, where `executemany` steps, resets and hands the interpreter's
    lock over once per row: with a group's events, their hours and its consume answers so, the
    consume writer's instructions a call at a group of 20 fell 3 % (313.8k -> 303.4k). Not for
    the counters' update: an UPDATE … FROM (VALUES …) cost SQLite more than executemany saved.
    """
    found: list[Any] = []
    if not rows:
        return found
    per = max(1, _SQLITE_PARAMETERS // len(rows[0]))
    for first in range(0, len(rows), per):
        chunk = rows[first : first + per]
        marks = _value_marks(len(chunk[0]), len(chunk))
        values = list(chain.from_iterable(chunk))
        found += on_cursor(connection, f"{head} VALUES {marks}{tail}", values)
    return found


# Parameters per SQLite statement: well under its limit (32,766 since 3.32).
_SQLITE_PARAMETERS = 3000


@lru_cache(maxsize=256)  # a few widths, and the sizes batches come in
def _value_marks(width: int, count: int) -> str:
    row = "(" + ", ".join(["?"] * width) + ")"
    return ",".join([row] * count)


def _postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _json(rows: Any) -> str:
    return orjson.dumps(rows).decode()


@lru_cache(maxsize=4096)  # periods and batch times repeat across rows and batches
def _sqlite_time(moment: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME format, of the naive UTC time (see tollgate.db.types).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _aware(value: Any) -> Any:
    """Return a time read through the driver as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
