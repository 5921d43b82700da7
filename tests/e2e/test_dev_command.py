"""`tollgate dev`, as a newcomer runs it: the simulator and server come up and answer."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from stripesim.testing import free_port

CLI = [sys.executable, "-m", "tollgate.cli"]

# One dev instance per xdist worker serves the module (module-scoped fixture); no test relies on
# another having run first on the same worker (pytest-xdist 3.8's loadgroup does not group
# under pytest 9 here: tests of one group were seen on both workers).
pytestmark = pytest.mark.xdist_group("dev-command")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}


@dataclass
class Dev:
    output: str
    api: str
    stripe_port: int
    cwd: Path

    def key(self, scope: str) -> str:
        found = re.search(rf"{scope} API key\s+(\S+)", self.output)
        assert found, self.output
        return found.group(1)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`tollgate dev` started in a directory of its own, with its default data dir."""
    cwd = tmp_path_factory.mktemp("dev")
    port, stripe_port = free_port(), free_port()
    process = subprocess.Popen(
        [*CLI, "dev", "--port", str(port), "--stripe-port", str(stripe_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
        cwd=cwd,
    )
    try:
        output = ""
        deadline = time.monotonic() + 60
        while "curl -s" not in output:
            assert process.poll() is None, output + (
                process.stdout.read() if process.stdout else ""
            )
            assert time.monotonic() < deadline, output
            output += process.stdout.readline() if process.stdout else ""
        api = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(f"{api}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        yield Dev(output, api, stripe_port, cwd)
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


def _pay_the_demo_checkout(dev: Dev) -> dict[str, Any]:
    """Pay the printed demo checkout with 4242 (once per dev instance); return acme-inc once
    Tollgate has it trialing Pro."""
    headers = {"Authorization": f"Bearer {dev.key('read')}"}
    customer = httpx.get(f"{dev.api}/v1/customers/acme-inc", headers=headers).json()
    if customer.get("status") != "trialing":
        checkout = re.search(r"demo checkout\s+(\S+)", dev.output)
        assert checkout, dev.output
        form = {"card_number": "4242424242424242", "card_expiry": "12 / 34", "card_cvc": "123"}
        paid = httpx.post(checkout.group(1), data=form)
        assert paid.status_code in (200, 303), paid.text
    deadline = time.monotonic() + 30
    while customer.get("status") != "trialing":
        assert time.monotonic() < deadline, customer
        time.sleep(0.1)
        customer = httpx.get(f"{dev.api}/v1/customers/acme-inc", headers=headers).json()
    return dict(customer)


def test_dev_serves_health_openapi_and_the_catalog(dev: Dev) -> None:
    api, key = dev.api, dev.key("read")
    assert httpx.get(f"{api}/openapi.json").json()["info"]["title"] == "Tollgate"
    catalog = httpx.get(f"{api}/v1/catalog", headers={"Authorization": f"Bearer {key}"})
    assert {plan["id"] for plan in catalog.json()["plans"]} == {
        "free",
        "pro",
        "enterprise",
        "team",
    }
    assert f"http://127.0.0.1:{dev.stripe_port}" in dev.output
    checkout = re.search(r"demo checkout\s+(\S+)", dev.output)
    assert checkout, dev.output
    page = httpx.get(checkout.group(1))
    assert page.status_code == 200
    assert "4242" in page.text
    # Paying the demo checkout reaches Tollgate as the simulator's webhooks.
    customer = _pay_the_demo_checkout(dev)
    assert customer["plan"] == "pro"
    # The billing page link it printed signs the browser in; Checkout returned there too.
    link = re.search(r"billing page\s+(\S+)", dev.output)
    assert link, dev.output
    with httpx.Client(follow_redirects=True) as browser:
        billing = browser.get(f"{link.group(1)}?checkout=success")
        assert billing.status_code == 200 and "Acme Inc" in billing.text
        assert 'id="plan-name">Pro<' in billing.text
    pricing = re.search(r"pricing table\s+(\S+)", dev.output)
    assert pricing and httpx.get(pricing.group(1)).status_code == 200


def test_other_commands_use_the_dev_instance_through_its_settings_file(dev: Dev) -> None:
    env_file = dev.cwd / ".tollgate-dev" / "env"
    assert f"settings       {env_file.resolve()}" in dev.output
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"  # it holds the dev keys
    through_flag = subprocess.run(
        [*CLI, "--dev", "db", "current"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=dev.cwd,
    )
    assert through_flag.returncode == 0, through_flag.stderr
    assert "none" not in through_flag.stdout, through_flag.stdout
    sourced = subprocess.run(
        ["bash", "-c", f"source {env_file} && {' '.join(CLI)} catalog validate"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=dev.cwd,
    )
    assert sourced.returncode == 0, sourced.stderr
    assert "ok (4 plans" in sourced.stdout
    assert not (dev.cwd / "tollgate.db").exists()


def test_a_taken_port_is_named_with_the_flag_that_moves_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [*CLI, "dev", "--port", str(port), "--stripe-port", str(free_port())],
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=tmp_path,
            timeout=60,
        )
    assert run.returncode == 2
    assert f"port {port} for Tollgate's API is taken" in run.stderr
    assert "tollgate dev --port PORT" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / ".tollgate-dev").exists()


def test_dev_checks_its_catalog_first_and_lists_every_problem(tmp_path: Path) -> None:
    plans = tmp_path / "plans.yaml"
    plans.write_text(
        "currency: usdd\ndefault_plan: free\nfeatures: {}\n"
        "plans:\n  free: {name: Free, prices: []}\n"
    )
    run = subprocess.run(
        [*CLI, "dev", "--catalog", str(plans), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 2
    assert "currency: 'usdd' is not an ISO 4217 currency code" in run.stderr
    assert not (tmp_path / ".tollgate-dev").exists()


def test_commands_never_create_a_database_they_were_not_asked_to(tmp_path: Path) -> None:
    run = subprocess.run(
        [*CLI, "events", "list"], capture_output=True, text=True, env=_clean_env(), cwd=tmp_path
    )
    assert run.returncode == 2
    assert "the database is empty (there is no file at" in run.stderr
    assert "source .tollgate-dev/env" in run.stderr
    assert not (tmp_path / "tollgate.db").exists()
    missing = subprocess.run(
        [*CLI, "--dev", "events", "list"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert missing.returncode == 2
    assert "start the dev instance with `make dev`" in missing.stderr


def test_one_clock_moves_stripe_and_tollgate_together(dev: Dev) -> None:
    key = dev.key("write")
    headers = {"Authorization": f"Bearer {key}"}
    # xdist may run this test on another worker than the first one (its own dev instance).
    _pay_the_demo_checkout(dev)
    before = httpx.get(f"{dev.api}/dev/clock", headers=headers).json()
    run = subprocess.run(
        [*CLI, "dev", "advance", "15d"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=dev.cwd,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Stripe (simulated) is at" in run.stdout
    after = httpx.get(f"{dev.api}/dev/clock", headers=headers).json()
    moved = datetime.fromisoformat(after["stripe_time"]) - datetime.fromisoformat(
        before["stripe_time"]
    )
    assert moved == timedelta(days=15)
    # Acme's 14-day Pro trial converted on the way.
    status, deadline = "", time.monotonic() + 30
    while status != "active":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
        status = httpx.get(f"{dev.api}/v1/customers/acme-inc", headers=headers).json()["status"]
    # Tollgate's clock follows: usage now is in the customer's open period, not before it.
    assert datetime.fromisoformat(after["tollgate_time"]) >= datetime.fromisoformat(
        after["stripe_time"]
    )
    customer = httpx.post(
        f"{dev.api}/v1/customers",
        headers=headers,
        json={"id": "dev-clock-org", "email": "clock@dev.example"},
    ).json()
    usage = httpx.post(
        f"{dev.api}/v1/usage",
        headers=headers,
        json={
            "events": [
                {"id": "clock-run-1", "customer": customer["id"], "meter": "runs", "value": 1}
            ]
        },
    ).json()
    assert usage["accepted"] == 1, usage
    # The page shows both clocks; its buttons accept only its own origin.
    page = httpx.get(f"{dev.api}/dev")
    assert page.status_code == 200 and "One clock" in page.text
    foreign = httpx.post(
        f"{dev.api}/dev/advance", data={"by": "1d"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    own = httpx.post(f"{dev.api}/dev/advance", data={"by": "1h"}, headers={"Origin": dev.api})
    assert own.status_code == 303
    bad = subprocess.run(
        [*CLI, "dev", "advance", "sideways"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=dev.cwd,
    )
    assert bad.returncode == 2
    assert "'sideways' is not a move (90m, 12h, 3d, 2w, 1mo, 1y)" in bad.stderr


def test_dev_prints_a_console_sign_in_that_works(dev: Dev) -> None:
    found = re.search(r"console\s+(\S+)\s+\(sign in as (\S+), password (\S+)\)", dev.output)
    assert found, dev.output
    url, name, password = found.groups()
    with httpx.Client() as browser:
        form = browser.get(f"{url}/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token, form.text
        signed = browser.post(
            f"{url}/sign-in",
            data={"csrf_token": token.group(1), "name": name, "password": password},
        )
        assert signed.status_code == 303, signed.text
        overview = browser.get(url)
        assert overview.status_code == 200 and "Overview" in overview.text
