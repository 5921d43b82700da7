"""State snapshots (save/load), the /_sim helpers, and `stripesim serve` as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import stripe

from stripesim.state import Simulator
from stripesim.testing import free_port, run_simulator


def _client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_cli", base_addresses={"api": url}, max_network_retries=0)


def test_save_and_load_round_trip_every_account_space(sim, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    customers = [client.v1.customers.create(params={"email": f"{n}@x"}).id for n in range(3)]
    product = client.v1.products.create(params={"name": "Saved"})
    account = client.v1.accounts.create(params={"type": "express"})
    connected = client.v1.customers.create(options={"stripe_account": account.id})
    sim.sim.advance(3600)
    state = tmp_path / "state.json"
    sim.sim.save(state)

    restored = Simulator(state_file=state, deliver_webhooks=False)
    assert restored.offset == sim.sim.offset
    assert restored.platform.sequence == sim.sim.platform.sequence
    with run_simulator(restored) as running:
        again = _client(running.url)
        assert [c.id for c in again.v1.customers.list().data] == customers[::-1]
        assert again.v1.products.retrieve(product.id).name == "Saved"
        listed = again.v1.customers.list(options={"stripe_account": account.id}).data
        assert [c.id for c in listed] == [connected.id]
        # New events continue the saved sequence: nothing is renumbered or lost.
        before = restored.platform.sequence
        again.v1.customers.create()
        assert restored.platform.sequence == before + 1
        assert len(again.v1.events.list(params={"limit": 100}).data) == 5


def test_sim_reset_and_clock_advance_helpers(sim, client) -> None:  # type: ignore[no-untyped-def]
    client.v1.customers.create()
    before = sim.sim.wall_time()
    advanced = httpx.post(f"{sim.url}/_sim/clock/advance", json={"seconds": 7200}).json()
    assert advanced["now"] >= before + 7200
    refused = httpx.post(f"{sim.url}/_sim/clock/advance", json={"seconds": -1})
    assert refused.status_code == 400
    assert httpx.post(f"{sim.url}/_sim/reset").json() == {"reset": True}
    assert client.v1.customers.list().data == []
    assert sim.sim.offset == 0


def test_sim_save_helper_writes_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "helper.json"
    with run_simulator(Simulator(state_file=state, deliver_webhooks=False)) as running:
        customer = _client(running.url).v1.customers.create()
        saved = httpx.post(f"{running.url}/_sim/save").json()
        assert saved == {"saved": str(state)}
        data = orjson.loads(state.read_bytes())
        assert customer.id in data["accounts"]["acct_1SimPlatform0000"]["objects"]


@pytest.fixture
def served_process(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`stripesim serve` in its own process, on a free port, with a state file."""
    port = free_port()
    state = tmp_path / "served.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripesim.cli",
            "serve",
            "--port",
            str(port),
            "--state",
            str(state),
            "--webhook",
            "http://127.0.0.1:9/unused",
            "--webhook-secret",
            "whsec_cli_test",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                httpx.get(f"{url}/v1/customers", timeout=0.5)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"stripesim serve did not start: {output!r}") from None
                time.sleep(0.05)
        yield url, state, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_stripesim_serve_answers_the_sdk_and_saves_state_on_stop(served_process) -> None:  # type: ignore[no-untyped-def]
    url, state, process = served_process
    client = _client(url)
    customer = client.v1.customers.create(params={"email": "cli@example.com"})
    assert client.v1.customers.retrieve(customer.id).email == "cli@example.com"
    # --webhook registered endpoints for platform and Connect events with the given secret.
    endpoints = client.v1.webhook_endpoints.list().data
    assert {e.url for e in endpoints} == {"http://127.0.0.1:9/unused"}
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("sk_live_x", base_addresses={"api": url}).v1.customers.list()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    saved = orjson.loads(state.read_bytes())
    assert customer.id in saved["accounts"]["acct_1SimPlatform0000"]["objects"]


def test_stripesim_serve_refuses_a_malformed_webhook_secret() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stripesim.cli",
            "serve",
            "--webhook",
            "http://x",
            "--webhook-secret",
            "nope",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"whsec_" in result.stderr
