"""The three webhook receivers, each on its own PostgreSQL database, served over HTTP.

- Tollgate: `tollgate serve` (one process), its Alembic schema.
- dj-stripe (PyPI) in its own venv (bench/peers/.venv-djstripe), a minimal Django project
  written at run time (bench/peers/.djstripe-project), under gunicorn (WSGI, `gthread`
  workers, persistent database connections), its own migrations.
- @supabase/stripe-sync-engine (npm) installed into bench/peers/.sync-engine, behind
  sync_engine_server.js (one Node process, its default pool of 10 connections), its own
  migrations into the `stripe` schema.

All three verify the Stripe-Signature with the same secret and reach stripesim as their Stripe.
Each peer says how to read back what it stored: the final value per object (a customer's name,
a subscription's seats) and, where it keeps one, its record of the events it applied.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from workload import SECRET, STRIPE_KEY, Workload, harness

HERE = Path(__file__).resolve().parent
DJSTRIPE_VENV = HERE / ".venv-djstripe"
DJSTRIPE_PROJECT = HERE / ".djstripe-project"
SYNC_ENGINE_DIR = HERE / ".sync-engine"
DJSTRIPE_REQUIREMENTS = ["dj-stripe==2.11.0", "gunicorn", "psycopg[binary]>=3.3"]
SYNC_ENGINE_PACKAGES = ["@supabase/stripe-sync-engine@0.48.5", "stripe@23.2.0"]
# gunicorn's advice for a 2-core machine: 2 x cores + 1 workers; threads so that a worker
# waiting on stripesim or PostgreSQL serves another request meanwhile.
GUNICORN_WORKERS = 2 * (os.cpu_count() or 1) + 1
GUNICORN_THREADS = 4
WEBHOOK_UUID = uuid.UUID("00000000-0000-4000-8000-00000000beef")
POSTGRES = make_url(harness.POSTGRES_URL)
LOGS = HERE / ".logs"


def database_url(name: str, driver: str = "postgresql+psycopg") -> str:
    return POSTGRES.set(drivername=driver, database=name).render_as_string(hide_password=False)


@contextmanager
def _log(name: str) -> Iterator[Any]:
    """The peer's output, appended to bench/peers/.logs/<name>.log (read it when one fails)."""
    LOGS.mkdir(exist_ok=True)
    with (LOGS / f"{name}.log").open("ab") as log:
        yield log


@dataclass
class Serving:
    port: int
    path: str
    pid: int


def _run(argv: list[str], **kwargs: Any) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")


def _rows(database: str, query: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(database_url(database))
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(query), params).all())
    finally:
        engine.dispose()


class Tollgate:
    name = "tollgate"
    # Set (a folder) to serve under callgrind, instrumentation off until switched on (run.py's
    # --callgrind); each server's counts go to <folder>/tollgate.<pid>.
    callgrind: Path | None = None

    def install(self) -> None:
        pass

    def migrate(self, database: str) -> None:
        harness.upgrade(database_url(database))

    @contextmanager
    def serve(self, database: str, stripe_port: int) -> Iterator[Serving]:
        settings = {
            "STRIPE_WEBHOOK_SECRETS": SECRET,
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        }
        wrapper: tuple[str, ...] = ()
        if self.callgrind is not None:
            out = self.callgrind / "tollgate.%p"
            wrapper = (
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
            )
        with harness.server(database_url(database), wrapper=wrapper, **settings) as (base_url, pid):
            yield Serving(int(base_url.rsplit(":", 1)[1]), "/webhooks/stripe", pid)

    def final_values(self, database: str, workload: Workload) -> dict[str, Any]:
        if workload.name == "customers":
            query = "SELECT stripe_customer_id, name FROM customers"
        else:
            query = "SELECT id, seats FROM subscriptions"
        return dict(_rows(database, query))

    def applied(self, database: str, workload: Workload) -> int | None:
        query = "SELECT count(*) FROM stripe_events WHERE type = :type AND status = 'succeeded'"
        return int(_rows(database, query, type=workload.event_type)[0][0])

    def counts(self, serving: Serving) -> dict[str, float]:
        """What the server counted so far (its /metrics): objects fetched from Stripe, and
        the deliveries' outcomes (succeeded, duplicate, in_progress, failed, …)."""
        text = httpx.get(f"http://127.0.0.1:{serving.port}/metrics").text
        found: dict[str, float] = {}
        for line in text.splitlines():
            fetched = line.startswith("tollgate_stripe_refetches_total{")
            if fetched or line.startswith("tollgate_webhook_events_total{"):
                labels, value = line.rsplit(" ", 1)
                name = "fetched" if fetched else labels.split('outcome="', 1)[1].split('"')[0]
                found[name] = found.get(name, 0.0) + float(value)
        return found


_SETTINGS = """\
import os

SECRET_KEY = "peers-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "djstripe"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "peers_urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["PEERS_DATABASE"],
        "HOST": os.environ["PEERS_PG_HOST"],
        "PORT": os.environ["PEERS_PG_PORT"],
        "USER": os.environ["PEERS_PG_USER"],
        "PASSWORD": os.environ["PEERS_PG_PASSWORD"],
        "CONN_MAX_AGE": None,
    }
}
STRIPE_LIVE_MODE = False
STRIPE_TEST_SECRET_KEY = os.environ["STRIPE_SECRET_KEY"]
STRIPE_API_HOST = os.environ["STRIPE_API_HOST"]
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
SILENCED_SYSTEM_CHECKS = ["djstripe.W002"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "ERROR"},
}
"""

_URLS = """\
from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("healthz", lambda request: HttpResponse("ok")),
]
"""

_WSGI = """\
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peers_settings")
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
"""

_ENDPOINT = """\
import django

django.setup()
from djstripe.models import WebhookEndpoint

WebhookEndpoint.objects.create(
    id="we_peers_bench",
    livemode=False,
    api_version="",
    enabled_events=["*"],
    secret={secret!r},
    status="enabled",
    url="http://127.0.0.1/stripe/webhook/{uuid}/",
    djstripe_uuid="{uuid}",
)
"""


class DjStripe:
    name = "dj-stripe"

    def install(self) -> None:
        python = DJSTRIPE_VENV / "bin" / "python"
        if not (DJSTRIPE_VENV / ".installed").exists():
            _run([sys.executable, "-m", "venv", "--clear", str(DJSTRIPE_VENV)])
            _run([str(python), "-m", "pip", "install", "--quiet", *DJSTRIPE_REQUIREMENTS])
            (DJSTRIPE_VENV / ".installed").touch()
        DJSTRIPE_PROJECT.mkdir(exist_ok=True)
        (DJSTRIPE_PROJECT / "peers_settings.py").write_text(_SETTINGS)
        (DJSTRIPE_PROJECT / "peers_urls.py").write_text(_URLS)
        (DJSTRIPE_PROJECT / "peers_wsgi.py").write_text(_WSGI)

    def _env(self, database: str, stripe_port: int = 9) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(DJSTRIPE_PROJECT),
            "DJANGO_SETTINGS_MODULE": "peers_settings",
            "PEERS_DATABASE": database,
            "PEERS_PG_HOST": POSTGRES.host or "127.0.0.1",
            "PEERS_PG_PORT": str(POSTGRES.port or 5432),
            "PEERS_PG_USER": POSTGRES.username or "postgres",
            "PEERS_PG_PASSWORD": POSTGRES.password or "",
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_API_HOST": f"http://127.0.0.1:{stripe_port}",
        }

    def migrate(self, database: str) -> None:
        python = str(DJSTRIPE_VENV / "bin" / "python")
        env = self._env(database)
        _run([python, "-m", "django", "migrate", "--verbosity", "0"], env=env)
        _run([python, "-c", _ENDPOINT.format(secret=SECRET, uuid=WEBHOOK_UUID)], env=env)

    @contextmanager
    def serve(self, database: str, stripe_port: int) -> Iterator[Serving]:
        port = harness.free_port()
        argv = [
            str(DJSTRIPE_VENV / "bin" / "gunicorn"),
            "peers_wsgi:application",
            f"--bind=127.0.0.1:{port}",
            f"--workers={GUNICORN_WORKERS}",
            "--worker-class=gthread",
            f"--threads={GUNICORN_THREADS}",
            "--keep-alive=60",
            "--log-level=warning",
        ]
        env = self._env(database, stripe_port)
        health = f"http://127.0.0.1:{port}/healthz"
        with (
            _log(self.name) as log,
            harness.serving(
                argv, env, health, cwd=DJSTRIPE_PROJECT, name=self.name, output=log
            ) as pid,
        ):
            yield Serving(port, f"/stripe/webhook/{WEBHOOK_UUID}/", pid)

    def final_values(self, database: str, workload: Workload) -> dict[str, Any]:
        if workload.name == "customers":
            query = "SELECT id, stripe_data->>'name' FROM djstripe_customer"
        else:
            query = (
                "SELECT subscription_id, (stripe_data->>'quantity')::int"
                " FROM djstripe_subscriptionitem"
            )
        return dict(_rows(database, query))

    def applied(self, database: str, workload: Workload) -> int | None:
        query = "SELECT count(*) FROM djstripe_event WHERE type = :type"
        return int(_rows(database, query, type=workload.event_type)[0][0])

    def counts(self, serving: Serving) -> dict[str, float]:
        return {}  # nothing counted that compares


class SyncEngine:
    """Trusting the payloads (its default), or, `revalidate`, fetching every customer and
    subscription from Stripe (its `revalidateObjectsViaStripeApi` option)."""

    def __init__(self, revalidate: bool = False) -> None:
        self.revalidate = revalidate
        self.name = "stripe-sync-engine" + ("+fetch" if revalidate else "")

    def install(self) -> None:
        if not (SYNC_ENGINE_DIR / ".installed").exists():
            SYNC_ENGINE_DIR.mkdir(exist_ok=True)
            (SYNC_ENGINE_DIR / "package.json").write_text('{"private": true}\n')
            _run(
                ["npm", "install", "--silent", "--no-audit", "--no-fund", *SYNC_ENGINE_PACKAGES],
                cwd=SYNC_ENGINE_DIR,
            )
            (SYNC_ENGINE_DIR / ".installed").touch()

    def _env(self, database: str, stripe_port: int = 9, port: int = 0) -> dict[str, str]:
        return {
            **os.environ,
            "SYNC_ENGINE_MODULES": str(SYNC_ENGINE_DIR),
            "DATABASE_URL": database_url(database, "postgresql"),
            "PORT": str(port),
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_API_PORT": str(stripe_port),
            "REVALIDATE": "customer,subscription" if self.revalidate else "",
        }

    def migrate(self, database: str) -> None:
        _run(["node", str(HERE / "sync_engine_server.js"), "migrate"], env=self._env(database))
        if not _rows(database, "SELECT to_regclass('stripe.subscription_items')")[0][0]:
            raise RuntimeError("stripe-sync-engine's migrations did not create its tables")

    @contextmanager
    def serve(self, database: str, stripe_port: int) -> Iterator[Serving]:
        port = harness.free_port()
        argv = ["node", str(HERE / "sync_engine_server.js")]
        env = self._env(database, stripe_port, port)
        health = f"http://127.0.0.1:{port}/healthz"
        with (
            _log(self.name) as log,
            harness.serving(argv, env, health, name=self.name, output=log) as pid,
        ):
            yield Serving(port, "/webhooks", pid)

    def final_values(self, database: str, workload: Workload) -> dict[str, Any]:
        if workload.name == "customers":
            query = "SELECT id, name FROM stripe.customers"
        else:
            query = "SELECT subscription, quantity FROM stripe.subscription_items"
        return dict(_rows(database, query))

    def applied(self, database: str, workload: Workload) -> int | None:
        return None  # it keeps no record of the events it applied: upserts only

    def counts(self, serving: Serving) -> dict[str, float]:
        return {}  # nothing counted that compares


PEERS = {
    peer.name: peer for peer in (Tollgate(), DjStripe(), SyncEngine(), SyncEngine(revalidate=True))
}
