"""Plan versions (issue 20): which changes make a new version, and the versioned catalog.

A plan's version changes when what a subscriber pays or may use changes: its prices, its
features, its seat bounds or the credits it grants. Its name, trial or invoice terms do not
(they do not change an existing subscription). Existing subscribers keep the version they
subscribed to; new customers get the newest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import Enum
from typing import Any

from tollgate.domain.catalog import Catalog, Plan, PlanFeature

# The fields of a plan that, changed, make a new version.
VERSIONED_FIELDS = ("prices", "features", "seats", "on_start_credits")


def _canonical(value: Any) -> Any:
    """Return plain JSON data for a value; dataclass fields left at their default are omitted,
    so a field added later (with a default) does not change the fingerprint of existing plans."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for item in dataclasses.fields(value):
            current = getattr(value, item.name)
            factory = item.default_factory
            if item.default is not dataclasses.MISSING and current == item.default:
                continue
            if factory is not dataclasses.MISSING and current == factory():
                continue
            out[item.name] = _canonical(current)
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def plan_fingerprint(plan: Plan) -> str:
    """Return a digest of the plan's terms that matter to subscribers (VERSIONED_FIELDS)."""
    terms = {name: _canonical(getattr(plan, name)) for name in VERSIONED_FIELDS}
    terms["prices"] = sorted(terms["prices"], key=lambda price: json.dumps(price, sort_keys=True))
    text = json.dumps(terms, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PlanVersion:
    """A recorded version of a plan: its number, its terms' digest, the catalog that brought it."""

    plan: str
    version: int
    fingerprint: str
    catalog_version: int | None = None


def assign_plan_versions(
    catalog: Catalog, history: Sequence[PlanVersion]
) -> tuple[dict[str, int], list[PlanVersion]]:
    """Return each plan's version for this catalog, and the versions that are new.

    A plan whose terms match a recorded version gets that version back (a change undone returns
    to the version it had); otherwise the next number.
    """
    by_plan: dict[str, list[PlanVersion]] = {}
    for recorded in history:
        by_plan.setdefault(recorded.plan, []).append(recorded)
    versions: dict[str, int] = {}
    new: list[PlanVersion] = []
    for plan_id, plan in catalog.plans.items():
        digest = plan_fingerprint(plan)
        recorded_versions = by_plan.get(plan_id, [])
        match = next((item for item in recorded_versions if item.fingerprint == digest), None)
        if match is not None:
            versions[plan_id] = match.version
            continue
        number = max((item.version for item in recorded_versions), default=0) + 1
        versions[plan_id] = number
        new.append(PlanVersion(plan_id, number, digest))
    return versions, new


def versioned_catalog(
    catalog: Catalog,
    versions: Mapping[str, int],
    earlier: Mapping[str, Mapping[int, Plan]],
    *,
    catalog_version: int | None = None,
) -> Catalog:
    """Return the catalog with each plan's version set and the earlier versions attached.

    An earlier version of a plan sees the current catalog's features: a feature added since is
    off on it, one removed since is dropped, so every version answers for the same features.
    """
    plans = {
        plan_id: replace(plan, version=versions.get(plan_id, plan.version))
        for plan_id, plan in catalog.plans.items()
    }
    attached: dict[str, dict[int, Plan]] = {}
    for plan_id, by_version in earlier.items():
        if plan_id not in plans:
            continue
        for number, old in by_version.items():
            if number == plans[plan_id].version:
                continue
            features: dict[str, PlanFeature] = {}
            for feature_id, feature in catalog.features.items():
                grant = old.features.get(feature_id)
                features[feature_id] = grant if grant is not None else PlanFeature.off(feature)
            attached.setdefault(plan_id, {})[number] = replace(
                old, version=number, features=features
            )
    return replace(catalog, plans=plans, plan_versions=attached, version=catalog_version)


def version_label(plan_id: str, version: int) -> str:
    """Return how people read a plan version: "pro v2"."""
    return f"{plan_id} v{version}"
