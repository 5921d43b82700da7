"""`make example`: `tollgate dev` and Acme Workflows side by side, wired to each other.

Starts `tollgate dev` (the simulator, the server on SQLite, the demo catalog) trusting the
example's JWTs for its billing page, waits for its settings file, then serves the example app
with the dev instance's URL and write key. Ctrl-C stops both.

    .venv/bin/python examples/workflows/run.py [--port 8100] [--tollgate-port 8000]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so SIGTERM, like Ctrl-C, stops both children on the way out


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100, help="the example app's port")
    parser.add_argument("--tollgate-port", type=int, default=8000, help="Tollgate's API port")
    parser.add_argument("--stripe-port", type=int, default=12111, help="the simulator's port")
    options = parser.parse_args()
    app_url = f"http://127.0.0.1:{options.port}"
    settings_file = Path(".tollgate-dev/env")
    settings_file.unlink(missing_ok=True)
    env = os.environ | {
        # Tollgate's billing page accepts the example's own sign-in tokens.
        "TOLLGATE_JWT_JWKS_URL": f"{app_url}/.well-known/jwks.json",
        "TOLLGATE_JWT_ISSUER": app_url,
        "TOLLGATE_JWT_AUDIENCE": "acme-workflows",
        "TOLLGATE_JWT_CUSTOMER_CLAIM": "org_id",
        # Tollgate's pages and the simulator's hosted pages wear the app's name and colour.
        "TOLLGATE_BRAND_NAME": "Acme Workflows",
        "TOLLGATE_BRAND_COLOR": "#4338ca",
    }
    tollgate = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tollgate.cli",
            "dev",
            "--port",
            str(options.tollgate_port),
            "--stripe-port",
            str(options.stripe_port),
        ],
        env=env,
    )
    example = None
    try:
        deadline = time.monotonic() + 120
        while not settings_file.exists():
            if tollgate.poll() is not None:
                return tollgate.returncode or 1
            if time.monotonic() > deadline:
                print("tollgate dev did not start within 2 minutes", file=sys.stderr)
                return 1
            time.sleep(0.2)
        dev = _read_settings(settings_file)
        while not _answers(f"{dev['TOLLGATE_URL']}/healthz"):
            if tollgate.poll() is not None or time.monotonic() > deadline:
                return tollgate.poll() or 1
            time.sleep(0.2)
        example_env = os.environ | {
            "TOLLGATE_URL": dev["TOLLGATE_URL"],
            "TOLLGATE_API_KEY": dev["TOLLGATE_API_KEY"],
            "EXAMPLE_URL": app_url,
            "EXAMPLE_DATABASE": str(Path(".tollgate-dev/example.db").resolve()),
        }
        example = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(HERE),
                "app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(options.port),
                "--log-level",
                "warning",
            ],
            env=example_env,
        )
        print(f"\nAcme Workflows (the example app)  {app_url}\n", flush=True)
        return tollgate.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (example, tollgate):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _read_settings(path: Path) -> dict[str, str]:
    """Read the `export NAME=value` lines `tollgate dev` writes."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


if __name__ == "__main__":
    sys.exit(main())
