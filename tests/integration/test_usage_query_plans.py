"""What SQLite makes of the usage batch's counter lock: each counter found by its key, so a
batch's lock costs the same however many counters the table holds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tollgate.db.migrate import upgrade
from tollgate.db.queries import usage as queries
from tollgate.db.unit_of_work import Database

START = datetime(2026, 12, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)


def test_sqlite_counter_lock_finds_each_counter_by_its_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/plans.db"
    upgrade(url)
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            # Counters of other customers, which the lock must not read its way through.
            wanted = [(f"org_{n}", "runs", START, END) for n in range(50)]
            queries.lock_counters(connection, wanted, START)
            run: list[str] = []
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.set_trace_callback(run.append)
            locked = queries.lock_counters(connection, wanted[:3], START)
            driver.set_trace_callback(None)
            reads = [sql for sql in run if sql.lstrip().upper().startswith("SELECT")]
            assert len(reads) == 1 and len(locked) == 3  # the three there, in one statement
            plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {reads[0]}")]
            connection.rollback()
    finally:
        db.dispose()
    scans = [step for step in plan if step.startswith("SCAN")]
    # Only the asked keys are scanned (the VALUES list); the counters are searched by key.
    assert all("CONSTANT ROWS" in step or step == "SCAN k" for step in scans), plan
    assert any("usage_counters_1" in step for step in plan if step.startswith("SEARCH")), plan
