"""The catalog a process serves: the newest synced one, swapped in whole when a sync stores one.

`catalog sync` stores the catalog it made in Stripe in `catalog_versions` (the document as
synced and each plan's version). Every process polls the newest version number (one indexed
read every `refresh_interval` seconds, off the request path in servers); a newer one is read,
parsed and versioned into a new immutable Catalog, and only then does one assignment replace
the old: a request holds one Catalog object for its whole life, so it never sees half of a
catalog. Before any sync was stored, the process serves the TOLLGATE_CATALOG file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from tollgate.catalog_file import catalog_from_data
from tollgate.db.queries import catalog_versions as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.errors import CatalogError
from tollgate.domain.plan_versions import PlanVersion, versioned_catalog
from tollgate.services.background import BackgroundLoop
from tollgate.services.catalog import earlier_plans

log = logging.getLogger("tollgate.catalog")


def read_synced_catalog(connection: Connection, version: int) -> Catalog | None:
    """Return the stored catalog `version` with its plan versions, or None if it is gone."""
    row = queries.catalog_version(connection, version)
    if row is None:
        return None
    catalog = catalog_from_data(json.loads(row.body))
    history = [
        PlanVersion(item.plan, int(item.version), item.fingerprint, int(item.catalog_version))
        for item in queries.plan_version_rows(connection)
    ]
    versions = {str(plan): int(number) for plan, number in dict(row.plan_versions).items()}
    return versioned_catalog(
        catalog, versions, earlier_plans(connection, history), catalog_version=version
    )


class LiveCatalog:
    """This process's catalog: the newest synced one, or the file before any sync."""

    def __init__(
        self,
        *,
        db: Database,
        fallback: Callable[[], Catalog],
        refresh_interval: float = 1.0,
        on_swap: Callable[[Catalog], None] | None = None,
    ) -> None:
        self.db = db
        self.fallback = fallback
        self.refresh_interval = refresh_interval
        self.on_swap = on_swap
        self._catalog: Catalog | None = None
        self._version: int | None = None
        self._next_look = 0.0
        self._lock = threading.Lock()
        self._background = BackgroundLoop("tollgate-catalog", self._poll_forever)
        self.swaps = 0

    @property
    def version(self) -> int | None:
        """The synced catalog version served (None: the file)."""
        return self._version

    def current(self) -> Catalog:
        """Return the catalog to use now (one object: keep it for the whole request)."""
        catalog = self._catalog
        if catalog is None or (
            not self._background.running and time.monotonic() >= self._next_look
        ):
            self.refresh()
            catalog = self._catalog
        assert catalog is not None
        return catalog

    def refresh(self) -> bool:
        """Look for a newer synced catalog and swap it in; return whether one was."""
        first = self._catalog is None
        if not self._lock.acquire(blocking=first):
            return False  # another thread is looking; use the catalog as it is
        try:
            self._next_look = time.monotonic() + self.refresh_interval
            loaded = self._newer()
            if loaded is None:
                if self._catalog is None:
                    self._catalog = self.fallback()
                return False
            self._catalog, self._version = loaded, loaded.version
            self.swaps += 1
        finally:
            self._lock.release()
        log.info("catalog version %s loaded", loaded.version)
        if self.on_swap is not None and not first:
            self.on_swap(loaded)
        return True

    def _newer(self) -> Catalog | None:
        if self.db.missing_file() is not None:
            return None  # no database yet: nothing was synced (and none is made here)
        try:
            with self.db.engine.connect() as connection:
                newest = queries.newest_version(connection)
                if newest is None or newest == self._version:
                    connection.rollback()
                    return None
                catalog = read_synced_catalog(connection, newest)
                connection.rollback()
                return catalog
        except SQLAlchemyError as error:
            if self._catalog is None:
                # An un-migrated database has no catalog_versions yet: serve the file.
                log.debug("no synced catalog (%s); using the file", type(error).__name__)
            else:
                log.warning("could not look for a newer catalog: %s", error)
            return None
        except (CatalogError, ValueError) as error:
            log.error("the synced catalog could not be read; keeping the current one: %s", error)
            return None

    # -- the background poller (servers) ----------------------------------------------------

    def start_background(self) -> None:
        """Poll for a newer synced catalog in a thread, so requests never wait on the look."""
        if self._background.running:
            return
        self.current()
        self._background.start()

    def stop_background(self) -> None:
        self._background.stop()

    def _poll_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except Exception:  # the next round tries again
                log.exception("catalog refresh failed")
