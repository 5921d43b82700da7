"""The billing page's daily chart: days that ended are summed once per process, and an event
that arrives late for an earlier day is still shown (the period's counter says so)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import EXAMPLE_CATALOG
from tollgate.catalog_file import load_catalog_file
from tollgate.clock import FrozenClock
from tollgate.config import load_settings
from tollgate.db.unit_of_work import Database
from tollgate.services import customer_billing
from tollgate.services.customers import NewCustomer, create_customer
from tollgate.services.usage import get_usage, record_usage
from tollgate.web.charts import daily_chart

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _record(
    db: Database, catalog: Any, clock: Any, event_id: str, value: int, at: datetime
) -> None:
    event = {"id": event_id, "customer": "org_chart", "meter": "runs", "value": value}
    event["timestamp"] = at.isoformat()
    report = record_usage(db=db, catalog=catalog, clock=clock, events=[event])
    assert report.accepted == 1, report.rejected


def _chart(db: Database, catalog: Any, clock: Any) -> dict[int, int]:
    used = get_usage(
        db=db, catalog=catalog, clock=clock, customer_id="org_chart", grace=timedelta(days=7)
    )
    runs = next(meter for meter in used.meters if meter.meter == "runs")
    history = customer_billing.period_daily_usage(
        db=db,
        catalog=catalog,
        clock=clock,
        customer_id="org_chart",
        meter="runs",
        period=used.period,
        used=runs.used,
    )
    assert history.buckets[0][0] == datetime(2026, 11, 1, tzinfo=UTC)
    assert len(history.buckets) == 30
    return {start.day: value for start, value in history.buckets if value}


def test_ended_days_are_kept_and_a_late_event_still_shows(db: Database) -> None:
    catalog = load_catalog_file(EXAMPLE_CATALOG)
    clock = FrozenClock(NOW)
    settings = load_settings(TOLLGATE_ENV="test", TOLLGATE_DATABASE_URL=db.url)
    create_customer(
        db=db,
        catalog=catalog,
        gateway=None,
        settings=settings,
        clock=clock,
        new=NewCustomer(id="org_chart", email="c@example.com", offline=True, plan="pro"),
    )
    _record(db, catalog, clock, "a", 5, datetime(2026, 11, 3, 9, tzinfo=UTC))
    _record(db, catalog, clock, "b", 7, datetime(2026, 11, 10, 23, 59, tzinfo=UTC))
    _record(db, catalog, clock, "c", 2, NOW - timedelta(hours=1))
    assert _chart(db, catalog, clock) == {3: 5, 10: 7, 20: 2}
    _record(db, catalog, clock, "d", 3, NOW)  # today: read on every call
    assert _chart(db, catalog, clock) == {3: 5, 10: 7, 20: 5}
    _record(db, catalog, clock, "late", 4, datetime(2026, 11, 5, tzinfo=UTC))
    assert _chart(db, catalog, clock) == {3: 5, 5: 4, 10: 7, 20: 5}
    clock.advance(timedelta(days=1))
    _record(db, catalog, clock, "e", 1, NOW + timedelta(days=1))
    assert _chart(db, catalog, clock) == {3: 5, 5: 4, 10: 7, 20: 5, 21: 1}


def test_the_chart_puts_each_day_beside_the_same_day_of_the_previous_period() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    chart = daily_chart(
        start=start,
        current=[0, 10, 40] + [0] * 27,
        previous=[5] * 31,
        unit="runs",
        now=start + timedelta(days=2, hours=3),
    )
    assert len(chart.current) == 2  # days to come, and days without usage, draw nothing
    assert len(chart.previous) == 31
    tallest = max(chart.current, key=lambda bar: bar.height)
    assert "day 3" in tallest.title and "40 runs" in tallest.title
    assert chart.y_ticks[-1].label == "50"
    assert "50 in the first 3 days" in chart.summary and "15 in the same days" in chart.summary
