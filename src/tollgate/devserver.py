"""`tollgate dev`: the simulator, the server on SQLite, the demo catalog and data, the URLs."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from pathlib import Path

import typer
import uvicorn

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.catalog_file import example_catalog_path
from tollgate.config import ConfigError, load_settings
from tollgate.db.migrate import upgrade
from tollgate.jobs.schedule import Worker
from tollgate.services.api_keys import create_api_key
from tollgate.services.catalog import sync_catalog
from tollgate.services.customers import NewCustomer, create_customer
from tollgate.services.subscriptions import start_checkout

DEV_STRIPE_KEY = "sk_test_tollgate_dev_simulator"


def _demo_checkout(container: Container, api: str) -> str:
    """Sign up the demo customer through the customers service; return a Pro trial Checkout."""
    create_customer(
        db=container.db,
        catalog=container.catalog,
        gateway=container.stripe,
        settings=container.settings,
        clock=container.clock,
        new=NewCustomer(id="acme-inc", email="billing@acme.example", name="Acme Inc"),
    )
    session = start_checkout(
        db=container.db,
        catalog=container.catalog,
        gateway=container.stripe,
        settings=container.settings,
        customer_id="acme-inc",
        plan="pro",
        interval="month",
        success_url=f"{api}/docs?checkout=success",
        cancel_url=f"{api}/docs?checkout=canceled",
    )
    return session.url


def run_dev(*, port: int, stripe_port: int, data_dir: Path) -> None:
    """Serve everything a newcomer needs to watch Tollgate work, with no Stripe account."""
    given_key = os.environ.get("STRIPE_SECRET_KEY", "")
    if "_live_" in given_key:
        raise ConfigError("STRIPE_SECRET_KEY: a live key cannot be used with `tollgate dev`")
    # stripesim is a dev dependency wired in only here and in tests.
    from stripesim.testing import run_simulator

    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    database_url = f"sqlite:///{data_dir.resolve()}/tollgate.db"
    webhook_secret = f"whsec_{secrets.token_hex(16)}"
    with run_simulator(port=stripe_port) as stripe_sim:
        settings = load_settings(
            TOLLGATE_ENV="dev",
            TOLLGATE_DATABASE_URL=database_url,
            TOLLGATE_CATALOG=str(example_catalog_path()),
            STRIPE_SECRET_KEY=DEV_STRIPE_KEY,
            STRIPE_API_BASE=stripe_sim.url,
            STRIPE_MAX_RETRIES=1,
            STRIPE_WEBHOOK_SECRETS=webhook_secret,
            TOLLGATE_SMTP_URL=f"file://{(data_dir / 'mail').resolve()}",
        )
        upgrade(settings.database_url)
        container = build_container(settings)
        changes = sync_catalog(catalog=container.catalog, gateway=container.stripe)
        write_key = create_api_key(
            db=container.db, clock=container.clock, name="dev-write", scope="write"
        )
        read_key = create_api_key(
            db=container.db, clock=container.clock, name="dev-read", scope="read"
        )
        api = f"http://127.0.0.1:{port}"
        # The simulator sends its signed events to this server, as Stripe would in production,
        # so paying the demo checkout flips acme-inc to Pro within a second.
        with stripe_sim.sim.lock:
            for connect in (False, True):
                stripe_sim.sim.add_webhook_endpoint(
                    f"{api}/webhooks/stripe", secret=webhook_secret, connect=connect
                )
        checkout_url = _demo_checkout(container, api)
        lines = [
            "",
            "Tollgate dev is running (Ctrl-C stops it)",
            f"  API            {api}",
            f"  API docs       {api}/docs   (OpenAPI: {api}/openapi.json)",
            f"  health         {api}/healthz   ready: {api}/readyz   metrics: {api}/metrics",
            f"  Stripe (sim)   {stripe_sim.url}   key: {DEV_STRIPE_KEY}",
            f"  database       {database_url}",
            f"  catalog        {settings.catalog_path} ({len(changes)} Stripe objects synced)",
            f"  write API key  {write_key.secret}",
            f"  read API key   {read_key.secret}",
            f"  emails         .eml files in {(data_dir / 'mail').resolve()}",
            f"  demo checkout  {checkout_url}",
            "                 (acme-inc starts a 14-day Pro trial; card 4242 4242 4242 4242)",
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
        try:
            uvicorn.run(create_app(container), host="127.0.0.1", port=port, log_level="warning")
        finally:
            stop.set()
            jobs.join(timeout=10)
            container.entitlements.stop_background()
