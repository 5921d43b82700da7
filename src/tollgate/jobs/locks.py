"""Job locks: across replicas, a job runs once per interval and never beside itself.

A `job_locks` row per job says who claimed its current interval and until when; claiming is one
conditional UPDATE (or the first INSERT), atomic on both databases, so of several workers due
at once exactly one gets it. On PostgreSQL the run also holds a transaction-scoped advisory
lock on a connection of its own: a run that overruns its interval never overlaps the next one,
and a crashed worker's lock goes with its connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update

from tollgate.db.dialects import insert_if_new
from tollgate.db.tables import JOB_LOCKS
from tollgate.db.unit_of_work import Database, advisory_key


def claim_interval(
    db: Database, *, name: str, holder: str, now: datetime, every: timedelta
) -> bool:
    """Claim the job's interval starting `now`; False when another worker has it already."""
    until = now + every
    with db.write_connection() as connection:
        taken = connection.execute(
            update(JOB_LOCKS)
            .where(and_(JOB_LOCKS.c.name == name, JOB_LOCKS.c.locked_until <= now))
            .values(holder=holder, locked_until=until)
        )
        if taken.rowcount:
            return True
        inserted = connection.execute(
            insert_if_new(connection, JOB_LOCKS, returning=("name",)),
            {"name": name, "holder": holder, "locked_until": until},
        )
        return inserted.first() is not None


def release_interval(db: Database, *, name: str, holder: str, now: datetime) -> None:
    """Give the interval back (the run failed), so the next due worker tries at once."""
    with db.write_connection() as connection:
        connection.execute(
            update(JOB_LOCKS)
            .where(and_(JOB_LOCKS.c.name == name, JOB_LOCKS.c.holder == holder))
            .values(locked_until=now)
        )


@contextmanager
def run_alone(db: Database, name: str) -> Iterator[bool]:
    """Yield True while no other process runs the job (PostgreSQL advisory lock), else False."""
    if db.dialect != "postgresql":
        # SQLite is one host's file: the interval claim already serialises the workers.
        yield True
        return
    with db.engine.connect() as connection, connection.begin():
        got = connection.execute(
            select(func.pg_try_advisory_xact_lock(advisory_key(f"job:{name}")))
        )
        yield bool(got.scalar())
