"""Stripe's published example objects (fixtures3.json), the templates for every object we return."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import orjson


@cache
def _all() -> dict[str, Any]:
    text = resources.files("stripesim").joinpath("data/fixtures3.json").read_text()
    return json.loads(text)["resources"]


def example(kind: str) -> dict[str, Any]:
    """Return a fresh copy of Stripe's example object for `kind` (e.g. "billing.meter")."""
    return orjson.loads(orjson.dumps(_all()[kind]))


def example_keys(kind: str) -> set[str]:
    """The top-level keys Stripe's example object for `kind` has."""
    return set(_all()[kind])
