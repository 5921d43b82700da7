"""Stopping on SIGTERM: stop taking work, finish what is in flight, and exit within a bound.

An orchestrator (Kubernetes, systemd, compose) sends SIGTERM, waits, then SIGKILLs. Tollgate
answers SIGTERM by taking no new work (the server closes its socket; the worker starts no new
job) and finishing what it has, for at most TOLLGATE_SHUTDOWN_GRACE seconds. Past the bound
the process exits anyway: nothing is lost by it, because nothing is acknowledged before it is
committed (a webhook's 200, a usage call's answer) and every job and outbox delivery is safe to
run again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("tollgate.shutdown")

# The exit status when the grace period ran out with work still running.
OVERRAN = 3


class GracefulStop:
    """A stop flag set by SIGTERM (or SIGINT), with a watchdog that ends the process late."""

    def __init__(self, grace_seconds: float, *, exit: Callable[[int], object] = os._exit) -> None:
        self.grace_seconds = grace_seconds
        self.event = threading.Event()
        self._exit = exit
        self._watchdog: threading.Timer | None = None

    def install(self) -> GracefulStop:
        """Set the flag on SIGTERM and SIGINT (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def request(self) -> None:
        """Stop: no new work from now on, and at most `grace_seconds` for the rest."""
        if self.event.is_set():
            return
        self.event.set()
        log.info("stopping: finishing work in flight (at most %.0f s)", self.grace_seconds)
        self._watchdog = threading.Timer(self.grace_seconds, self._overran)
        self._watchdog.daemon = True
        self._watchdog.start()

    def done(self) -> None:
        """Everything finished in time: the watchdog has nothing to do."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _on_signal(self, number: int, _frame: object) -> None:
        self.request()

    def _overran(self) -> None:
        log.error("still busy %.0f s after the stop was asked; exiting now", self.grace_seconds)
        logging.shutdown()
        self._exit(OVERRAN)
