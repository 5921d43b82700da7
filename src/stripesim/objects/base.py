"""The template registry, and the small shapes several kinds share (an address, a list)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Template = Callable[[], dict[str, Any]]
TEMPLATES: dict[str, Template] = {}


def template(kind: str) -> Callable[[Template], Template]:
    """Register `make()` as the template of objects of `kind` (its `object` value)."""

    def register(make: Template) -> Template:
        TEMPLATES[kind] = make
        return make

    return register


def address(given: Any = None) -> dict[str, Any]:
    """Return an Address: Stripe always sends all six keys, null when unset."""
    shape: dict[str, Any] = {
        "city": None,
        "country": None,
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    if isinstance(given, dict):
        shape.update({key: given.get(key) or None for key in shape if key in given})
    return shape


def shipping(given: Any) -> dict[str, Any] | None:
    """Return a shipping hash (address, name, phone), or None when not given."""
    if not isinstance(given, dict) or not given:
        return None
    return {
        "address": address(given.get("address")),
        "name": given.get("name") or None,
        "phone": given.get("phone") or None,
    }


def deleted(kind: str, object_id: str) -> dict[str, Any]:
    """Return what Stripe answers for a deleted object: its id, kind and `deleted: true`."""
    return {"id": object_id, "object": kind, "deleted": True}


def empty_list(url: str) -> dict[str, Any]:
    """Return an embedded list with nothing in it yet."""
    return {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": url}
