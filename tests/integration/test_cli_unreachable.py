"""Issue 18, finding 9: a database that does not answer is one line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stripesim.testing import free_port

CLOSED = f"postgresql+psycopg://tollgate:hunter2secret@127.0.0.1:{free_port()}/tollgate"


@pytest.mark.parametrize("command", [["db", "current"], ["db", "upgrade"], ["events", "list"]])
def test_an_unreachable_database_is_one_line_and_exit_2(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    env.update(TOLLGATE_ENV="test", TOLLGATE_DATABASE_URL=CLOSED, STRIPE_SECRET_KEY="")
    done = subprocess.run(
        [sys.executable, "-m", "tollgate.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the database did not answer"), lines
    assert "Traceback" not in done.stderr and "hunter2secret" not in done.stderr + done.stdout
