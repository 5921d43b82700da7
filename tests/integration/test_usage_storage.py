"""Usage for years: events rolled up by the hour as they are recorded, raw events pruned past
the retention (never what an open period, Stripe or Redis still needs), and on PostgreSQL kept
in monthly partitions made ahead."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from tests.conftest import EXAMPLE_CATALOG
from tollgate.bootstrap import Container
from tollgate.catalog_file import load_catalog_file
from tollgate.clock import FrozenClock
from tollgate.config import Settings, load_settings
from tollgate.db.migrate import alembic_config, upgrade
from tollgate.db.queries.usage_storage import DEFAULT_PARTITION, month_partitions
from tollgate.db.tables import METER_OUTBOX, USAGE_EVENTS, USAGE_HOURLY
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.metering import Period
from tollgate.services import customer_billing
from tollgate.services.customers import NewCustomer, create_customer
from tollgate.services.usage import record_usage
from tollgate.services.usage.corrections import void_usage
from tollgate.services.usage.storage import maintain_usage_storage

# Before the migration's partitions (made around the real date), so events first land in the
# default partition on PostgreSQL.
START = datetime(2025, 1, 10, 12, tzinfo=UTC)
CUSTOMERS = ("org_a", "org_b")


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog_file(EXAMPLE_CATALOG)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def _settings(db: Database, retention_days: int = 60) -> Settings:
    return load_settings(
        TOLLGATE_ENV="test",
        TOLLGATE_DATABASE_URL=db.url,
        TOLLGATE_USAGE_RAW_RETENTION_DAYS=retention_days,
    )


def _deps(db: Database, catalog: Catalog, clock: FrozenClock) -> Container:
    """The wiring the services take, over this test's database, catalog and clock."""
    return Container(settings=_settings(db), db=db, clock=clock, catalog_override=catalog)


def _customers(db: Database, catalog: Catalog, clock: FrozenClock) -> None:
    for customer in CUSTOMERS:
        create_customer(
            _deps(db, catalog, clock),
            new=NewCustomer(id=customer, email=f"{customer}@example.com", offline=True, plan="pro"),
        )


def _record_months(db: Database, catalog: Catalog, clock: FrozenClock, months: int) -> None:
    """Record usage over `months` months: every few hours, both customers, a sum and a max
    meter, some repeats and a void each month; the clock ends in the last month."""
    for month in range(months):
        for step in range(40):
            at = clock.now() - timedelta(days=9) + timedelta(hours=5 * step, minutes=step)
            events: list[dict[str, Any]] = [
                {
                    "id": f"{customer}-{month}-{step}-{meter}",
                    "customer": customer,
                    "meter": meter,
                    "value": (step % 7) + 1 + index,
                    "timestamp": at.isoformat(),
                }
                for index, customer in enumerate(CUSTOMERS)
                for meter in ("runs", "storage_gb")
            ]
            report = record_usage(db=db, catalog=catalog, clock=clock, events=events + events[:1])
            assert report.accepted == len(events), report.rejected
            assert report.duplicates == 1
        voided = void_usage(
            db=db,
            catalog=catalog,
            clock=clock,
            ids=[f"org_a-{month}-3-runs"],
            reason="a test run",
            actor="tests",
        )
        assert voided.voided == 1, voided.rejected
        clock.advance(timedelta(days=31))


def _raw_hours(db: Database) -> dict[tuple[str, str, datetime], tuple[int, int, int]]:
    hours: dict[tuple[str, str, datetime], list[int]] = defaultdict(lambda: [0, 0, -(2**62)])
    with db.engine.connect() as connection:
        for row in connection.execute(sa.select(USAGE_EVENTS)):
            at = row.occurred_at.replace(minute=0, second=0, microsecond=0)
            found = hours[(row.customer_id, row.meter, at)]
            found[0] += row.value
            found[1] += 1
            found[2] = max(found[2], row.value)
    return {key: (total, count, peak) for key, (total, count, peak) in hours.items()}


def _rolled_up(db: Database) -> dict[tuple[str, str, datetime], tuple[int, int, int]]:
    with db.engine.connect() as connection:
        return {
            (row.customer_id, row.meter, row.hour): (row.quantity, row.events, row.peak)
            for row in connection.execute(sa.select(USAGE_HOURLY))
        }


def _event_count(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(USAGE_EVENTS)).scalar()
        )


def test_the_hourly_roll_up_equals_the_raw_sums_with_repeats_and_voids(
    db: Database, catalog: Catalog, clock: FrozenClock
) -> None:
    _customers(db, catalog, clock)
    _record_months(db, catalog, clock, 2)
    raw = _raw_hours(db)
    assert len(raw) > 100
    assert any(total < count for total, count, _ in raw.values())  # a void counted down
    assert _rolled_up(db) == raw


def _answers(db: Database, catalog: Catalog, clock: FrozenClock) -> list[Any]:
    """What readers show: each customer's hourly and daily history of every month, and the
    billing page's daily chart of the open period."""
    shown: list[Any] = []
    deps = _deps(db, catalog, clock)
    for customer in CUSTOMERS:
        for meter in ("runs", "storage_gb"):
            for granularity, days in (("day", 31), ("hour", 20)):
                month = START - timedelta(days=10)
                while month < clock.now():
                    history = customer_billing.usage_history(
                        deps,
                        customer_id=customer,
                        meter=meter,
                        granularity=granularity,
                        start=month,
                        end=month + timedelta(days=days),
                    )
                    shown.append(history.buckets)
                    month += timedelta(days=31)
        start = clock.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        period = Period(start, (start + timedelta(days=32)).replace(day=1))
        chart = customer_billing.period_daily_usage(
            deps,
            customer_id=customer,
            period=period,
            used={"runs": None, "storage_gb": None},
        )
        shown.append({meter: history.buckets for meter, history in chart.items()})
    return shown


def test_the_billing_page_charts_each_hour_in_one_period_only(
    db: Database, catalog: Catalog, clock: FrozenClock
) -> None:
    """A period that starts mid-day: the usage after its start is charted in it, and the hours
    before its start on that day in the period before, never in both."""
    _customers(db, catalog, clock)
    clock.advance(timedelta(days=2))
    start = datetime(2025, 1, 10, 19, 40, tzinfo=UTC)
    period = Period(start, start + timedelta(days=14))
    uses = {
        "early": (datetime(2025, 1, 3, 9, tzinfo=UTC), 5),  # the period before
        "same-day": (datetime(2025, 1, 10, 10, tzinfo=UTC), 7),  # before the start, that day
        "after": (datetime(2025, 1, 10, 19, 45, tzinfo=UTC), 11),  # in the period
    }
    events = [
        {"id": i, "customer": "org_a", "meter": "runs", "value": v, "timestamp": at.isoformat()}
        for i, (at, v) in uses.items()
    ]
    assert record_usage(db=db, catalog=catalog, clock=clock, events=events).accepted == 3
    deps = _deps(db, catalog, clock)

    def chart(shown: Period) -> list[tuple[datetime, int]]:
        history = customer_billing.period_daily_usage(
            deps, customer_id="org_a", period=shown, used={"runs": None}
        )
        return history["runs"].buckets

    now, before = chart(period), chart(customer_billing.previous_period(period))
    day = timedelta(days=1)
    assert len(now) == len(before) == 15  # a part day first and last
    assert now[0] == (datetime(2025, 1, 10, tzinfo=UTC), 11)
    assert sum(value for _, value in now) == 11
    assert before[0][0] == datetime(2024, 12, 27, tzinfo=UTC)
    assert dict(before)[datetime(2025, 1, 3, tzinfo=UTC)] == 5
    assert before[-1] == (datetime(2025, 1, 10, tzinfo=UTC), 7)
    assert sum(value for _, value in before) == 5 + 7
    assert [at for at, _ in now] == [now[0][0] + n * day for n in range(15)]


def test_pruning_keeps_what_is_needed_and_readers_answer_the_same(
    db: Database, catalog: Catalog, clock: FrozenClock
) -> None:
    _customers(db, catalog, clock)
    _record_months(db, catalog, clock, 5)
    clock.advance(timedelta(days=-20))  # the last month recorded is the open one
    before = _answers(db, catalog, clock)
    assert any(
        any(value for _, value in buckets) for buckets in before if isinstance(buckets, list)
    )
    everything = _event_count(db)
    open_start = clock.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # Overage of an old period not yet sent to Stripe holds its events.
    unsent = START + timedelta(days=31)
    with db.write_connection() as connection:
        connection.execute(
            sa.insert(METER_OUTBOX).values(
                customer_id="org_a",
                stripe_customer_id="cus_x",
                feature="runs",
                event_name="runs",
                period_start=unsent,
                period_end=unsent + timedelta(days=31),
                value=5,
                occurred_at=unsent,
                status="pending",
                attempts=0,
                created_at=unsent,
            )
        )

    held = maintain_usage_storage(db=db, clock=clock, settings=_settings(db, retention_days=1))
    assert held.cutoff == unsent
    kept = _event_count(db)
    assert 0 < kept < everything
    with db.engine.connect() as connection:
        oldest = connection.execute(sa.select(sa.func.min(USAGE_EVENTS.c.occurred_at))).scalar()
    assert oldest >= unsent

    with db.write_connection() as connection:
        connection.execute(sa.update(METER_OUTBOX).values(status="sent"))
    pruned = maintain_usage_storage(db=db, clock=clock, settings=_settings(db, retention_days=1))
    # The open period's events stay (voids and late events may still come); the rest go.
    assert pruned.cutoff == open_start
    with db.engine.connect() as connection:
        oldest = connection.execute(sa.select(sa.func.min(USAGE_EVENTS.c.occurred_at))).scalar()
    assert oldest >= open_start
    assert 0 < _event_count(db) < kept
    assert held.events_pruned + pruned.events_pruned == everything - _event_count(db)
    assert _answers(db, catalog, clock) == before
    # A long retention keeps everything it covers, open period or not.
    again = maintain_usage_storage(db=db, clock=clock, settings=_settings(db, retention_days=400))
    assert again.events_pruned == 0


@pytest.mark.postgres
def test_months_are_partitions_made_ahead_and_pruned_whole(
    db: Database, catalog: Catalog, clock: FrozenClock
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    _customers(db, catalog, clock)
    _record_months(db, catalog, clock, 3)  # before any partition: the default holds them
    clock.advance(timedelta(days=-20))  # in March, the last month recorded
    with db.engine.connect() as connection:
        in_default = connection.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}")
        assert in_default.scalar_one() == _event_count(db)
    made = maintain_usage_storage(db=db, clock=clock, settings=_settings(db, retention_days=40))
    assert made.partitions_made == 3  # this month and two ahead
    with db.engine.connect() as connection:
        names = [partition.name for partition in month_partitions(connection)]
        in_march = connection.exec_driver_sql('SELECT count(*) FROM "usage_events_p202503"')
        assert in_march.scalar_one() > 0  # moved out of the default partition
    assert {"usage_events_p202503", "usage_events_p202504", "usage_events_p202505"} <= set(names)
    clock.advance(timedelta(days=62))
    later = maintain_usage_storage(db=db, clock=clock, settings=_settings(db, retention_days=40))
    assert later.partitions_dropped == 1  # March, whole; older months were in the default
    with db.engine.connect() as connection:
        assert "usage_events_p202503" not in {p.name for p in month_partitions(connection)}
        ids = connection.exec_driver_sql("SELECT count(*) FROM usage_event_ids").scalar_one()
    assert ids == _event_count(db) == 0


@pytest.fixture
def before_0020(database_url: str) -> Iterator[str]:
    """A database at the migration before 0020 (whichever it is once migrations are chained)."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    previous = script.get_revision("0020").down_revision
    assert isinstance(previous, str)
    upgrade(database_url, previous)
    yield database_url


def test_the_migration_moves_existing_events_and_rolls_them_up(before_0020: str) -> None:
    database = Database(before_0020)
    rows = [
        {
            "id": f"ev_{n}",
            "customer_id": f"org_{n % 3}",
            "meter": "runs",
            "value": n,
            "occurred_at": datetime(2026, 9, 1, tzinfo=UTC) + timedelta(minutes=37 * n),
            "recorded_at": datetime(2026, 9, 1, tzinfo=UTC),
        }
        for n in range(500)
    ]
    try:
        with database.write_connection() as connection:
            connection.execute(sa.insert(USAGE_EVENTS), rows)
        upgrade(before_0020)
        assert _event_count(database) == 500
        assert _rolled_up(database) == _raw_hours(database)
        if database.engine.dialect.name == "postgresql":
            with database.engine.connect() as connection:
                names = {partition.name for partition in month_partitions(connection)}
            assert {"usage_events_p202609", "usage_events_p202610"} <= names
    finally:
        database.dispose()
