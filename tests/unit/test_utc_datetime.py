"""UTC datetime columns: an aware instant is stored as UTC and read back aware, on SQLite as the
naive UTC text SQLAlchemy's DATETIME writes (the column's bind writes that text itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError

from tollgate.db.types import UTCDateTime

PARIS = timezone(timedelta(hours=1))
_TABLE = sa.Table("stamps", sa.MetaData(), sa.Column("at", UTCDateTime()))


def _bound(dialect: sa.engine.Dialect, value: datetime) -> object:
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process(value)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 7, 4, 5, 6, 789, tzinfo=UTC),
        datetime(2026, 12, 7, 5, 5, 6, 789, tzinfo=PARIS),  # the same instant
    ],
)
def test_sqlite_stores_the_utc_wall_clock_as_text(value: datetime) -> None:
    assert _bound(sqlite.dialect(), value) == "2026-12-07 04:05:06.000789"


def test_postgresql_takes_the_aware_utc_instant() -> None:
    bound = _bound(postgresql.dialect(), datetime(2026, 12, 7, 5, 5, 6, tzinfo=PARIS))
    assert bound == datetime(2026, 12, 7, 4, 5, 6, tzinfo=UTC)
    assert isinstance(bound, datetime) and bound.tzinfo is UTC


def test_sqlite_reads_back_the_instant_in_utc() -> None:
    engine = sa.create_engine("sqlite://")
    _TABLE.metadata.create_all(engine)
    value = datetime(2026, 12, 7, 5, 5, 6, 789, tzinfo=PARIS)
    with engine.begin() as connection:
        connection.execute(_TABLE.insert(), {"at": value})
        assert connection.exec_driver_sql("SELECT at FROM stamps").scalar_one() == (
            "2026-12-07 04:05:06.000789"
        )
        found = connection.execute(sa.select(_TABLE.c.at)).scalar_one()
        where = sa.select(sa.func.count()).where(_TABLE.c.at == value)
        assert connection.execute(where).scalar_one() == 1
    assert found == value and found.tzinfo is UTC


def test_a_naive_datetime_is_refused() -> None:
    engine = sa.create_engine("sqlite://")
    _TABLE.metadata.create_all(engine)
    with engine.begin() as connection, pytest.raises(StatementError, match="naive datetime"):
        connection.execute(_TABLE.insert(), {"at": datetime(2026, 12, 7, 4, 5, 6)})


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 2, 3, 4, 5, 6, tzinfo=PARIS),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ],
)
def test_sqlite_text_is_the_dialects_own(value: datetime) -> None:
    """The text is what SQLAlchemy's SQLite DATETIME writes for the naive UTC value."""
    dialect = sqlite.dialect()
    own = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert own is not None
    naive = value.astimezone(UTC).replace(tzinfo=None)
    assert _bound(dialect, value) == own(naive)
    assert _bound(dialect, value) is not None and _bound(dialect, None) is None  # type: ignore[arg-type]
