"""Stripe's published reference data in `../shared/stripe/`, read by tests and never copied here.

`fixtures3.json` holds Stripe's example object of every resource; `openapi-judge.json` holds its
response schemas (see `../shared/stripe/README.md`). A test that needs them skips with a clear
message when `../shared` is absent.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "stripe"


def _read(name: str) -> Any:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"Stripe's reference data is absent: {path} (see ../shared/stripe/README.md)")
    return _load(path)


@cache
def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def fixtures() -> dict[str, Any]:
    """Return Stripe's example objects by kind (`fixtures3.json`'s `resources`)."""
    return dict(_read("fixtures3.json")["resources"])


def judge() -> dict[str, Any]:
    """Return Stripe's response schemas (`openapi-judge.json`)."""
    return dict(_read("openapi-judge.json"))


def example(kind: str) -> dict[str, Any]:
    """Return a fresh copy of Stripe's example object for `kind` (e.g. "billing.meter")."""
    return dict(orjson.loads(orjson.dumps(fixtures()[kind])))


def example_keys(kind: str) -> set[str]:
    """Return the top-level keys of Stripe's example object for `kind`."""
    return set(fixtures()[kind])
