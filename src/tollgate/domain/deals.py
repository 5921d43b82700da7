"""Per-customer deals (issue 20): overrides of what a plan grants, and one-off usage grants.

An override sets one feature for one customer whatever the plan says (an enterprise deal's
5,000,000 runs, SSO on a Pro customer), optionally until a date. A usage grant adds included
usage of a metered feature for the period it was given in (support's "10,000 extra runs this
month"). Both apply on top of the plan the customer has access to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from tollgate.domain.catalog import UNLIMITED, AddOn, Catalog, FeatureType, Plan, PlanFeature
from tollgate.domain.errors import InvalidRequest


@dataclass(frozen=True)
class FeatureOverride:
    """One customer's own grant of one feature; `limit` None with `unlimited` is no cap."""

    feature: str
    enabled: bool | None = None
    limit: int | None = None
    unlimited: bool = False
    ends_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        """Return whether the override applies at `now` (it ends at `ends_at`, exclusive)."""
        return self.ends_at is None or now < self.ends_at

    def to_json(self) -> dict[str, object]:
        limit: object = UNLIMITED if self.unlimited else self.limit
        return {
            "feature": self.feature,
            "enabled": self.enabled,
            "limit": limit,
            "ends_at": self.ends_at.isoformat().replace("+00:00", "Z") if self.ends_at else None,
        }


@dataclass(frozen=True)
class Deals:
    """A customer's overrides and this period's usage grants (units by metered feature)."""

    overrides: tuple[FeatureOverride, ...] = ()
    grants: Mapping[str, int] = field(default_factory=dict)
    addons: Mapping[str, int] = field(default_factory=dict)  # quantity bought, by add-on

    def __bool__(self) -> bool:
        return bool(self.overrides or self.grants or self.addons)

    def valid_until(self, now: datetime) -> datetime | None:
        """Return when the next active override ends (time alone changes the answer then)."""
        ends = [o.ends_at for o in self.overrides if o.ends_at is not None and o.active(now)]
        return min(ends) if ends else None


def check_override(
    catalog: Catalog,
    feature_id: str,
    *,
    enabled: bool | None,
    limit: int | str | None,
    ends_at: datetime | None,
    now: datetime,
) -> FeatureOverride:
    """Return the override asked for, or raise InvalidRequest naming the offending field."""
    feature = catalog.feature(feature_id)
    if ends_at is not None and ends_at <= now:
        raise InvalidRequest("ends_at must be in the future", param="ends_at")
    unlimited = limit == UNLIMITED
    if isinstance(limit, str) and not unlimited:
        raise InvalidRequest(f"limit must be a count or {UNLIMITED!r}", param="limit")
    if isinstance(limit, int) and (isinstance(limit, bool) or limit < 0):
        raise InvalidRequest("limit must be 0 or more", param="limit")
    if feature.type is FeatureType.BOOLEAN:
        if limit is not None:
            raise InvalidRequest(f"{feature_id} is on or off: give enabled", param="limit")
        if enabled is None:
            raise InvalidRequest(f"{feature_id} is on or off: give enabled", param="enabled")
    elif limit is None and enabled is not False:
        raise InvalidRequest(
            f"{feature_id} is a {feature.type.value} feature: give its limit", param="limit"
        )
    return FeatureOverride(
        feature=feature_id,
        enabled=enabled,
        limit=None if unlimited or limit is None else int(limit),
        unlimited=unlimited,
        ends_at=ends_at,
    )


def _overridden(grant: PlanFeature, override: FeatureOverride) -> PlanFeature:
    if override.enabled is False:
        return replace(
            grant, enabled=False, limit=0, included=0 if grant.included is not None else None
        )
    if grant.type is FeatureType.BOOLEAN:
        return replace(grant, enabled=bool(override.enabled))
    amount = None if override.unlimited else override.limit
    if grant.type is FeatureType.METERED:
        hard = grant.hard or grant.overage is None
        return replace(
            grant, enabled=True, included=amount, limit=amount if hard else None, hard=hard
        )
    return replace(grant, enabled=True, limit=amount)


def _granted_more(grant: PlanFeature, units: int) -> PlanFeature:
    if grant.type is not FeatureType.METERED or grant.included is None:
        return grant  # unlimited already, or not metered
    return replace(
        grant,
        enabled=True,
        included=grant.included + units,
        limit=grant.limit + units if grant.limit is not None else None,
    )


def _added(grant: PlanFeature, per_unit: int | bool, quantity: int) -> PlanFeature:
    if per_unit is True:
        return replace(grant, enabled=True)
    extra = int(per_unit) * quantity
    if grant.type is FeatureType.METERED:
        return _granted_more(grant, extra)
    if grant.limit is None and grant.enabled:
        return grant  # no cap to raise
    return replace(grant, enabled=True, limit=(grant.limit or 0) + extra)


def plan_with_deals(
    plan: Plan, deals: Deals, now: datetime, addons: Mapping[str, AddOn] | None = None
) -> Plan:
    """Return the plan as this customer has it: add-ons bought, overrides (which win), then
    this period's grants."""
    features = dict(plan.features)
    for addon_id, quantity in deals.addons.items():
        addon = (addons or {}).get(addon_id)
        if addon is None or quantity <= 0:
            continue
        for feature_id, per_unit in addon.grants.items():
            current = features.get(feature_id)
            if current is not None:
                features[feature_id] = _added(current, per_unit, quantity)
    for override in deals.overrides:
        current = features.get(override.feature)
        if current is not None and override.active(now):
            features[override.feature] = _overridden(current, override)
    for feature_id, units in deals.grants.items():
        current = features.get(feature_id)
        if current is not None and units > 0:
            features[feature_id] = _granted_more(current, units)
    return replace(plan, features=features)
