"""One daemon thread that repeats a look until stopped (the entitlement refresher, the catalog
poller): started at most once at a time, stopped by an event its loop waits on."""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundLoop:
    """Run `loop(stop)` in a daemon thread named `name`; `loop` returns once `stop` is set."""

    def __init__(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        self.name = name
        self.loop = loop
        self.running = False  # a plain attribute: requests read it on every catalog look
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start the thread, unless it runs already."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.loop, args=(self._stop,), name=self.name, daemon=True
        )
        self.running = True
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for it (five seconds at most)."""
        thread, self._thread = self._thread, None
        self.running = False
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5)
