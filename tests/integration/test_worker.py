"""The schedule and `tollgate worker`: each job runs when due, and one failure stops no other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stripesim.testing import RunningSim
from tollgate.bootstrap import Container, build_container
from tollgate.cli import app
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.migrate import upgrade
from tollgate.db.unit_of_work import Database
from tollgate.jobs.schedule import SCHEDULE, Job, Worker

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.yaml"


@pytest.fixture
def frozen_app(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = build_container(
        make_settings(db.url), clock=FrozenClock(datetime(2026, 11, 20, tzinfo=UTC))
    )
    yield built
    built.close()


def test_each_job_runs_when_its_interval_has_passed(frozen_app: Container) -> None:
    clock = frozen_app.clock
    assert isinstance(clock, FrozenClock)
    worker = Worker(frozen_app)
    assert set(worker.run_due()) == {job.name for job in SCHEDULE}
    assert worker.run_due() == {}
    clock.advance(timedelta(minutes=1))
    every_minute = {job.name for job in SCHEDULE if job.every <= timedelta(minutes=1)}
    assert "retry_failed_webhooks" in every_minute
    assert "apply_pending_plan_changes" not in every_minute
    assert set(worker.run_due()) == every_minute
    clock.advance(timedelta(minutes=1))
    every_two = {job.name for job in SCHEDULE if job.every <= timedelta(minutes=2)}
    assert set(worker.run_due()) == every_two | {"apply_pending_plan_changes"}


def test_a_failing_job_does_not_stop_the_others(frozen_app: Container) -> None:
    ran: list[str] = []

    def broken(_: Container) -> None:
        raise RuntimeError("boom")

    schedule = (
        Job("broken", timedelta(minutes=1), broken),
        Job("fine", timedelta(minutes=1), lambda _: ran.append("fine")),
    )
    reports = Worker(frozen_app, schedule).run_due()
    assert isinstance(reports["broken"], RuntimeError)
    assert ran == ["fine"]


def test_worker_once_runs_every_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: RunningSim
) -> None:
    database_url = f"sqlite:///{tmp_path / 'worker.db'}"
    upgrade(database_url)
    for name, value in {
        "TOLLGATE_ENV": "test",
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_CATALOG": str(EXAMPLE),
        "STRIPE_SECRET_KEY": "sk_test_worker",
        "STRIPE_API_BASE": sim.url,
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["job", "what", "it", "did"]
    said = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[2:] if line.strip()}
    assert list(said) == [job.name for job in SCHEDULE]  # every job, in schedule order
    # What each did, in counts: nothing was due on an empty database.
    assert said["deliver_notifications"] == "0 sent, 0 retrying, 0 gave up, 0 skipped"
    assert said["retry_failed_webhooks"] == "0 results, 0 succeeded, 0 failed"
    assert said["expire_credits"] == "0"
