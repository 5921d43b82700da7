"""The JavaScript client (clients/js), tested by Node's test runner against a served Tollgate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import World

JS_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_javascript_client_passes_its_tests_against_tollgate(world: World) -> None:
    node = shutil.which("node")
    assert node, "Node.js 18+ is needed for the JavaScript client's tests"
    run = subprocess.run(
        [node, "--test", "test/"],
        cwd=JS_CLIENT,
        env={**os.environ, "TOLLGATE_URL": world.base_url, "TOLLGATE_API_KEY": world.key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout, run.stdout
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 5, run.stdout  # every test of the client ran
