"""Metrics, alert rules, the dashboard, JSON logs and the request id."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import orjson
import pytest
import stripe
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from stripesim.testing import RunningSim, free_port
from tests.conftest import EXAMPLE_CATALOG, REPO
from tests.integration.test_webhooks import SECRET, customer_obj, event_obj, new_id
from tests.replicas import Fleet, process_env
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.metrics import STRIPE_ERRORS
from tollgate.services.api_keys import create_api_key

PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "tollgate-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run does)"
)
API_KEY = "observability-key-0123456789abcdef"


@needs_promtool
def test_the_alert_rules_are_valid_and_fire_at_their_thresholds() -> None:
    assert PROMTOOL is not None
    for command in (
        [PROMTOOL, "check", "rules", "alerts.yml"],
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(command, cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def _names_in(text: str) -> set[str]:
    return set(re.findall(r"\btollgate_[a-z_]+", text))


def _exported() -> set[str]:
    names = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
    return names


def test_every_metric_the_alerts_and_the_dashboard_read_is_exported() -> None:
    used = _names_in((PROMETHEUS / "alerts.yml").read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used |= _names_in("\n".join(exprs))
    # Samples of labelled metrics appear once a label is used; the families are always there.
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in _exported()}
    missing = {n for n in used if re.sub(r"_(bucket|count|sum|total)$", "", n) not in families}
    assert not missing, missing
    assert len(dashboard["panels"]) >= 10


class Delivering(NamedTuple):
    """A container taking Stripe's deliveries, a write key's header, and a signed delivery."""

    container: Container
    headers: dict[str, str]
    body: bytes
    signature: str


@pytest.fixture
def delivering(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Delivering]:
    container = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET))
    key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
    body = orjson.dumps(event_obj("customer.created", customer_obj(new_id("cus"))))
    signature = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    try:
        yield Delivering(container, {"Authorization": f"Bearer {key.secret}"}, body, signature)
    finally:
        container.close()


def test_every_answer_carries_a_request_id_and_a_good_given_one_is_kept(
    delivering: Delivering,
) -> None:
    container, headers, body, signature = delivering
    with TestClient(create_app(container)) as api:
        answers = [
            api.get("/healthz"),
            api.get("/v1/customers/nobody", headers=headers),  # FastAPI's stack, a 404
            api.get("/v1/customers/nobody/entitlements/runs", headers=headers),  # short way
            api.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}),
        ]
        ids = [answer.headers["x-request-id"] for answer in answers]
        assert all(re.fullmatch(r"req_[0-9a-f]{20}", found) for found in ids), ids
        assert len(set(ids)) == len(ids)
        kept = api.get("/healthz", headers={"X-Request-Id": "lb-7f3a9c2e-0001"})
        assert kept.headers["x-request-id"] == "lb-7f3a9c2e-0001"
        bad = api.get("/healthz", headers={"X-Request-Id": "<script>"})
        assert bad.headers["x-request-id"].startswith("req_")
        metrics = api.get("/metrics").text
        assert "tollgate_webhook_processing_seconds_count" in metrics


def test_group_commits_are_counted_by_writer_with_their_items(
    delivering: Delivering,
) -> None:
    container, headers, body, signature = delivering
    writers = ("tollgate-webhooks", "tollgate-consume")

    def counted() -> list[float]:
        return [
            REGISTRY.get_sample_value(f"tollgate_group_{name}_total", {"writer": writer}) or 0.0
            for writer in writers
            for name in ("commits", "commit_items")
        ]

    before = counted()
    with TestClient(create_app(container)) as api:
        customer = {"id": "acme", "email": "a@acme.example", "offline": True, "plan": "pro"}
        assert api.post("/v1/customers", json=customer, headers=headers).status_code == 201
        for n in range(3):  # one at a time: three commits of one item each
            use = {"feature": "runs", "quantity": 1, "id": f"c-{n}"}
            consumed = api.post("/v1/customers/acme/consume", json=use, headers=headers)
            assert consumed.json()["allowed"] is True
        delivered = api.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
        )
        assert delivered.status_code == 200
        metrics = api.get("/metrics").text
    grown = [now - then for now, then in zip(counted(), before, strict=True)]
    assert grown == [1, 1, 3, 3]  # webhooks: 1 commit, 1 event; consume: 3 commits, 3 calls
    assert 'tollgate_group_commit_items_total{writer="tollgate-consume"}' in metrics


def test_a_stripe_5xx_is_counted_by_status(
    db: Database, make_settings: Callable[..., Settings], sim: RunningSim
) -> None:
    container = build_container(make_settings(db.url, STRIPE_MAX_RETRIES=0))
    key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
    before = _stripe_5xx()
    # Stripe answers 500 three times (the SDK's retries included).
    sim.sim.faults.queued.extend({"path": "/v1/customers", "kind": "500"} for _ in range(3))
    try:
        with TestClient(create_app(container)) as api:
            answer = api.post(
                "/v1/customers",
                json={"id": "acme", "email": "b@acme.example"},
                headers={"Authorization": f"Bearer {key.secret}"},
            )
            assert answer.status_code >= 500
    finally:
        sim.sim.faults.queued.clear()
        container.close()
    assert _stripe_5xx() > before


def _stripe_5xx() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == STRIPE_ERRORS._name
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["status"].startswith("5")
    )


def test_json_logs_are_one_object_a_line_with_ids_and_no_secrets(
    migrated_url: str, sim: RunningSim, tmp_path: Path
) -> None:
    env = process_env(
        {
            "TOLLGATE_ENV": "test",
            "TOLLGATE_DATABASE_URL": migrated_url,
            "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
            "TOLLGATE_API_KEYS": f"app:write:{API_KEY}",
            "TOLLGATE_LOG_FORMAT": "json",
            "TOLLGATE_SMTP_URL": f"file://{tmp_path / 'mail'}",
            "STRIPE_SECRET_KEY": "sk_test_json_logs_secret_value",
            "STRIPE_API_BASE": sim.url,
            "STRIPE_WEBHOOK_SECRETS": SECRET,
        }
    )
    fleet = Fleet(tmp_path, env)
    metrics_port = free_port()
    try:
        server = fleet.server("api")
        worker = fleet.worker("worker", "--metrics-port", str(metrics_port))
        server.wait_ready()
        worker.wait_ready()
        event = event_obj("customer.created", customer_obj(new_id("cus"), app_id="acme"))
        body = orjson.dumps(event)
        signature = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
        answer = httpx.post(
            f"{server.url}/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": signature, "X-Request-Id": "trace-webhook-0001"},
        )
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "trace-webhook-0001"
        auth = {"Authorization": f"Bearer {API_KEY}"}
        pro = {"id": "bigco", "email": "b@bigco.example", "offline": True, "plan": "pro"}
        assert httpx.post(f"{server.url}/v1/customers", json=pro, headers=auth).is_success
        # 85,000 of 100,000 included runs: the 80 % email is queued by this request.
        usage = httpx.post(
            f"{server.url}/v1/usage",
            json={"events": [{"id": "u1", "customer": "bigco", "meter": "runs", "value": 85_000}]},
            headers={**auth, "X-Request-Id": "trace-usage-0001"},
        )
        assert usage.status_code == 200, usage.text
        deadline = time.monotonic() + 30
        while "tollgate_job_runs_total" not in _scrape(metrics_port) or (
            "trace-usage-0001" not in worker.output()
        ):
            assert time.monotonic() < deadline, "the worker never ran its jobs or sent the email"
            time.sleep(0.3)
        assert "tollgate_queue_depth" in _scrape(metrics_port)
    finally:
        fleet.close()
    server_lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    applied = [line for line in server_lines if line.get("event_id") == event["id"]]
    assert applied and applied[0]["request_id"] == "trace-webhook-0001"
    assert applied[0]["customer_id"] == "acme" and applied[0]["duration_ms"] >= 0
    access = [line for line in server_lines if line.get("route") == "/v1/usage"]
    assert access and access[0]["request_id"] == "trace-usage-0001"
    assert access[0]["status"] == 200
    for log in (server.output(), worker.output()):
        for secret in (API_KEY, SECRET, "sk_test_json_logs_secret_value"):
            assert secret not in log
    worker_lines = [json.loads(line) for line in worker.output().splitlines() if line[:1] == "{"]
    # The worker's line about the email carries the id of the request that queued it.
    sent = [line for line in worker_lines if line.get("request_id") == "trace-usage-0001"]
    assert sent and sent[0]["customer_id"] == "bigco" and sent[0]["message"].endswith(": sent")


def _scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return ""
