"""`tollgate doctor`: is this deployment able to work? One line per check, from settings alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from tollgate.bootstrap import Container
from tollgate.clock import Clock
from tollgate.db.migrate import current_revision, head_revision
from tollgate.db.queries.health import last_stripe_event_received, server_version
from tollgate.services.catalog import diff_catalog

Status = Literal["ok", "warn", "fail", "skip"]
WEBHOOK_PATH = "/webhooks/stripe"


@dataclass(frozen=True)
class Check:
    """One check's outcome: a name, ok/warn/fail/skip, and what was found (never a secret)."""

    name: str
    status: Status
    detail: str


def run_checks(app: Container, *, clock: Clock, public_url: str | None = None) -> Iterator[Check]:
    """Check configuration, database, migrations, Redis, Stripe, webhooks and catalog in turn.

    A check that cannot run because an earlier one failed is skipped, with the reason.
    """
    yield _guard("configuration", lambda: _configuration(app))
    database = _guard("database", lambda: _database(app))
    yield database
    if database.status == "fail":
        yield Check("migrations", "skip", "the database is unreachable")
    else:
        yield _guard("migrations", lambda: _migrations(app))
    yield _guard("redis", lambda: _redis(app))
    stripe = _guard("stripe", lambda: _stripe(app))
    yield stripe
    if stripe.status in ("fail", "skip"):
        yield Check("webhooks", "skip", "Stripe is not reachable")
        yield Check("catalog", "skip", "Stripe is not reachable")
        return
    yield _guard("webhooks", lambda: _webhooks(app, clock, public_url, database.status != "fail"))
    yield _guard("catalog", lambda: _catalog(app))


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as error:  # a check that raises has failed, with the reason
        return Check(name, "fail", f"{type(error).__name__}: {_first_line(error)}")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def _configuration(app: Container) -> Check:
    settings = app.settings
    catalog = app.catalog  # raises with the problems when the file is missing or wrong
    plans = len(catalog.plans)
    where = f"catalog {settings.catalog_path} ({plans} plans), env {settings.env}"
    if settings.env != "production":
        return Check("configuration", "warn", f"{where}; TOLLGATE_ENV is not production")
    return Check("configuration", "ok", where)


def _database(app: Container) -> Check:
    missing = app.db.missing_file()
    if missing is not None:  # connecting would create it; only `tollgate db upgrade` may
        return Check("database", "fail", f"no file at {missing}: run `tollgate db upgrade`")
    with app.db.engine.connect() as connection:
        version = server_version(connection)
    url = app.db.engine.url
    place = f"{url.host}:{url.port or 5432}/{url.database}" if url.host else str(url.database)
    pooler = f", pooler {app.db.pooler}" if app.db.dialect == "postgresql" else ""
    detail = f"{version} at {place}{pooler}"
    if app.db.dialect == "postgresql" and app.db.pooler == "none" and url.port == 6432:
        return Check(
            "database", "warn", f"{detail}; port 6432 is PgBouncer's: set TOLLGATE_DATABASE_POOLER"
        )
    return Check("database", "ok", detail)


def _migrations(app: Container) -> Check:
    current, head = current_revision(app.db.engine), head_revision(app.db.url)
    if current == head:
        return Check("migrations", "ok", f"at the newest, {head}")
    state = "empty" if current is None else f"at {current}"
    return Check("migrations", "fail", f"{state}, the newest is {head}: run `tollgate db upgrade`")


def _redis(app: Container) -> Check:
    counters = app.usage_counters
    if counters is None:
        return Check("redis", "skip", "not configured: usage is counted in the database")
    counters.client.ping()
    info = counters.client.info("server")
    return Check("redis", "ok", f"Redis {info.get('redis_version', '?')}, prefix {counters.prefix}")


def _stripe(app: Container) -> Check:
    settings = app.settings
    if settings.stripe_secret_key is None:
        return Check("stripe", "skip", "no STRIPE_SECRET_KEY: only offline customers work")
    key = settings.stripe_secret_key.get_secret_value()
    mode = "live" if settings.stripe_live else "test"
    kind = "restricted" if key.startswith("rk_") else "secret"
    app.stripe.webhook_endpoints()  # reachable, and the key is accepted
    where = settings.stripe_api_base or "api.stripe.com"
    detail = f"reachable at {where}, {mode}-mode {kind} key"
    if settings.stripe_live and settings.stripe_api_base:
        return Check("stripe", "warn", f"{detail}; a live key with STRIPE_API_BASE set")
    if settings.env == "production" and not settings.stripe_live:
        return Check("stripe", "warn", f"{detail}; a test key in production")
    return Check("stripe", "ok", detail)


def _webhooks(app: Container, clock: Clock, public_url: str | None, with_db: bool) -> Check:
    secrets = len(app.settings.stripe_webhook_secrets)
    if not secrets:
        return Check("webhooks", "fail", "no STRIPE_WEBHOOK_SECRETS: every delivery is refused")
    endpoints = [
        e
        for e in app.stripe.webhook_endpoints()
        if urlsplit(e.get("url", "")).path.rstrip("/") == WEBHOOK_PATH
        and (public_url is None or e["url"].startswith(public_url.rstrip("/")))
    ]
    if not endpoints:
        wanted = f"{public_url.rstrip('/')}{WEBHOOK_PATH}" if public_url else f"…{WEBHOOK_PATH}"
        return Check("webhooks", "fail", f"no endpoint for {wanted} is registered at Stripe")
    enabled = [e for e in endpoints if e.get("status") == "enabled"]
    endpoint = (enabled or endpoints)[0]
    detail = f"{endpoint['id']} {endpoint['url']} {endpoint.get('status')}, {secrets} secret(s)"
    if with_db:
        with app.db.engine.connect() as connection:
            last = last_stripe_event_received(connection)
        detail += f", last signed event {_ago(clock.now(), last)}"
    return Check("webhooks", "ok" if enabled else "fail", detail)


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _catalog(app: Container) -> Check:
    changes = diff_catalog(catalog=app.catalog, gateway=app.stripe)
    if not changes:
        return Check("catalog", "ok", "Stripe matches the catalog")
    return Check(
        "catalog", "warn", f"{len(changes)} change(s) not in Stripe: run `tollgate catalog sync`"
    )
