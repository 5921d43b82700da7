"""The billing page's daily chart: days that ended are summed once per process, and an event
that arrives late for an earlier day is still shown (the period's counter says so)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import EXAMPLE_CATALOG
from tollgate.bootstrap import Container
from tollgate.catalog_file import load_catalog_file
from tollgate.clock import FrozenClock
from tollgate.config import load_settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.metering import Period
from tollgate.services import customer_billing
from tollgate.services.customers import NewCustomer, create_customer
from tollgate.services.usage import get_usage, record_usage
from tollgate.web.charts import daily_chart

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _record(app: Container, event_id: str, value: int, at: datetime) -> None:
    event = {"id": event_id, "customer": "org_chart", "meter": "runs", "value": value}
    event["timestamp"] = at.isoformat()
    report = record_usage(db=app.db, catalog=app.catalog, clock=app.clock, events=[event])
    assert report.accepted == 1, report.rejected


def _chart(app: Container) -> dict[int, int]:
    used = get_usage(app, customer_id="org_chart")
    runs = next(meter for meter in used.meters if meter.meter == "runs")
    history = customer_billing.period_daily_usage(
        app, customer_id="org_chart", period=used.period, used={"runs": runs.used}
    )["runs"]
    assert history.buckets[0][0] == datetime(2026, 11, 1, tzinfo=UTC)
    assert len(history.buckets) == 30
    return {start.day: value for start, value in history.buckets if value}


def test_ended_days_are_kept_and_a_late_event_still_shows(db: Database) -> None:
    clock = FrozenClock(NOW)
    settings = load_settings(TOLLGATE_ENV="test", TOLLGATE_DATABASE_URL=db.url)
    catalog = load_catalog_file(EXAMPLE_CATALOG)
    app = Container(settings=settings, db=db, clock=clock, catalog_override=catalog)
    create_customer(
        app, new=NewCustomer(id="org_chart", email="c@example.com", offline=True, plan="pro")
    )
    _record(app, "a", 5, datetime(2026, 11, 3, 9, tzinfo=UTC))
    _record(app, "b", 7, datetime(2026, 11, 10, 23, 59, tzinfo=UTC))
    _record(app, "c", 2, NOW - timedelta(hours=1))
    assert _chart(app) == {3: 5, 10: 7, 20: 2}
    assert len(app.closed_days) == 1  # the ended days, kept by the container
    _record(app, "d", 3, NOW)  # today: read on every call
    assert _chart(app) == {3: 5, 10: 7, 20: 5}
    _record(app, "late", 4, datetime(2026, 11, 5, tzinfo=UTC))
    assert _chart(app) == {3: 5, 5: 4, 10: 7, 20: 5}
    clock.advance(timedelta(days=1))
    _record(app, "e", 1, NOW + timedelta(days=1))
    assert _chart(app) == {3: 5, 5: 4, 10: 7, 20: 5, 21: 1}


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


def test_the_previous_period_is_as_long_as_the_current_one() -> None:
    def before(start: datetime, end: datetime) -> tuple[datetime, datetime]:
        previous = customer_billing.previous_period(Period(start, end))
        return previous.start, previous.end

    nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert before(nov, dec) == (datetime(2026, 10, 1, tzinfo=UTC), nov)
    mar31 = datetime(2026, 3, 31, 14, tzinfo=UTC)
    assert before(mar31, datetime(2026, 4, 30, 14, tzinfo=UTC))[0] == datetime(
        2026, 2, 28, 14, tzinfo=UTC
    )
    jan = datetime(2026, 1, 15, tzinfo=UTC)
    assert before(jan, datetime(2027, 1, 15, tzinfo=UTC))[0] == datetime(2025, 1, 15, tzinfo=UTC)
    leap = datetime(2028, 2, 29, tzinfo=UTC)  # a yearly period begun on a leap day
    assert before(leap, datetime(2029, 2, 28, tzinfo=UTC))[0] == datetime(2027, 2, 28, tzinfo=UTC)
    week = datetime(2026, 5, 8, tzinfo=UTC)
    assert before(week, week + timedelta(days=7)) == (week - timedelta(days=7), week)
