"""Two workers at once (each with its own Database, as two replicas) run each job once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.jobs.locks import run_alone
from tollgate.jobs.schedule import SKIPPED, Job, Worker

NOW = datetime(2026, 11, 20, 2, tzinfo=UTC)


@pytest.fixture
def replicas(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Container, Container]]:
    clock = FrozenClock(NOW)  # shared, so both replicas agree on the time
    first = build_container(make_settings(db.url), clock=clock)
    second = build_container(make_settings(db.url), clock=clock)
    yield first, second
    first.close()
    second.close()


def test_two_workers_at_once_run_each_job_once(replicas: tuple[Container, Container]) -> None:
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def job(name: str) -> Callable[[Container], str]:
        def run(_: Container) -> str:
            with lock:
                runs[name] += 1
            time.sleep(0.2)  # long enough for the other worker to try meanwhile
            return "done"

        return run

    schedule = tuple(Job(name, timedelta(minutes=1), job(name)) for name in ("a", "b", "c"))
    workers = [Worker(app, schedule) for app in replicas]
    start = threading.Barrier(2)
    reports: list[dict[str, object]] = []

    def tick(worker: Worker) -> None:
        start.wait()
        reports.append(worker.run_due())

    for _ in range(2):
        threads = [threading.Thread(target=tick, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clock = replicas[0].clock
        assert isinstance(clock, FrozenClock)
        clock.advance(timedelta(minutes=1))

    assert runs == {"a": 2, "b": 2, "c": 2}
    outcomes = Counter(report for tick_reports in reports for report in tick_reports.values())
    assert outcomes == {"done": 6, SKIPPED: 6}


def test_a_failed_run_gives_its_interval_back(replicas: tuple[Container, Container]) -> None:
    attempts: list[str] = []

    def flaky(_: Container) -> str:
        attempts.append("try")
        if len(attempts) == 1:
            raise RuntimeError("boom")
        return "done"

    schedule = (Job("flaky", timedelta(minutes=10), flaky),)
    first, second = (Worker(app, schedule) for app in replicas)
    assert isinstance(first.run_due()["flaky"], RuntimeError)
    assert second.run_due() == {"flaky": "done"}  # not locked out for ten minutes


def test_a_running_job_is_not_started_beside_itself_on_postgres(
    replicas: tuple[Container, Container],
) -> None:
    first, second = replicas
    # SQLite is one host's file, where the interval claim alone serialises the workers.
    postgres = first.db.dialect == "postgresql"
    with run_alone(first.db, "reconcile") as alone:
        assert alone
        with run_alone(second.db, "reconcile") as other:
            assert other is not postgres
    with run_alone(second.db, "reconcile") as again:
        assert again
