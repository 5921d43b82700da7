"""The pages' foundation: packaged stylesheet, theme from settings, headers, CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.config import ConfigError, Settings, load_settings
from tollgate.services.page_access import page_secret
from tollgate.web.csrf import CsrfRefused, check_csrf, csrf_token
from tollgate.web.pages import render_page
from tollgate.web.security import page_headers
from tollgate.web.theme import text_on


def _request(path: str = "/billing", query: bytes = b"") -> Request:
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}
    return Request(scope)


def test_stylesheet_and_theme_are_served_from_the_package(
    db: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        db.url, TOLLGATE_BRAND_COLOR="#0f766e", TOLLGATE_BRAND_FONT="Inter, sans-serif"
    )
    container = build_container(settings)
    try:
        with TestClient(create_app(container)) as api:
            css = api.get("/static/tollgate.css")
            assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
            assert "--brand" in css.text
            theme = api.get("/theme.css")
            assert theme.status_code == 200
            assert "--brand: #0f766e;" in theme.text and "--font: Inter, sans-serif;" in theme.text
            assert "--on-brand: #ffffff;" in theme.text
    finally:
        container.close()


@pytest.mark.parametrize(
    "name, value",
    [
        ("TOLLGATE_BRAND_COLOR", "red; background: url(x)"),
        ("TOLLGATE_BRAND_FONT", "x} body {display:none"),
        ("TOLLGATE_FRAME_ANCESTORS", "https://a.example; script-src *"),
        ("TOLLGATE_BRAND_LOGO_URL", "javascript:alert(1)"),
    ],
)
def test_theme_settings_refuse_what_could_break_out_of_css(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(TOLLGATE_ENV="test", **{name: value})


def test_text_on_the_brand_colour_keeps_its_contrast() -> None:
    assert text_on("#3b3bd1") == "#ffffff"
    assert text_on("#fde047") == "#111827"


def test_pages_forbid_framing_unless_the_operator_allows_an_app() -> None:
    closed = page_headers(load_settings(TOLLGATE_ENV="test"))
    assert "frame-ancestors 'none'" in closed["Content-Security-Policy"]
    assert closed["X-Frame-Options"] == "DENY"
    assert "unsafe-inline" not in closed["Content-Security-Policy"]
    assert "script-src 'self'" in closed["Content-Security-Policy"]
    opened = page_headers(
        load_settings(TOLLGATE_ENV="test", TOLLGATE_FRAME_ANCESTORS="https://app.example")
    )
    assert "frame-ancestors https://app.example" in opened["Content-Security-Policy"]
    assert "X-Frame-Options" not in opened


def test_csrf_token_belongs_to_one_session() -> None:
    secret = b"k" * 32
    token = csrf_token(secret, "session-a")
    check_csrf(secret, "session-a", token)
    with pytest.raises(CsrfRefused):
        check_csrf(secret, "session-b", token)
    with pytest.raises(CsrfRefused):
        check_csrf(secret, "session-a", None)
    with pytest.raises(CsrfRefused):
        check_csrf(b"x" * 32, "session-a", token)


def test_production_refuses_pages_without_a_secret_key() -> None:
    with pytest.raises(ConfigError, match="TOLLGATE_SECRET_KEY"):
        page_secret(load_settings(TOLLGATE_ENV="production"))
    assert page_secret(load_settings(TOLLGATE_ENV="production", TOLLGATE_SECRET_KEY="s" * 32))


def test_a_page_carries_brand_headers_and_escapes_what_it_shows() -> None:
    settings = load_settings(TOLLGATE_ENV="test", TOLLGATE_BRAND_NAME="Acme <Billing>")
    response = render_page(
        _request(),
        "message.html",
        settings=settings,
        status=401,
        title="Refused",
        message="<b>x</b>",
    )
    body = response.body.decode()
    assert response.status_code == 401
    assert "Acme &lt;Billing&gt;" in body and "&lt;b&gt;x&lt;/b&gt;" in body
    assert "/static/tollgate.css" in body and "/theme.css" in body
    assert "<script" not in body
    assert response.headers["Cache-Control"] == "no-store"
    embedded = render_page(
        _request(query=b"embed=1"), "message.html", settings=settings, title="t", message="m"
    ).body.decode()
    assert "site-header" not in embedded


def test_docs_and_redoc_load_their_files_from_tollgate_itself(
    db: Any, make_settings: Callable[..., Settings]
) -> None:
    container = build_container(make_settings(db.url))
    try:
        with TestClient(create_app(container)) as api:
            for page in ("/docs", "/redoc"):
                html = api.get(page)
                assert html.status_code == 200
                sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
                assert sources and all(s.startswith("/") for s in sources), sources
                for source in sources:
                    if source.startswith("/docs-assets/"):
                        assert api.get(source).status_code == 200, source
                assert "https://" not in html.text and "http://" not in html.text
            assert api.get("/openapi.json").json()["paths"]["/v1/customers/{customer_id}/invoices"]
    finally:
        container.close()
