"""Start the API server: refuse an un-migrated database, sync the catalog if asked, serve."""

from __future__ import annotations

import gc
import logging
import sys
from types import FrameType

import uvicorn

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import ConfigError, Settings
from tollgate.db.migrate import current_revision, head_revision
from tollgate.db.unit_of_work import Database
from tollgate.logs import configure_logging
from tollgate.services.catalog import sync_catalog
from tollgate.shutdown import GracefulStop

log = logging.getLogger("tollgate")


def require_migrated(database: Database) -> None:
    """Raise a clear error unless the schema is at the newest migration.

    A SQLite file that does not exist is not created here: only `tollgate db upgrade` (and
    `tollgate dev`) make a database.
    """
    missing = database.missing_file()
    if missing is not None:
        raise ConfigError(
            f"TOLLGATE_DATABASE_URL: the database is empty (there is no file at {missing}); "
            "run `tollgate db upgrade` first, or use the running dev instance: "
            "`source .tollgate-dev/env` (or `tollgate --dev …`)"
        )
    current, head = current_revision(database.engine), head_revision(database.url)
    if current != head:
        state = "is empty" if current is None else f"is at {current}"
        raise ConfigError(
            f"TOLLGATE_DATABASE_URL: the database {state}, the newest migration is {head}; "
            "run `tollgate db upgrade` first"
        )


def prepare(container: Container) -> None:
    """Checks and work done once before serving."""
    require_migrated(container.db)
    _ = container.catalog  # a bad catalog stops the start, with every problem listed
    # The Stripe client is made now rather than at the first event that needs Stripe: making it
    # imports a good part of the SDK (15-25 ms holding the interpreter lock, every request in
    # flight waiting meanwhile).
    container.optional_stripe()
    if container.settings.sync_catalog_on_start:
        changes = sync_catalog(
            catalog=container.read_catalog_file(),
            gateway=container.stripe,
            db=container.db,
            now=container.clock.now(),
        )
        container.live_catalog.refresh()
        log.info("catalog synced: %d change(s)", len(changes))


def run_server(settings: Settings, *, host: str, port: int) -> None:
    container = build_container(settings)
    prepare(container)
    configure_logging(settings.log_format)
    container.entitlements.start_background()
    container.live_catalog.start_background()
    # The event loop shares the interpreter with background threads (the entitlement cache's
    # refresher, the webhook writers) that release it for I/O and hashing; by default it waits up
    # to 5 ms to get it back, which shows as tail latency. 0.5 ms measured 5-14 % more webhook
    # events/s and a lower check p99 here.
    sys.setswitchinterval(0.0005)
    # SIGTERM: the watchdog starts (the process is gone TOLLGATE_SHUTDOWN_GRACE seconds later
    # whatever happens); uvicorn closes the socket (the balancer's health check fails, new
    # connections go elsewhere) and answers what is in flight (a webhook answers once committed,
    # or 5xx) for three quarters of the grace, then cancels what is left (500s); close() lets
    # the webhook writer answer what it holds, and the process exits 0. uvicorn raises the signal
    # again when it returns, for the handler it found: ours, which has nothing left to do.
    grace = container.settings.shutdown_grace_seconds
    stop = GracefulStop(grace).install()
    app = create_app(container)
    # What exists now (modules, the app, the catalog, pools: some 200,000 objects) lives as long
    # as the process: out of the collector's sight, a full collection no longer walks it. One
    # took 151 ms (every request in flight waiting) on bench/peers/run.py's workload.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        log_config=None,  # configure_logging's handler (text or JSON) serves uvicorn too
        access_log=False,
        timeout_graceful_shutdown=max(1, int(grace * 0.75)),
        # No `server: uvicorn` on every answer: it tells a prober the stack and costs uvicorn a
        # header to check and write per request (the safe headers are the Guard's).
        server_header=False,
    )
    try:
        _Server(config, stop).run()
    finally:
        container.close()
        stop.done()


class _Server(uvicorn.Server):
    """uvicorn's server, starting the shutdown watchdog on the first SIGTERM or SIGINT."""

    def __init__(self, config: uvicorn.Config, stop: GracefulStop) -> None:
        super().__init__(config)
        self._stop = stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stop.request()
        super().handle_exit(sig, frame)
