"""`tollgate dev`: the simulator, the server on SQLite, the demo catalog and data, the URLs."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import threading
from pathlib import Path

import typer
import uvicorn

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.catalog_file import example_catalog_path, load_catalog_file
from tollgate.clock import AdjustableClock
from tollgate.config import ConfigError, Settings, load_settings
from tollgate.db.migrate import upgrade
from tollgate.jobs.schedule import Worker
from tollgate.services.api_keys import create_api_key
from tollgate.services.catalog import sync_catalog
from tollgate.services.customers import NewCustomer, create_customer
from tollgate.services.operators import create_operator
from tollgate.services.page_access import open_billing_link
from tollgate.services.subscriptions.checkout import start_checkout
from tollgate.stripe.gateway import StripeGateway

DEV_STRIPE_KEY = "sk_test_tollgate_dev_simulator"
# What `tollgate dev` writes for the other commands: `source` it, or run `tollgate --dev …`.
ENV_FILE = "env"


def require_free_port(port: int, flag: str, what: str) -> None:
    """Raise a one-line error naming the flag that moves `what` when `port` is taken."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"port {port} for {what} is taken (another `tollgate dev`?); "
                f"choose another with `tollgate dev {flag} PORT` (`make dev ARGS='{flag} PORT'`)"
            ) from None


def write_env_file(data_dir: Path, settings: Settings, *, api_url: str, api_key: str) -> Path:
    """Write the dev instance's settings as `export` lines; return the file's path.

    It holds the simulator's key and local API keys, so only its owner may read it.
    """
    values = {
        "TOLLGATE_ENV": "dev",
        "TOLLGATE_DATABASE_URL": settings.database_url,
        "TOLLGATE_CATALOG": str(settings.catalog_path),
        "STRIPE_SECRET_KEY": DEV_STRIPE_KEY,
        "STRIPE_API_BASE": settings.stripe_api_base or "",
        "STRIPE_WEBHOOK_SECRETS": ",".join(settings.stripe_webhook_secrets),
        "STRIPE_TEST_CLOCK": settings.stripe_test_clock or "",
        "TOLLGATE_SMTP_URL": settings.smtp_url.get_secret_value() if settings.smtp_url else "",
        "TOLLGATE_URL": api_url,
        "TOLLGATE_API_KEY": api_key,
    }
    path = (data_dir / ENV_FILE).resolve()
    path.write_text(
        "# Written by `tollgate dev`: `source` this file to point tollgate commands at it.\n"
        + "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    )
    path.chmod(0o600)
    return path


def _demo_customer(container: Container, api: str) -> tuple[str, str]:
    """Sign up the demo customer; return its billing page link and a Pro trial Checkout that
    returns to that page."""
    create_customer(
        container, new=NewCustomer(id="acme-inc", email="billing@acme.example", name="Acme Inc")
    )
    billing = open_billing_link(container, customer_id="acme-inc", base_url=api)
    session = start_checkout(
        container,
        customer_id="acme-inc",
        plan="pro",
        interval="month",
        success_url=f"{billing.url}?checkout=success",
        cancel_url=f"{billing.url}?checkout=canceled",
    )
    return billing.url, session.url


def run_dev(*, port: int, stripe_port: int, data_dir: Path, catalog: Path | None = None) -> None:
    """Serve everything a newcomer needs to watch Tollgate work, with no Stripe account."""
    given_key = os.environ.get("STRIPE_SECRET_KEY", "")
    if "_live_" in given_key:
        raise ConfigError("STRIPE_SECRET_KEY: a live key cannot be used with `tollgate dev`")
    catalog_path = (catalog or example_catalog_path()).resolve()
    load_catalog_file(catalog_path)  # every problem listed, with its path, before anything runs
    require_free_port(port, "--port", "Tollgate's API")
    require_free_port(stripe_port, "--stripe-port", "the Stripe simulator")
    # stripesim is a dev dependency wired in only here and in tests.
    from stripesim.state import Simulator
    from stripesim.testing import run_simulator

    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    database_url = f"sqlite:///{data_dir.resolve()}/tollgate.db"
    webhook_secret = f"whsec_{secrets.token_hex(16)}"
    # The seller on the simulator's hosted pages: the brand Tollgate's own pages wear.
    simulator = Simulator(business_name=os.environ.get("TOLLGATE_BRAND_NAME") or "Tollgate demo")
    with run_simulator(simulator, port=stripe_port) as stripe_sim:
        values = {
            "TOLLGATE_ENV": "dev",
            "TOLLGATE_DATABASE_URL": database_url,
            "TOLLGATE_CATALOG": str(catalog_path),
            "STRIPE_SECRET_KEY": DEV_STRIPE_KEY,
            "STRIPE_API_BASE": stripe_sim.url,
            "STRIPE_MAX_RETRIES": 1,
            "STRIPE_WEBHOOK_SECRETS": webhook_secret,
            "TOLLGATE_SMTP_URL": f"file://{(data_dir / 'mail').resolve()}",
            # The billing link printed below works for a day (in production: 15 minutes).
            "TOLLGATE_BILLING_SESSION_TTL": 86_400,
        }
        # One clock: every customer joins this test clock, and Tollgate's clock follows it
        # (`tollgate dev advance 3d`, or the buttons on /dev).
        clock = AdjustableClock()
        test_clock = StripeGateway.from_settings(load_settings(**values)).create_test_clock(
            frozen_time=clock.now(), name="tollgate dev"
        )
        settings = load_settings(**values, STRIPE_TEST_CLOCK=test_clock)
        upgrade(settings.database_url)
        container = build_container(settings, clock=clock)
        # Recorded in the database too (plan versions; `catalog sync` later reaches this server).
        changes = sync_catalog(
            catalog=container.read_catalog_file(),
            gateway=container.stripe,
            db=container.db,
            now=clock.now(),
        )
        write_key = create_api_key(
            db=container.db, clock=container.clock, name="dev-write", scope="write"
        )
        read_key = create_api_key(
            db=container.db, clock=container.clock, name="dev-read", scope="read"
        )
        api = f"http://127.0.0.1:{port}"
        # The operator console's sign-in for this instance (an admin; the database is new).
        console_password = secrets.token_urlsafe(12)
        create_operator(
            db=container.db,
            clock=container.clock,
            name="dev",
            role="admin",
            password=console_password,
        )
        # The simulator sends its signed events to this server, as Stripe would in production,
        # so paying the demo checkout flips acme-inc to Pro within a second.
        with stripe_sim.sim.lock:
            for connect in (False, True):
                stripe_sim.sim.add_webhook_endpoint(
                    f"{api}/webhooks/stripe", secret=webhook_secret, connect=connect
                )
        env_file = write_env_file(data_dir, settings, api_url=api, api_key=write_key.secret)
        billing_url, checkout_url = _demo_customer(container, api)
        lines = [
            "",
            "Tollgate dev is running (Ctrl-C stops it)",
            f"  API            {api}",
            f"  API docs       {api}/docs   (OpenAPI: {api}/openapi.json)",
            f"  health         {api}/healthz   ready: {api}/readyz   metrics: {api}/metrics",
            f"  console        {api}/console   (sign in as dev, password {console_password})",
            f"  dev page       {api}/dev   (one clock: move Stripe and Tollgate forward together;",
            "                 or `tollgate dev advance 3d`)",
            f"  Stripe (sim)   {stripe_sim.url}   key: {DEV_STRIPE_KEY}",
            f"  database       {database_url}",
            f"  catalog        {settings.catalog_path} ({len(changes)} Stripe objects synced)",
            f"  write API key  {write_key.secret}",
            f"  read API key   {read_key.secret}",
            f"  emails         .eml files in {(data_dir / 'mail').resolve()}",
            f"  settings       {env_file}: `source {env_file}` in another terminal (or run",
            "                 `tollgate --dev …`), and every tollgate command uses this instance",
            f"  demo checkout  {checkout_url}",
            "                 (acme-inc starts a 14-day Pro trial; card 4242 4242 4242 4242)",
            f"  billing page   {billing_url}",
            "                 (acme-inc's plan, usage, invoices and buttons; the link works a day)",
            f"  pricing table  {api}/pricing   (embeddable: {api}/pricing/fragment)",
            "",
            "Try:",
            f"  curl -s -H 'Authorization: Bearer {read_key.secret}' {api}/v1/catalog",
            f"  curl -s -H 'Authorization: Bearer {read_key.secret}' {api}/v1/customers/acme-inc",
            "",
        ]
        typer.echo("\n".join(lines))
        # The scheduled jobs (webhook retries, pending plan changes) run beside the server.
        stop = threading.Event()
        jobs = threading.Thread(
            target=Worker(container).run_forever, args=(stop,), name="tollgate-worker", daemon=True
        )
        jobs.start()
        container.entitlements.start_background()
        container.live_catalog.start_background()
        try:
            uvicorn.run(create_app(container), host="127.0.0.1", port=port, log_level="warning")
        finally:
            stop.set()
            jobs.join(timeout=10)
            container.entitlements.stop_background()
