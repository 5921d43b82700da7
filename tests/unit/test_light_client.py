"""The Python client ships alone: `tollgate-client` needs httpx and nothing of the server."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"tollgate", "stripesim", "sqlalchemy", "stripe", "fastapi", "starlette", "pydantic"}


def test_importing_the_client_imports_nothing_of_the_server() -> None:
    script = (
        "import sys, tollgate_client\n"
        "tollgate_client.Tollgate, tollgate_client.CustomerView, tollgate_client.Decision\n"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "httpx" in loaded
    assert SERVER_ONLY.isdisjoint(loaded), sorted(SERVER_ONLY & set(loaded))


def test_the_client_wheel_holds_only_the_client_and_requires_only_httpx(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(REPO / "clients" / "python"),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("tollgate_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(name for name in names if name.endswith("METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    packages = {name.split("/")[0] for name in names if not name.endswith(".dist-info/")}
    assert {package for package in packages if not package.endswith(".dist-info")} == {
        "tollgate_client"
    }
    assert "tollgate_client/py.typed" in names
    assert requires[0].startswith("httpx")
    assert all(requirement.endswith('extra == "fastapi"') for requirement in requires[1:])
