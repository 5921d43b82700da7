"""The simulator's own object templates: for each kind, every key Stripe sends, with its default.

Each group module writes its kinds out in full (`customers`, `billing`, `catalog`, `payments`,
`sessions`, `platform`), so `Simulator.build` starts every object from a complete shape and only
fills in what the request decides. Tests check the templates against Stripe's published example
objects and schemas in `../shared/stripe/`; nothing here is read from Stripe's files.
"""

from __future__ import annotations

from typing import Any

from stripesim.objects import billing, catalog, customers, payments, platform, sessions
from stripesim.objects.base import TEMPLATES, address, deleted, empty_list, shipping

__all__ = ["address", "deleted", "empty_list", "kinds", "new", "shipping"]

# The group modules register their kinds when imported; naming them keeps that import explicit.
_GROUPS = (billing, catalog, customers, payments, platform, sessions)


def new(kind: str) -> dict[str, Any]:
    """Return a fresh object of `kind` with every key at its default."""
    return TEMPLATES[kind]()


def kinds() -> list[str]:
    """Return every kind the simulator has a template for."""
    return sorted(TEMPLATES)
