"""The inbox's status index holds only the events still to do (migration 0024), and every query
that asks for events by status reads through it, on SQLite and PostgreSQL.

An event applied as it arrives is inserted done (succeeded, ignored) and no query looks for done
events by status, so they are left out of the index: their inserts write one index fewer. SQLite
uses a partial index only where it can prove the query's WHERE implies the index's condition,
which it can from `status = ?` (or such equalities joined by OR), not from `status IN (…)`: these
tests run the real queries, take the SQL they sent, and ask each database for its plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from tollgate.db.queries import console, queues
from tollgate.db.queries import stripe_events as inbox
from tollgate.db.tables import STRIPE_EVENTS
from tollgate.db.unit_of_work import Database

INDEX = "ix_stripe_events_unfinished"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
STATUSES = ("succeeded", "ignored", "pending", "processing", "failed")


def _row(number: int, status: str) -> dict[str, Any]:
    at = NOW - timedelta(hours=1, seconds=number)
    unfinished = status in ("processing", "failed")
    return {
        "id": f"evt_{number:06d}",
        "type": "customer.subscription.updated",
        "object_type": "subscription",
        "object_id": f"sub_{number % 50}",
        "stripe_account": None,
        "api_version": None,
        "created": at,
        "received_at": at,
        "status": status,
        "attempts": 1,
        "last_error": "boom" if status == "failed" else None,
        "next_attempt_at": NOW - timedelta(minutes=1) if unfinished else None,
        "processed_at": None if unfinished or status == "pending" else at,
        "payload": "{}",
    }


@pytest.fixture
def inbox_rows(db: Database) -> Iterator[Database]:
    """Mostly done events, as an inbox has them, and a few of each unfinished status."""
    rows = [_row(number, "succeeded" if number % 100 else "ignored") for number in range(2000)]
    rows += [
        _row(2000 + number, status)
        for number, status in enumerate(["pending", "processing", "failed"] * 5)
    ]
    with db.engine.begin() as connection:
        connection.execute(STRIPE_EVENTS.insert(), rows)
    with db.engine.connect() as connection:
        # The one table this fills: a bare ANALYZE also takes the catalogs' locks, which
        # deadlocked with another test worker's DDL in the same PostgreSQL database.
        connection.exec_driver_sql("ANALYZE stripe_events")
        connection.commit()
    yield db


def _sent(db: Database, call: Callable[[Connection], Any]) -> tuple[Any, list[tuple[str, Any]]]:
    """Run a query function; return its answer and the statements on the inbox it sent."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "stripe_events" in statement:
            sent.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", keep)
    try:
        with db.engine.connect() as connection:
            answer = call(connection)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", keep)
    assert sent
    return answer, sent


def _plan(db: Database, statement: str, parameters: Any) -> str:
    with db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(str(row[-1]) for row in rows)
        # Whether the index can serve the query at all, whatever a small table's costs say.
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(str(row[0]) for row in rows)


def test_the_status_index_leaves_done_events_out(db: Database) -> None:
    with db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (INDEX,)
            ).scalar_one()
        else:
            sql = connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema() AND indexname = %(name)s",
                {"name": INDEX},
            ).scalar_one()
    assert "WHERE" in sql and "failed" in sql and "succeeded" not in sql
    names = {index["name"] for index in sa.inspect(db.engine).get_indexes("stripe_events")}
    assert "ix_stripe_events_status_next_attempt_at" not in names


@pytest.mark.parametrize(
    ("name", "call", "expected"),
    [
        (
            "retry job's due events",
            lambda c: inbox.due(c, now=NOW, stuck_after=timedelta(minutes=5), limit=100),
            15,  # every unfinished one: failed and processing due, pending for an hour
        ),
        ("queue depth", lambda c: queues.queue_depths(c)["stripe_events_failed"], 5),
        ("webhook health", lambda c: console.webhook_health(c)[0], 5),
        ("console's failed events", lambda c: len(console.failed_event_ids(c, 50)), 5),
        ("inbox by status", lambda c: len(inbox.newest(c, status="failed", limit=50)), 5),
    ],
)
def test_queries_by_status_read_the_unfinished_index(
    inbox_rows: Database, name: str, call: Callable[[Connection], Any], expected: int
) -> None:
    answer, sent = _sent(inbox_rows, call)
    assert (len(answer) if isinstance(answer, list) else answer) == expected, name
    for statement, parameters in sent:
        assert INDEX in _plan(inbox_rows, statement, parameters), (name, statement)


def test_the_oldest_unfinished_event_reads_the_index(inbox_rows: Database) -> None:
    (failed, oldest), sent = _sent(inbox_rows, console.webhook_health)
    assert failed == 5
    # Pending or processing: the last of them (number 2013, processing) is the oldest.
    assert oldest == _row(2013, "processing")["received_at"]
    assert len(sent) == 2
    for statement, parameters in sent:
        assert INDEX in _plan(inbox_rows, statement, parameters), statement


def test_done_events_are_still_listed_by_status(inbox_rows: Database) -> None:
    with inbox_rows.engine.connect() as connection:
        for status in STATUSES:
            found = inbox.newest(connection, status=status, limit=5000)
            expected = {"succeeded": 1980, "ignored": 20}.get(status, 5)
            assert len(found) == expected and {row["status"] for row in found} == {status}
