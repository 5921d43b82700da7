"""The synced catalogs and the plan versions they brought (issue 20)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from tollgate.db.tables import CATALOG_VERSIONS, PLAN_VERSIONS, SUBSCRIPTIONS
from tollgate.domain.events import ENDED_STATUSES


def newest_version(connection: Connection) -> int | None:
    """Return the newest synced catalog's version number (None: never synced)."""
    value = connection.execute(select(func.max(CATALOG_VERSIONS.c.version))).scalar()
    return int(value) if value is not None else None


def catalog_version(connection: Connection, version: int) -> Any | None:
    """Return one synced catalog's row (version, body, fingerprint, plan_versions, source)."""
    return connection.execute(
        select(CATALOG_VERSIONS).where(CATALOG_VERSIONS.c.version == version)
    ).first()


def catalog_bodies(connection: Connection, versions: Iterable[int]) -> dict[int, str]:
    """Return the documents of the given catalog versions."""
    wanted = sorted(set(versions))
    if not wanted:
        return {}
    rows = connection.execute(
        select(CATALOG_VERSIONS.c.version, CATALOG_VERSIONS.c.body).where(
            CATALOG_VERSIONS.c.version.in_(wanted)
        )
    )
    return {int(row.version): str(row.body) for row in rows}


def plan_version_rows(connection: Connection) -> list[Any]:
    """Return every recorded plan version (plan, version, fingerprint, catalog_version)."""
    return list(
        connection.execute(
            select(PLAN_VERSIONS).order_by(PLAN_VERSIONS.c.plan, PLAN_VERSIONS.c.version)
        )
    )


def record_catalog_version(
    connection: Connection,
    *,
    body: str,
    fingerprint: str,
    plan_versions: Mapping[str, int],
    new_plan_versions: Iterable[tuple[str, int, str]],
    source: str | None,
    now: datetime,
) -> int:
    """Store a synced catalog and the plan versions it brings; return its version number."""
    result = connection.execute(
        insert(CATALOG_VERSIONS)
        .values(
            body=body,
            fingerprint=fingerprint,
            plan_versions=dict(plan_versions),
            source=source,
            synced_at=now,
        )
        .returning(CATALOG_VERSIONS.c.version)
    )
    version = int(result.scalar_one())
    rows = [
        {
            "plan": plan,
            "version": number,
            "fingerprint": digest,
            "catalog_version": version,
            "created_at": now,
        }
        for plan, number, digest in new_plan_versions
    ]
    if rows:
        connection.execute(insert(PLAN_VERSIONS), rows)
    return version


def subscribers_by_plan_version(connection: Connection) -> dict[tuple[str, int], int]:
    """Return how many live subscriptions each (plan, version) has (no version counts as 1)."""
    version = func.coalesce(SUBSCRIPTIONS.c.plan_version, 1)
    rows = connection.execute(
        select(SUBSCRIPTIONS.c.plan, version.label("version"), func.count())
        .where(SUBSCRIPTIONS.c.plan.is_not(None))
        .where(SUBSCRIPTIONS.c.status.not_in(sorted(ENDED_STATUSES)))
        .group_by(SUBSCRIPTIONS.c.plan, version)
    )
    return {(str(row[0]), int(row[1])): int(row[2]) for row in rows}
