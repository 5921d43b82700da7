"""Tollgate as run in production: `tollgate serve` and `tollgate worker` processes, HAProxy.

Every process is a real subprocess with its own environment; HAProxy (Debian's package) is
configured here, on free ports. Whoever starts a process stops it: `Fleet.close()` terminates,
then kills, everything still running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from stripesim.testing import free_port

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy; .ci/run does)"
)


def process_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without Tollgate's or Stripe's settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    env.update(settings)
    return env


@dataclass
class Process:
    """One `tollgate …` subprocess, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tollgate.cli", *self.argv],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until a server answers /healthz (a worker: until it has started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.output()}")
            if self.port is None:
                if "worker running" in self.output():
                    return
            else:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become ready: {self.output()}")

    def signal(self, number: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(number)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Fleet:
    """Servers, workers and the balancer of one test, all stopped by `close()`."""

    directory: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)
    balancer: subprocess.Popen[bytes] | None = None
    balancer_port: int | None = None

    def server(self, name: str, port: int | None = None) -> Process:
        port = port or free_port()
        argv = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        process = Process(name, argv, self.env, self.directory / f"{name}.log", port)
        self.processes.append(process)
        process.start()
        return process

    def worker(self, name: str, *options: str) -> Process:
        process = Process(name, ["worker", *options], self.env, self.directory / f"{name}.log")
        self.processes.append(process)
        process.start()
        return process

    def restart(self, process: Process) -> Process:
        """Start the same command again (a server on the same port, as an orchestrator would)."""
        again = Process(process.name, process.argv, process.env, process.log, process.port)
        self.processes.append(again)
        again.start()
        return again

    def balance(self, servers: list[Process]) -> str:
        """Run HAProxy in front of `servers` (round robin, health-checked); return its URL."""
        assert HAPROXY is not None
        self.balancer_port = free_port()
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(self.balancer_port, [s.port or 0 for s in servers]))
        with (self.directory / "haproxy.log").open("ab") as out:
            self.balancer = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        url = f"http://127.0.0.1:{self.balancer_port}"
        while time.monotonic() < deadline:
            if self.balancer.poll() is not None:
                log = (self.directory / "haproxy.log").read_text(errors="replace")
                raise AssertionError(f"haproxy exited: {log}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.balancer_port)) == 0:
                    return url
            time.sleep(0.05)
        raise AssertionError("haproxy did not start")

    def close(self) -> None:
        for process in self.processes:
            if process.popen is not None and process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.stop()
        if self.balancer is not None and self.balancer.poll() is None:
            self.balancer.terminate()
            try:
                self.balancer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.balancer.kill()
                self.balancer.wait(timeout=10)


def haproxy_config(port: int, server_ports: list[int]) -> str:
    """HAProxy in front of the servers: health checks every 200 ms, a failed request re-sent.

    `retry-on conn-failure empty-response response-timeout` re-sends a request whose server
    died before answering to another one: safe for Tollgate, whose writes are idempotent on
    their ids (Stripe's event id, a usage event's id, the app's customer id).
    """
    servers = "\n".join(
        f"    server api{index} 127.0.0.1:{server_port} check"
        for index, server_port in enumerate(server_ports)
    )
    return f"""global
    maxconn 2000

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    http-reuse always
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend api
    bind 127.0.0.1:{port}
    default_backend tollgate

backend tollgate
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
{servers}
"""
