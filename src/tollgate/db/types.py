"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# SQLite's DATETIME text, as SQLAlchemy's dialect writes it (its default storage format), from
# a tuple: the dialect's format names each field, looked up in a dict made per value (about
# 13,000 instructions a datetime under callgrind; each webhook event writes two new ones).
_SQLITE_TEXT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime; SQLite forgets time zones, so store naive UTC and re-attach it."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        # On SQLite only the UTC value's wall-clock fields are written as text (by the bind
        # below, or the dialect's DATETIME for a literal, which never reads the time zone), so
        # it goes as it is: `replace(tzinfo=None)` costs about 0.8 µs in CPython 3.11.
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the dialect's DATETIME text made here from a tuple (see _SQLITE_TEXT)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        process_bind_param = self.process_bind_param

        def process(value: datetime | None) -> str | None:
            found = process_bind_param(value, dialect)
            if found is None:
                return None
            return _SQLITE_TEXT % (
                found.year,
                found.month,
                found.day,
                found.hour,
                found.minute,
                found.second,
                found.microsecond,
            )

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
