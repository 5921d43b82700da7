"""Prometheus metrics, defined once and shared by the API, services and jobs."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "tollgate_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tollgate_http_request_seconds",
    "Time to answer an HTTP request",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STRIPE_CALLS = Counter(
    "tollgate_stripe_calls_total", "Calls made to the Stripe API", ["operation", "outcome"]
)
STRIPE_RATE_LIMIT_RETRIES = Counter(
    "tollgate_stripe_rate_limit_retries_total", "Stripe calls retried after a 429"
)
STRIPE_REFETCHES = Counter(
    "tollgate_stripe_refetches_total",
    "Objects fetched from Stripe while applying webhooks, by why the event alone was not enough",
    ["object_type", "reason"],
)
WEBHOOK_EVENTS = Counter(
    "tollgate_webhook_events_total",
    "Stripe events processed, by how processing ended (succeeded, failed, duplicate, …)",
    ["outcome"],
)
WEBHOOK_REFUSED = Counter(
    "tollgate_webhook_refused_total",
    "Signed Stripe events refused because Stripe never sends them (alert on any), by reason",
    ["reason"],
)
RECONCILE_RUNS = Counter(
    "tollgate_reconcile_runs_total", "Reconciliations with Stripe, by how they ended", ["outcome"]
)
RECONCILE_DRIFTS = Counter(
    "tollgate_reconcile_drifts_total",
    "Drifts between the mirror and Stripe found by reconciliation",
    ["kind", "object_type"],
)
RECONCILE_HEALED = Counter(
    "tollgate_reconcile_healed_total",
    "Drifts healed by applying Stripe's object through the webhook handlers",
    ["object_type"],
)
RECONCILE_LAST_DRIFTS = Gauge(
    "tollgate_reconcile_last_run_drifts", "Drifts the last finished reconciliation found", ["kind"]
)
RECONCILE_LAST_SUCCESS = Gauge(
    "tollgate_reconcile_last_success_timestamp_seconds",
    "When the last reconciliation that finished started (Unix seconds)",
)
METER_SYNC_LAG = Gauge(
    "tollgate_meter_sync_lag_seconds",
    "Age of the oldest overage not yet accepted by Stripe's meters (0 when all are sent)",
)
METER_UNITS_SENT = Counter(
    "tollgate_meter_units_sent_total", "Overage units Stripe's meters accepted", ["feature"]
)
USAGE_EVENTS = Counter(
    "tollgate_usage_events_total",
    "Usage events by outcome (accepted, duplicate, rejected)",
    ["outcome"],
)

# -- running in production (issue 23): latency of the hot paths, jobs, queues, Stripe errors ----
WEBHOOK_LATENCY = Histogram(
    "tollgate_webhook_processing_seconds",
    "Time from a Stripe delivery's arrival to its answer (verified, stored, applied, committed)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INVOICE_PAYMENTS = Counter(
    "tollgate_invoice_payments_total",
    "Invoice payments Stripe reported (invoice.paid, invoice.payment_failed), by outcome",
    ["outcome"],
)
STRIPE_ERRORS = Counter(
    "tollgate_stripe_errors_total",
    "Stripe calls that failed, by HTTP status (5xx: Stripe's side; network: no answer)",
    ["operation", "status"],
)
JOB_RUNS = Counter(
    "tollgate_job_runs_total",
    "Scheduled job runs by outcome (succeeded, failed, skipped: another worker had it)",
    ["job", "outcome"],
)
JOB_SECONDS = Histogram(
    "tollgate_job_seconds",
    "Time a scheduled job's run took",
    ["job"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOB_LAST_SUCCESS = Gauge(
    "tollgate_job_last_success_timestamp_seconds",
    "When the job last ran to the end in this worker (Unix seconds)",
    ["job"],
)
GROUP_COMMITS = Counter(
    "tollgate_group_commits_total",
    "Transactions a group-commit writer committed (Stripe deliveries, consume calls)",
    ["writer"],
)
GROUP_COMMIT_ITEMS = Counter(
    "tollgate_group_commit_items_total",
    "Items those transactions applied: divided by the commits, how many shared a commit",
    ["writer"],
)
QUEUE_DEPTH = Gauge(
    "tollgate_queue_depth",
    "Work waiting: emails and app webhooks to send, overage for Stripe, failed Stripe events",
    ["queue"],
)


class RouteAnswers:
    """A route's answers of one status: HTTP_REQUESTS and HTTP_LATENCY as the fast paths count
    them, once per request.

    The same values as `HTTP_REQUESTS.labels(method, route, status).inc()` and
    `HTTP_LATENCY.labels(route).observe(seconds)`, through the children's values directly:
    those two calls check the child each time, step through the buckets in Python, and take
    a lock per value touched (measured: ~40 % of the cost gone). The children are made once,
    here; prometheus_client's own methods stay the way for every other metric.
    """

    __slots__ = ("_bounds", "_buckets", "_count", "_sum")

    def __init__(self, method: str, route: str, status: int) -> None:
        counted = HTTP_REQUESTS.labels(method, route, str(status))
        timed = HTTP_LATENCY.labels(route)
        self._count = counted._value
        self._sum = timed._sum
        self._buckets = timed._buckets
        self._bounds = tuple(timed._upper_bounds)  # ends with +Inf: every amount has a bucket

    def observe(self, seconds: float) -> None:
        """Count one answer that took `seconds`."""
        self._count.inc(1)
        self._sum.inc(seconds)
        # The first bucket whose bound is at least `seconds`, as Histogram.observe picks it.
        self._buckets[bisect_left(self._bounds, seconds)].inc(1)
