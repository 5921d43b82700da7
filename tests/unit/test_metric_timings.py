"""The fast paths' metrics (tollgate.metrics.Timings, RouteAnswers) set what prometheus_client's
own methods set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.registry import REGISTRY

from tollgate.metrics import HTTP_LATENCY, HTTP_REQUESTS, RouteAnswers, Timings

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 1.0)
# Below the first bound, on each bound, between bounds, past the last finite one, and zero.
AMOUNTS = (0.0, 0.0002, 0.001, 0.0011, 0.0025, 0.004, 0.005, 0.0099, 0.01, 0.5, 1.0, 1.01, 30.0)


def _samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    ]


def test_timings_set_the_buckets_and_sum_histogram_observe_sets() -> None:
    registry = CollectorRegistry()
    observed = Histogram("observed_seconds", "by observe", buckets=BUCKETS, registry=registry)
    timed = Histogram("timed_seconds", "by Timings", buckets=BUCKETS, registry=registry)
    timings = Timings(timed)
    for amount in AMOUNTS:
        observed.observe(amount)
        timings.observe(amount)
    renamed = [
        (name.replace("timed", "observed"), labels, value)
        for name, labels, value in _samples(timed)
    ]
    assert renamed == _samples(observed)


def test_route_answers_count_and_time_as_the_labelled_metrics_do() -> None:
    route = "/test/route-answers"

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    answers = RouteAnswers("POST", route, 201)
    before_count = sample(
        "tollgate_http_requests_total", {"method": "POST", "route": route, "status": "201"}
    )
    before_sum = sample("tollgate_http_request_seconds_sum", {"route": route})
    before_small = sample("tollgate_http_request_seconds_bucket", {"route": route, "le": "0.001"})
    answers.observe(0.0004)
    answers.observe(0.2)
    assert (
        sample("tollgate_http_requests_total", {"method": "POST", "route": route, "status": "201"})
        == before_count + 2
    )
    assert HTTP_REQUESTS.labels("POST", route, "201")._value.get() == before_count + 2
    assert (
        sample("tollgate_http_request_seconds_sum", {"route": route}) == before_sum + 0.0004 + 0.2
    )
    assert (
        sample("tollgate_http_request_seconds_bucket", {"route": route, "le": "0.001"})
        == before_small + 1
    )
    assert sample("tollgate_http_request_seconds_count", {"route": route}) == 2
    assert HTTP_LATENCY.labels(route)._sum.get() == before_sum + 0.0004 + 0.2
