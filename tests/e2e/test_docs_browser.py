"""Issue 18, finding 8: /docs in a real Chromium, loading nothing from outside the server.

The page must render the API's description from the packaged Swagger UI under its own
Content-Security-Policy (no CSP violation, no request to another host), and its Authorize
dialog must offer the bearer scheme so an operator can send a key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import serve
from tollgate.bootstrap import Container

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
SHOTS = Path(os.environ.get("TOLLGATE_SCREENSHOTS", "/tmp/tollgate-screenshots"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            opened = context.new_page()
            opened.set_default_timeout(15_000)
            yield opened
        finally:
            context.close()


@pytest.mark.parametrize("width", [1280, 375])
def test_docs_render_from_the_server_alone_and_offer_a_bearer_key(
    container: Container, page: Any, width: int
) -> None:
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    page.set_viewport_size({"width": width, "height": 900})
    with serve(container) as base:
        answer = page.goto(f"{base}/docs")
        assert answer.status == 200
        assert "script-src 'self' 'sha256-" in answer.headers["content-security-policy"]
        page.wait_for_selector(".swagger-ui .info .title")
        assert "Tollgate" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"docs-{width}.png"), full_page=False)
        page.click("button.authorize")
        page.wait_for_selector(".auth-container")
        dialog = page.inner_text(".auth-container")
        assert "apiKey" in dialog and "http, Bearer" in dialog
        page.screenshot(path=str(SHOTS / f"docs-authorize-{width}.png"), full_page=False)
    hosts = {urlparse(url).netloc for url in requested if url.startswith("http")}
    assert hosts == {urlparse(base).netloc}, hosts
    assert not [text for text in console if "Content Security Policy" in text], console
