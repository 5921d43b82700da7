"""The example app (`make example`) in a real browser: sign up, hit the Free limit, upgrade
through Checkout and run again, as a founder would watch it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stripesim.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
# The README's screenshots are rewritten only when asked (TOLLGATE_UPDATE_SCREENSHOTS=1), so a
# test run leaves the tree as it was; otherwise they go to a scratch folder.
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("TOLLGATE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "tollgate-screenshots"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
    pytest.mark.xdist_group("example-app"),
]


@dataclass
class Example:
    url: str
    tollgate: str
    write_key: str


def _settings(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value.strip("'")
    return values


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    cwd = tmp_path_factory.mktemp("example")
    port, tollgate_port, stripe_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "workflows" / "run.py"),
            "--port",
            str(port),
            "--tollgate-port",
            str(tollgate_port),
            "--stripe-port",
            str(stripe_port),
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: teardown stops its children too
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "make example stopped"
            assert time.monotonic() < deadline, "the example app did not start"
            try:
                if httpx.get(f"{url}/.well-known/jwks.json").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        dev = _settings(cwd / ".tollgate-dev" / "env")
        yield Example(url, dev["TOLLGATE_URL"], dev["TOLLGATE_API_KEY"])
    finally:
        process.terminate()  # run.py stops tollgate dev and the app on SIGTERM
        try:
            process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            context.close()


def test_sign_up_hit_the_free_limit_upgrade_and_run_again(example: Example, page: Any) -> None:
    page.goto(example.url)
    page.fill("#email", "founder@northwind.example")
    page.fill("#organisation", "Northwind")
    page.click("button[type=submit]")
    assert page.inner_text("#plan") == "free"
    page.fill("#name", "Nightly report")
    page.click("#create")
    assert "Workflow 'Nightly report' created." in page.inner_text("[role=status]")
    # Free allows one workflow: a second is refused with Tollgate's reason.
    page.fill("#name", "Weekly digest")
    page.click("#create")
    assert "workflow" in page.inner_text("[role=alert]").lower()
    # The organisation is the billing customer: bring it to 1 run short of Free's 1,000.
    customer = page.evaluate("document.body.dataset.org")
    headers = {"Authorization": f"Bearer {example.write_key}"}
    usage = httpx.post(
        f"{example.tollgate}/v1/usage",
        headers=headers,
        json={
            "events": [
                {"id": f"seed-{n}", "customer": customer, "meter": "runs", "value": 1}
                for n in range(999)
            ]
        },
    )
    assert usage.json()["accepted"] == 999, usage.text
    page.reload()
    page.click("button[aria-label='Run Nightly report']")
    assert "Nightly report ran." in page.inner_text("[role=status]")
    page.click("button[aria-label='Run Nightly report']")
    refused = page.inner_text("[role=alert]")
    assert "1,000" in refused or "limit" in refused.lower(), refused
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "example-limit.png"), full_page=True)
    # Upgrade through the simulator's hosted Checkout, and come back trialing Pro.
    page.click("#upgrade")
    page.wait_for_selector("#card_number")
    assert page.inner_text("#customer-email") == "founder@northwind.example"
    page.click("#submit")
    page.wait_for_url(f"{example.url}/**")
    deadline = time.monotonic() + 30
    while page.inner_text("#plan") != "pro":
        assert time.monotonic() < deadline, page.inner_text("header")
        time.sleep(0.3)
        page.reload()
    page.click("button[aria-label='Run Nightly report']")
    assert "Nightly report ran." in page.inner_text("[role=status]")
    page.fill("#name", "Weekly digest")
    page.click("#create")
    assert "Workflow 'Weekly digest' created." in page.inner_text("[role=status]")
    # Tollgate's own pages, signed in with the app's token: the pricing table marks Pro, and the
    # billing page (through a signed billing session) shows the trial.
    page.click("#plans")
    page.wait_for_url(f"{example.tollgate}/pricing")
    assert "Pro" in page.inner_text("main")
    page.screenshot(path=str(SHOTS / "example-pricing.png"), full_page=True)
    page.goto(example.url)
    page.click("#billing")
    page.wait_for_url(f"{example.tollgate}/billing")
    assert "trial" in page.inner_text("main").lower()
