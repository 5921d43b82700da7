"""`tollgate dev`, as a newcomer runs it: the simulator and server come up and answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stripesim.testing import free_port


def test_dev_serves_health_openapi_and_the_catalog(tmp_path: Path) -> None:
    port, stripe_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tollgate.cli",
            "dev",
            "--port",
            str(port),
            "--stripe-port",
            str(stripe_port),
            "--data-dir",
            str(tmp_path / "dev"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
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
        assert httpx.get(f"{api}/openapi.json").json()["info"]["title"] == "Tollgate"
        key = re.search(r"read API key\s+(\S+)", output)
        assert key, output
        catalog = httpx.get(
            f"{api}/v1/catalog", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert {plan["id"] for plan in catalog.json()["plans"]} == {
            "free",
            "pro",
            "enterprise",
            "team",
        }
        assert f"http://127.0.0.1:{stripe_port}" in output
        checkout = re.search(r"demo checkout\s+(\S+)", output)
        assert checkout, output
        page = httpx.get(checkout.group(1))
        assert page.status_code == 200
        assert "4242" in page.text
        # Paying the demo checkout reaches Tollgate as the simulator's webhooks.
        form = {"card_number": "4242424242424242", "card_expiry": "12 / 34", "card_cvc": "123"}
        paid = httpx.post(checkout.group(1), data=form)
        assert paid.status_code in (200, 303), paid.text
        customer: dict[str, object] = {}
        while customer.get("status") != "trialing":
            assert time.monotonic() < deadline, customer
            time.sleep(0.1)
            customer = httpx.get(
                f"{api}/v1/customers/acme-inc",
                headers={"Authorization": f"Bearer {key.group(1)}"},
            ).json()
        assert customer["plan"] == "pro"
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()
