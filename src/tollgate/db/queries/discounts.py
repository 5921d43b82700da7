"""The mirrored discounts (issue 20): a coupon redeemed by a customer, with the coupon's terms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from tollgate.db.tables import DISCOUNTS


def discounts_by_id(connection: Connection, ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    """Return the stored discounts among `ids`, by id (one not fetched yet is left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = connection.execute(select(DISCOUNTS).where(DISCOUNTS.c.id.in_(wanted))).mappings()
    return {str(row["id"]): dict(row) for row in rows}
