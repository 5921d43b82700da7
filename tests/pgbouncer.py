"""PgBouncer in transaction pooling mode in front of the test PostgreSQL, on a free port.

Managed PostgreSQL offerings put such a pooler in front of the database: each transaction runs on
whichever server connection is free, so nothing may outlive a transaction. The tests run
Tollgate's PostgreSQL paths through one (Debian's `pgbouncer`; .ci/run installs it).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from stripesim.testing import free_port
from tests.conftest import POSTGRES_URL

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)
needs_pgbouncer = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
)


@dataclass(frozen=True)
class Pooled:
    """A database of the test's own, reachable directly and through PgBouncer."""

    direct_url: str
    pooled_url: str
    port: int


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; yields its direct URL and drops it afterwards.

    A database, not a schema: PgBouncer passes no `options` startup parameter (the search path
    the other PostgreSQL tests set), so the test's tables live in a database of their own.
    """
    name = f"tg_pool_{secrets.token_hex(5)}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def run_pgbouncer(direct_url: str, *, pool_size: int = 4) -> Iterator[Pooled]:
    """Run PgBouncer (transaction mode, `pool_size` server connections) in front of the database.

    Its ini and userlist are written to a directory of its own; it runs as a subprocess and is
    stopped when the block ends. PgBouncer refuses to run as root, so as root it switches to the
    `postgres` user (-u), which must be able to read the directory.
    """
    assert PGBOUNCER is not None
    url = sa.make_url(direct_url)
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="tollgate-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "userlist.txt").write_text(f'"{url.username}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"{url.database} = host={url.host} port={url.port or 5432} dbname={url.database}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {directory / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 500",
                # Sent by some clients at connect; PgBouncer would refuse the connection.
                "ignore_startup_parameters = extra_float_digits",
                "",
            ]
        )
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    command = [PGBOUNCER]
    if os.geteuid() == 0:
        command += ["-u", _unprivileged_user()]
    log = (directory / "pgbouncer.log").open("wb")
    process = subprocess.Popen([*command, str(directory / "pgbouncer.ini")], stderr=log, stdout=log)
    try:
        _wait_for_port(port, process, directory / "pgbouncer.log")
        pooled = url.set(port=port, host="127.0.0.1").render_as_string(hide_password=False)
        yield Pooled(direct_url=direct_url, pooled_url=pooled, port=port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("pgbouncer refuses to run as root and there is no postgres or nobody user")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {log.read_text(errors='replace')}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError("pgbouncer did not start listening")
