"""Run the simulator on a real port for tests and `tollgate dev`: the SDK talks HTTP to it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from stripesim.app import create_app
from stripesim.state import Simulator
from stripesim.webhooks import WebhookDispatcher


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningSim:
    sim: Simulator
    app: Starlette
    url: str

    @property
    def webhooks(self) -> WebhookDispatcher:
        return self.app.state.webhooks


@contextlib.contextmanager
def run_simulator(sim: Simulator | None = None, *, port: int | None = None) -> Iterator[RunningSim]:
    """Serve a simulator on 127.0.0.1 in a background thread until the block ends."""
    sim = sim or Simulator()
    app = create_app(sim)
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="stripesim-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("stripesim did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    sim.base_url = url
    try:
        yield RunningSim(sim, app, url)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
