"""Engines and transactions: a service opens one transaction and owns it."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

# What sits between Tollgate and PostgreSQL (TOLLGATE_DATABASE_POOLER).
POOLERS = ("none", "transaction")


def pooler_connect_args(pooler: str) -> dict[str, Any]:
    """psycopg's connect arguments for what sits in front of PostgreSQL.

    Behind a pooler in transaction mode (PgBouncer before 1.21, most managed poolers) the next
    transaction may run on another server connection, so nothing may outlive a transaction.
    psycopg prepares a statement on the server after its fifth run (`_pg3_0`, …): on another
    connection it is then missing (InvalidSqlStatementName) or already there
    (DuplicatePreparedStatement). None turns server-side prepares off; statements still use
    the extended protocol with unnamed statements, which a pooler passes through.
    """
    if pooler not in POOLERS:
        raise ValueError(f"unknown pooler {pooler!r} (poolers are: {', '.join(POOLERS)})")
    return {"prepare_threshold": None} if pooler == "transaction" else {}


# orjson's options for a JSON column: keys other than text become text, as the standard
# library makes them; datetimes and dataclasses are not turned into JSON, as there.
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def json_text(value: Any) -> str:
    """A JSON column's value as text: orjson (C), which costs a fraction of the standard
    library's encoder (every audit row writes two values). What orjson refuses (a lone
    surrogate, an integer past 64 bits, a datetime) goes to the standard library, which
    writes it or raises as it always did."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value)


def json_value(text: str | bytes) -> Any:
    """A JSON column's text as a value: orjson, or the standard library for what orjson
    refuses (an escaped lone surrogate, NaN, an integer past 64 bits)."""
    try:
        return orjson.loads(text)
    except ValueError:
        return json.loads(text)


def make_engine(url: str, *, pooler: str = "none", **options: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, NORMAL sync, foreign keys and a busy timeout.

    `pooler` says what sits in front of PostgreSQL (see `pooler_connect_args`). JSON columns
    are written and read with orjson (`json_text`, `json_value`).
    """
    options = {"json_serializer": json_text, "json_deserializer": json_value, **options}
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            poolclass=StaticPool if memory else None,
            **options,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args=pooler_connect_args(pooler),
        **options,
    )


def hold_database(connection: Connection) -> None:
    """On SQLite, take the database's write lock as a write transaction begins.

    Python's sqlite3 begins a transaction only at the first INSERT, UPDATE or DELETE: the
    reads before it ran outside any transaction, so a value read there (a usage counter, a
    balance) and written back later could overwrite what another process committed between
    the two (lost usage: tests/e2e/test_usage_races.py). `BEGIN IMMEDIATE` makes the reads and
    writes one transaction that holds the database from its start; this process's writers
    already take turns (`Database._write_lock`), so the lock costs only other processes a wait
    (the busy timeout: 10 s). PostgreSQL's transactions begin with their first statement.
    """
    if connection.dialect.name == "sqlite":
        driver = connection.connection.driver_connection
        if driver is not None and not driver.in_transaction:
            driver.execute("BEGIN IMMEDIATE")


def advisory_key(name: str) -> int:
    """Return the signed 64-bit PostgreSQL advisory lock key of a name, the same everywhere."""
    return int.from_bytes(
        hashlib.sha256(f"tollgate-{name}".encode()).digest()[:8], "big", signed=True
    )


class Turn:
    """One holder's turn (`Database.taking_turns`): the transactions it runs in.

    On PostgreSQL they are all the one transaction that holds the turn's lock, and the write
    commits it: `write_transaction` is the turn's last step. On SQLite each is its own.
    """

    def __init__(self, database: Database, held: Session | None) -> None:
        self._database = database
        self._held = held

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Read (and write nothing) inside the turn."""
        if self._held is None:
            with self._database.transaction() as session:
                yield session
            return
        yield self._held

    @contextmanager
    def write_transaction(self) -> Iterator[Session]:
        """Write the turn's outcome and commit it; on PostgreSQL this ends the turn."""
        if self._held is None:
            with self._database.write_transaction() as session:
                yield session
            return
        held, self._held = self._held, None
        yield held
        held.commit()


class Database:
    """The database a process talks to: an engine and transactions over it."""

    def __init__(self, url: str, *, pooler: str = "none", **options: Any) -> None:
        self.url = url
        self.pooler = pooler
        self.engine = make_engine(url, pooler=pooler, **options)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. This process's threads queue on a lock, because
        # SQLite's busy handler sleeps up to 100 ms between tries and ruins latency under load.
        self._write_lock = threading.Lock() if url.startswith("sqlite") else None
        self._pins = threading.local()
        # SQLite's turns (`taking_turns`): a lock per name, and how many hold or wait for it.
        self._turns: dict[str, tuple[threading.Lock, int]] = {}
        self._turns_guard = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def missing_file(self) -> Path | None:
        """Return the SQLite file this database would create on first use, if it does not exist."""
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            return None
        path = Path(database)
        return None if path.exists() else path.resolve()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: commit when the block ends, roll back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def write_transaction(self) -> Iterator[Session]:
        """One transaction that writes; on SQLite, this process's writers take turns."""
        if self._write_lock is None:
            with self.transaction() as session:
                yield session
            return
        with self._write_lock, self.transaction() as session:
            hold_database(session.connection())
            yield session

    @contextmanager
    def taking_turns(self, name: str) -> Iterator[Turn]:
        """Run the block while no other holder of `name` runs its own (a Stripe round trip and
        what it read and wrote, say); the others wait.

        PostgreSQL: a transaction-scoped advisory lock, so every process and replica takes
        turns, and nothing outlives the transaction (PgBouncer in transaction mode is fine, a
        session-scoped lock would not be). The block's reads and its write run in that one
        transaction: a waiter holds one connection, never a second one it must wait for.

        SQLite: a lock in this process, not the database's write lock. `write_transaction`
        holds the whole file from its start, so holding it across a Stripe round trip (retries
        and timeouts included) would stop every other write, usage and webhooks too, for as
        long as Stripe takes, and other processes would give up after the busy timeout. SQLite
        is one host's file served by one `tollgate serve`: its requests all pass this lock.
        """
        if self.dialect == "postgresql":
            with self._sessions.begin() as session:
                session.execute(select(func.pg_advisory_xact_lock(advisory_key(f"turn:{name}"))))
                yield Turn(self, session)
            return
        with self._turns_guard:
            lock, users = self._turns.get(name, (threading.Lock(), 0))
            self._turns[name] = (lock, users + 1)
        try:
            with lock:
                yield Turn(self, None)
        finally:
            with self._turns_guard:
                lock, users = self._turns.pop(name)
                if users > 1:
                    self._turns[name] = (lock, users - 1)

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """One Core transaction that writes (no ORM session); on SQLite, writers take turns.

        Inside `pinned()` the transaction runs on this thread's pinned connection.
        """
        pinned: Connection | None = getattr(self._pins, "connection", None)
        with self._write_lock or nullcontext():
            if pinned is None:
                with self.engine.begin() as connection:
                    hold_database(connection)
                    yield connection
            else:
                with pinned.begin():
                    hold_database(pinned)
                    yield pinned

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Run this thread's `write_connection` transactions on one connection until the end.

        For a thread that does nothing but write (see the webhook route): it skips a checkout
        per transaction, and on PostgreSQL the pre-ping round trip that comes with each. A
        connection that dies is replaced by the next transaction, as at a checkout.
        """
        if getattr(self._pins, "connection", None) is not None:
            yield
            return
        with self.engine.connect() as connection:
            self._pins.connection = connection
            try:
                yield
            finally:
                self._pins.connection = None

    @contextmanager
    def pinned_to(self, connection: Connection) -> Iterator[None]:
        """`pinned`, on a connection the caller keeps (and may hand to another thread, for one
        thread at a time): this thread's `write_connection` transactions run on it until the
        end. Inside another pin, that one stays."""
        if getattr(self._pins, "connection", None) is not None:
            yield
            return
        self._pins.connection = connection
        try:
            yield
        finally:
            self._pins.connection = None

    def dispose(self) -> None:
        self.engine.dispose()
