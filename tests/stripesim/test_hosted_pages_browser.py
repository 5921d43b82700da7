"""The hosted Checkout and Portal pages in a real headless Chromium, as a buyer uses them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stripe

from stripesim.testing import RunningSim

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


class _Landing(BaseHTTPRequestHandler):
    """The app's own pages the buyer returns to (success_url, cancel_url, return_url)."""

    def do_GET(self) -> None:
        body = f"<!doctype html><title>App</title><h1 id='landing'>{self.path}</h1>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def landing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh user data dir."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def browser_page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    page = browser.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        page.close()


def _checkout(client: stripe.StripeClient, landing: str) -> stripe.checkout.Session:
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro plan"},
        }
    )
    return client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": f"{landing}/done?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{landing}/cancel",
        }
    )


def test_buyer_pays_with_4242_and_lands_on_success_url_with_an_active_subscription(
    client: stripe.StripeClient, sim: RunningSim, landing: str, browser_page: Any
) -> None:
    session = _checkout(client, landing)
    page = browser_page
    page.goto(session.url)
    assert "Pro plan" in page.inner_text("#line-items")
    assert page.input_value("#card_number") == "4242 4242 4242 4242"
    page.fill("#email", "browser@example.com")
    page.click("#submit")
    page.wait_for_url(f"{landing}/done?session_id={session.id}")
    assert page.inner_text("#landing") == f"/done?session_id={session.id}"
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.status == "complete"
    subscription = client.v1.subscriptions.retrieve(done.subscription)
    assert subscription.status == "active"
    # The buyer then manages it in the portal: the page shows it active and cancels it.
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": done.customer, "return_url": f"{landing}/account"}
    )
    page.goto(portal.url)
    assert page.inner_text(f"#status-{subscription.id}") == "active"
    assert not page.is_visible(f"#cancel-{subscription.id}")  # a confirmation comes first
    page.click(f"#cancel-open-{subscription.id}")
    page.click(f"#cancel-{subscription.id}")
    page.wait_for_selector("#notice")
    assert "Cancels on" in page.inner_text(f"#cancels-{subscription.id}")
    assert client.v1.subscriptions.retrieve(subscription.id).cancel_at_period_end is True
    page.click("#return")
    page.wait_for_url(f"{landing}/account")


def test_declined_card_shows_stripes_error_and_stays_on_checkout(
    client: stripe.StripeClient, sim: RunningSim, landing: str, browser_page: Any
) -> None:
    session = _checkout(client, landing)
    page = browser_page
    page.goto(session.url)
    page.fill("#email", "declined@example.com")
    page.fill("#card_number", "4000 0000 0000 0002")
    page.click("#submit")
    page.wait_for_selector("#error")
    assert page.inner_text("#error") == "Your card was declined."
    assert page.url == session.url
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert client.v1.subscriptions.list().data == []
    page.click("#cancel")
    page.wait_for_url(f"{landing}/cancel")
