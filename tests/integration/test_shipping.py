"""The image recipe and the compose demo: what can be checked without a container engine.

There is no Docker or Podman engine where the tests run, so the image is not built here. What
the image does at start is tested directly: its entrypoint, run as several replicas at once.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_CATALOG, REPO
from tests.pgbouncer import fresh_database
from tests.replicas import process_env
from tollgate.db.migrate import head_revision

CONTAINERFILE = REPO / "Containerfile"
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
COMPOSE = REPO / "deploy" / "compose.yaml"


def test_the_image_is_multi_stage_unprivileged_and_health_checked() -> None:
    recipe = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", recipe, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build"
    runtime = recipe.split("\nFROM ", 2)[2]
    assert re.search(r"^USER 10001", runtime, re.MULTILINE), "the server must not run as root"
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert 'ENTRYPOINT ["tollgate-entrypoint"]' in runtime
    for copied in re.findall(r"^COPY (?!--)(\S+)", recipe, re.MULTILINE):
        assert (REPO / copied).exists(), f"{copied} is copied into the image but does not exist"


def test_the_compose_demo_runs_every_piece_against_the_simulator() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "stripesim", "api", "worker"}
    api = services["api"]
    assert api["deploy"]["replicas"] == 2
    assert api["environment"]["STRIPE_API_BASE"] == "http://stripesim:12111"
    webhook = next(a for a in services["stripesim"]["command"] if a.startswith("--webhook="))
    assert webhook == "--webhook=http://api:8000/webhooks/stripe"
    secret = api["environment"]["STRIPE_WEBHOOK_SECRETS"]
    assert f"--webhook-secret={secret}" in services["stripesim"]["command"]
    assert services["worker"]["command"][0] == "worker"
    assert int(api["stop_grace_period"].rstrip("s")) > 20  # above TOLLGATE_SHUTDOWN_GRACE


@pytest.mark.postgres
def test_replicas_starting_at_once_through_the_entrypoint_migrate_once(tmp_path: Path) -> None:
    # As several containers would: each runs the entrypoint, which migrates, then its command
    # (here `db current`, standing in for `serve`, so the test needs no ports).
    bin_dir = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
    with fresh_database() as url:
        env = process_env(
            {
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "TOLLGATE_ENV": "test",
                "TOLLGATE_DATABASE_URL": url,
                "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
                "TOLLGATE_MIGRATE_ON_START": "true",
            }
        )
        replicas = [
            subprocess.Popen(
                ["sh", str(ENTRYPOINT), "db", "current"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            for _ in range(3)
        ]
        try:
            outputs = [replica.communicate(timeout=180) for replica in replicas]
        finally:
            for replica in replicas:
                if replica.poll() is None:
                    replica.kill()
                    replica.wait()
        head = head_revision(url)
        for replica, (out, err) in zip(replicas, outputs, strict=True):
            assert replica.returncode == 0, err
            assert "database at head" in out
            assert f"current: {head}" in out


def test_the_entrypoint_does_not_migrate_for_other_commands_unless_asked(tmp_path: Path) -> None:
    bin_dir = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
    url = f"sqlite:///{tmp_path / 'entry.db'}"
    env = process_env(
        {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "TOLLGATE_ENV": "test",
            "TOLLGATE_DATABASE_URL": url,
            "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
        }
    )
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "database at head" not in done.stdout
    assert "current: none" in done.stdout
